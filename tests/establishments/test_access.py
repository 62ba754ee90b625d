"""Who sees which establishment, and the groups installed by the data migration."""

import datetime as dt

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from django.core import mail

from dispatch.models import Dispatch, Run, RunTrigger
from dispatch.services import debtor_send_now, due_establishments_process
from establishments.groups import GROUPS
from establishments.selectors import establishment_list_for_user
from tests.factories import DebtorAccountFactory, EstablishmentFactory, InvoiceFactory

pytestmark = pytest.mark.django_db


def test_members_see_their_establishments_only(django_user_model):
    paris, cancun = EstablishmentFactory(code="paris"), EstablishmentFactory(code="cancun")
    accountant = django_user_model.objects.create_user("compta", password="x")
    paris.members.add(accountant)
    boss = django_user_model.objects.create_superuser("boss", password="x")
    assert list(establishment_list_for_user(user=accountant)) == [paris]
    assert set(establishment_list_for_user(user=boss)) == {paris, cancun}
    assert list(establishment_list_for_user(user=AnonymousUser())) == []


def test_groups_are_installed_with_their_permissions():
    for name, by_app in GROUPS.items():
        group = Group.objects.get(name=name)
        codenames = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
        expected = {f"{app}.{code}" for app, codes in by_app.items() for code in codes}
        assert codenames == expected
    direction = Group.objects.get(name="Direction")
    assert not direction.permissions.filter(codename__startswith="change_").exists()


def test_send_now_twice_sends_once_and_leaves_the_night_to_the_schedule(
    django_capture_on_commit_callbacks,
):
    hotel = EstablishmentFactory(code="paris", time_zone="Europe/Paris", send_hour=2)
    debtor = DebtorAccountFactory(establishment=hotel)
    other = DebtorAccountFactory(establishment=hotel)
    InvoiceFactory(debtor=debtor)
    InvoiceFactory(debtor=other)
    now = dt.datetime(2026, 12, 4, 10, 0, tzinfo=dt.UTC)

    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            debtor_send_now(debtor=debtor, now=now)
    assert [m.to for m in mail.outbox] == [[debtor.contact_email]]
    assert set(Run.objects.values_list("trigger", flat=True)) == {RunTrigger.MANUAL}

    # The nightly run still processes the establishment, and only the other debtor is new.
    with django_capture_on_commit_callbacks(execute=True):
        result = due_establishments_process(now=now)
    assert result["planned"] == [("paris", "2026-12-04")]
    assert sorted(m.to[0] for m in mail.outbox) == sorted(
        [debtor.contact_email, other.contact_email]
    )
    assert Dispatch.objects.count() == 2
