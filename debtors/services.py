import datetime as dt
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from debtors.models import DebtorAccount, SendMode
from establishments.models import Establishment

if TYPE_CHECKING:
    from dispatch.models import Integration


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


def debtor_validate_send_mode(
    *,
    establishment: Establishment,
    send_mode: str,
    integration: "Integration | None",
    contact_email: str,
    einvoicing_id: str,
) -> None:
    """Raise a ValidationError with field errors when the debtor could not be served so.

    The nightly run skips such accounts with a reason; forms refuse them up front instead.
    """
    errors: dict[str, list] = {}
    contact_email = contact_email.strip()
    if contact_email:
        try:
            validate_email(contact_email)
        except ValidationError:
            errors.setdefault("contact_email", []).append(_("Enter a valid email address."))
    if send_mode == SendMode.EMAIL and not contact_email:
        errors.setdefault("contact_email", []).append(
            _("The send mode Email needs a contact email address.")
        )
    if send_mode == SendMode.EINVOICING:
        if integration is None:
            errors.setdefault("send_mode", []).append(_("Choose an e-invoicing integration."))
        elif integration.establishment_id != establishment.pk:
            errors.setdefault("send_mode", []).append(
                _("This integration belongs to another establishment.")
            )
        elif not integration.active:
            errors.setdefault("send_mode", []).append(_("This integration is not active."))
        if integration is not None and not einvoicing_id.strip():
            errors.setdefault("einvoicing_id", []).append(
                _(
                    "%(integration)s needs the recipient's identifier (SIREN/SIRET, Peppol id "
                    "or client code)."
                )
                % {"integration": integration.name}
            )
    elif send_mode not in SendMode.values:
        errors.setdefault("send_mode", []).append(_("Choose a valid send mode."))
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def debtor_set_send_mode(
    *,
    debtor: DebtorAccount,
    send_mode: str,
    integration: "Integration | None" = None,
    contact_email: str,
    einvoicing_id: str,
) -> DebtorAccount:
    """Set how `debtor` is told what it owes; raise ValidationError with field errors.

    `integration` is required with the e-invoicing mode and ignored with the others.
    """
    from dispatch.models import Integration

    debtor = (
        DebtorAccount.objects.select_for_update().select_related("establishment").get(pk=debtor.pk)
    )
    if send_mode != SendMode.EINVOICING:
        integration = None
    elif integration is not None:
        # The active flag as it is now, not as the caller loaded it.
        integration = Integration.objects.filter(pk=integration.pk).first()
    debtor_validate_send_mode(
        establishment=debtor.establishment,
        send_mode=send_mode,
        integration=integration,
        contact_email=contact_email,
        einvoicing_id=einvoicing_id,
    )
    debtor.send_mode = send_mode
    debtor.integration = integration
    debtor.contact_email = contact_email.strip()
    debtor.einvoicing_id = einvoicing_id.strip()
    debtor.save(
        update_fields=["send_mode", "integration", "contact_email", "einvoicing_id", "updated_at"]
    )
    return debtor
