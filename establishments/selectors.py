"""Reads of establishments: which ones a user may see."""

from django.db.models import QuerySet

from establishments.models import Establishment


def establishment_list_for_user(*, user) -> QuerySet[Establishment]:
    """The establishments whose data the user may see and change.

    Superusers see them all; everyone else sees the establishments they are a member of
    (Establishment.members, managed by staff in the admin). Views filter every object by
    this, so another establishment's URL answers 404.
    """
    if not user.is_authenticated:
        return Establishment.objects.none()
    if user.is_superuser:
        return Establishment.objects.all()
    return Establishment.objects.filter(members=user)
