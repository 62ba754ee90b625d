import datetime as dt
from typing import Any

from django.db import transaction
from django.utils.translation import gettext_lazy as _

from debtors.models import DebtorAccount
from establishments.models import Establishment


class DebtorError(Exception):
    """A debtor account change that its current state does not allow."""


@transaction.atomic
def debtor_upsert(
    *, establishment: Establishment, account_number: str, **fields: Any
) -> tuple[DebtorAccount, bool]:
    """Create the account `account_number` of `establishment` or update the given fields.

    Fields not given are kept. Returns `(debtor, changed)`; an equal account is not saved.
    The contact email is stored as given: the nightly run reports a bad one as
    `invalid_email` instead of the account disappearing from view.
    """
    debtor = (
        DebtorAccount.objects.select_for_update()
        .filter(establishment=establishment, account_number=account_number)
        .first()
    )
    if debtor is None:
        debtor = DebtorAccount(establishment=establishment, account_number=account_number, **fields)
        debtor.full_clean()
        debtor.save()
        return debtor, True

    changed = [name for name, value in fields.items() if getattr(debtor, name) != value]
    if not changed:
        return debtor, False
    for name in changed:
        setattr(debtor, name, fields[name])
    debtor.full_clean()
    debtor.save()
    return debtor, True


@transaction.atomic
def debtor_pause(*, debtor: DebtorAccount, until: dt.date, reason: str) -> DebtorAccount:
    """Stop letters to `debtor` up to and including `until`."""
    reason = reason.strip()
    if not reason:
        raise DebtorError(_("A pause needs a reason."))
    debtor = DebtorAccount.objects.select_for_update().get(pk=debtor.pk)
    debtor.paused_until = until
    debtor.pause_reason = reason
    debtor.save(update_fields=["paused_until", "pause_reason", "updated_at"])
    return debtor


@transaction.atomic
def debtor_resume(*, debtor: DebtorAccount) -> DebtorAccount:
    debtor = DebtorAccount.objects.select_for_update().get(pk=debtor.pk)
    if debtor.paused_until is None:
        raise DebtorError(_("Reminders to this account are not paused."))
    debtor.paused_until = None
    debtor.pause_reason = ""
    debtor.save(update_fields=["paused_until", "pause_reason", "updated_at"])
    return debtor
