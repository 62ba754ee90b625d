"""Import of establishments, debtors, invoices and payments from one JSON document.

The document is `{"establishments": [...], "debtors": [...], "invoices": [...],
"payments": [...]}`; rows refer to each other by establishment `code`, debtor
`account_number` and invoice `number` (both within the establishment). Every row is an
upsert on those keys, a row equal to the database writes nothing, and the whole document
is one transaction: the first bad row raises `ImportRowError` and nothing is kept.
README.md, "Import format", documents every field.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.forms.models import fields_for_model
from django.utils.translation import gettext as _

from debtors.models import DebtorAccount, SendMode
from debtors.services import DebtorError, debtor_upsert
from establishments.models import Establishment
from establishments.services import establishment_upsert
from invoicing.models import Invoice, InvoiceStatus, Payment
from invoicing.services import InvoicingError, invoice_upsert, payment_upsert

# Processing order: each kind refers only to kinds before it.
SECTIONS = ("establishments", "debtors", "invoices", "payments")
KEY_FIELD = {
    "establishments": "code",
    "debtors": "account_number",
    "invoices": "number",
    "payments": "reference",
}
ISO_DATE = ["%Y-%m-%d"]


class ImportRowError(Exception):
    """A row that cannot be imported; the message names the row and the field.

    `invoices[3] (number "F-0004"): due_date: Enter a valid date.`
    """

    def __init__(self, location: str, field_name: str, message: Any) -> None:
        self.location = location
        self.field = field_name
        self.detail = str(message)
        prefix = f"{location}: {field_name}" if field_name else location
        super().__init__(f"{prefix}: {self.detail}")


@dataclass
class KindCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, *, created: bool, changed: bool) -> None:
        if created:
            self.created += 1
        elif changed:
            self.updated += 1
        else:
            self.unchanged += 1


@dataclass
class ImportReport:
    establishments: KindCounts = field(default_factory=KindCounts)
    debtors: KindCounts = field(default_factory=KindCounts)
    invoices: KindCounts = field(default_factory=KindCounts)
    payments: KindCounts = field(default_factory=KindCounts)

    def by_kind(self) -> dict[str, KindCounts]:
        return {kind: getattr(self, kind) for kind in SECTIONS}

    @property
    def changed(self) -> bool:
        return any(c.created or c.updated for c in self.by_kind().values())


# --- Row forms ---------------------------------------------------------------------------
# Forms give each field its parsing (Decimal from JSON numbers or strings, ISO dates) and
# the model's limits (lengths, choices) with the usual readable messages.


def _row_form(model, names: list[str], **extra: forms.Field) -> type[forms.Form]:
    fields = fields_for_model(model, fields=names)
    fields.update(extra)
    for form_field in fields.values():
        if isinstance(form_field, forms.DateField):
            form_field.input_formats = ISO_DATE
    return type(f"{model.__name__}RowForm", (forms.Form,), dict(fields))


def _reference(max_length: int) -> forms.CharField:
    return forms.CharField(max_length=max_length)


EstablishmentRowForm = _row_form(
    Establishment,
    [
        "code",
        "name",
        "legal_name",
        "address_line1",
        "address_line2",
        "postal_code",
        "city",
        "country",
        "siret",
        "vat_number",
        "finance_email",
        "phone",
        "iban",
        "bic",
        "time_zone",
        "language",
        "currency",
        "auto_send_pending_invoices",
        "review_mode",
        "reminder_interval_days",
        "minimum_amount",
        "send_hour",
    ],
    reminder_interval_days=forms.IntegerField(min_value=1, max_value=365),
    minimum_amount=forms.DecimalField(max_digits=12, decimal_places=2, min_value=0),
    send_hour=forms.IntegerField(min_value=0, max_value=23),
)

DebtorRowForm = _row_form(
    DebtorAccount,
    [
        "account_number",
        "name",
        "contact_email",
        "send_mode",
        "language",
        "address_line1",
        "address_line2",
        "postal_code",
        "city",
        "country",
        "siret",
        "vat_number",
        "einvoicing_id",
        "credit_limit",
        "paused_until",
        "pause_reason",
    ],
    establishment=_reference(32),
    credit_limit=forms.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False),
    # The display name of one of the establishment's e-invoicing integrations.
    integration=forms.CharField(max_length=80, required=False),
)

InvoiceRowForm = _row_form(
    Invoice,
    ["number", "series", "issue_date", "due_date", "currency", "status", "disputed"]
    + ["dispute_reason"],
    establishment=_reference(32),
    debtor=_reference(40),
)


class LineForm(forms.Form):
    description = forms.CharField(max_length=255)
    quantity = forms.DecimalField(max_digits=12, decimal_places=3)
    unit_price = forms.DecimalField(max_digits=12, decimal_places=4, min_value=0)
    vat_rate = forms.DecimalField(max_digits=5, decimal_places=2, min_value=0, max_value=100)

    def clean_quantity(self) -> Decimal:
        quantity = self.cleaned_data["quantity"]
        if quantity <= 0:
            raise ValidationError(_("Ensure this value is greater than zero."))
        return quantity


class PaymentRowForm(forms.Form):
    establishment = _reference(32)
    invoice = _reference(40)
    reference = forms.CharField(max_length=60)
    date = forms.DateField(input_formats=ISO_DATE)
    amount = forms.DecimalField(max_digits=12, decimal_places=2)

    def clean_amount(self) -> Decimal:
        amount = self.cleaned_data["amount"]
        if amount <= 0:
            raise ValidationError(_("Ensure this value is greater than zero."))
        return amount


REQUIRED = {
    "establishments": {"code", "name"},
    "debtors": {"establishment", "account_number", "name"},
    "invoices": {"establishment", "debtor", "number", "issue_date", "due_date", "lines"},
    "payments": {"establishment", "invoice", "reference", "date", "amount"},
}
# Keys that hold something other than a form field's scalar value.
NESTED = {"invoices": {"lines"}}


def _first_error(errors: dict) -> tuple[str, str]:
    name, messages = next(iter(errors.items()))
    return ("" if name == "__all__" else name), str(messages[0])


def _clean(
    form_class: type[forms.Form],
    row: Any,
    *,
    where: str,
    required: set[str],
    nested: set[str] = frozenset(),
    prefix: str = "",
) -> dict[str, Any]:
    """The row's present keys, parsed; an absent optional key stays absent (kept on update)."""
    if not isinstance(row, dict):
        raise ImportRowError(where, prefix.rstrip("."), _("Expected a JSON object."))
    allowed = set(form_class.base_fields) | nested
    unknown = sorted(set(row) - allowed)
    if unknown:
        raise ImportRowError(
            where,
            prefix + unknown[0],
            _("Unknown field. Expected one of: %(fields)s.")
            % {"fields": ", ".join(sorted(allowed))},
        )
    missing = sorted(required - set(row))
    if missing:
        raise ImportRowError(where, prefix + missing[0], _("This field is required."))

    form = form_class(data={k: v for k, v in row.items() if k not in nested})
    for name, form_field in form.fields.items():
        value = row.get(name)
        if isinstance(form_field, forms.BooleanField):
            # A checkbox widget would read "no" as true; JSON has booleans, so ask for them.
            if name in row and not isinstance(value, bool):
                raise ImportRowError(where, prefix + name, _("Enter true or false."))
        elif isinstance(value, dict | list):
            raise ImportRowError(where, prefix + name, _("Enter a single value, not a list."))
        if name not in row and name not in required:
            form_field.required = False
    if not form.is_valid():
        name, message = _first_error(form.errors)
        raise ImportRowError(where, prefix + name, message)
    return {name: form.cleaned_data[name] for name in row if name not in nested}


def _service_error(where: str, exc: Exception) -> ImportRowError:
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            return ImportRowError(where, *_first_error(exc.message_dict))
        return ImportRowError(where, "", exc.messages[0])
    if isinstance(exc, InvoicingError):
        return ImportRowError(where, exc.field, exc)
    return ImportRowError(where, "", exc)


class _Importer:
    def __init__(self) -> None:
        self.report = ImportReport()
        self.establishments: dict[str, Establishment] = {}
        self.debtors: dict[tuple[int, str], DebtorAccount] = {}
        self.invoices: dict[tuple[int, str], Invoice] = {}
        self.paid_rows: list[tuple[str, Invoice]] = []

    # References are looked up once and kept: most rows share their establishment and debtor.
    def establishment(self, code: str, where: str) -> Establishment:
        if code not in self.establishments:
            found = Establishment.objects.filter(code=code).first()
            if found is None:
                raise ImportRowError(
                    where, "establishment", _('Unknown establishment "%(code)s".') % {"code": code}
                )
            self.establishments[code] = found
        return self.establishments[code]

    def debtor(self, establishment: Establishment, number: str, where: str) -> DebtorAccount:
        key = (establishment.pk, number)
        if key not in self.debtors:
            found = DebtorAccount.objects.filter(
                establishment=establishment, account_number=number
            ).first()
            if found is None:
                raise ImportRowError(
                    where,
                    "debtor",
                    _('Unknown debtor account "%(number)s" in establishment "%(code)s".')
                    % {"number": number, "code": establishment.code},
                )
            self.debtors[key] = found
        return self.debtors[key]

    def invoice(self, establishment: Establishment, number: str, where: str) -> Invoice:
        key = (establishment.pk, number)
        if key not in self.invoices:
            found = Invoice.objects.filter(establishment=establishment, number=number).first()
            if found is None:
                raise ImportRowError(
                    where,
                    "invoice",
                    _('Unknown invoice "%(number)s" in establishment "%(code)s".')
                    % {"number": number, "code": establishment.code},
                )
            self.invoices[key] = found
        return self.invoices[key]

    def run(self, data: Any) -> ImportReport:
        if not isinstance(data, dict):
            raise ImportRowError(
                "document",
                "",
                _("Expected a JSON object with the sections %(sections)s.")
                % {"sections": ", ".join(SECTIONS)},
            )
        for section in data:
            if section not in SECTIONS:
                raise ImportRowError(
                    section,
                    "",
                    _("Unknown section. Expected one of: %(sections)s.")
                    % {"sections": ", ".join(SECTIONS)},
                )
        for section in SECTIONS:
            rows = data.get(section, [])
            if not isinstance(rows, list):
                raise ImportRowError(section, "", _("Expected a list of objects."))
            seen: dict[tuple, str] = {}
            handle = getattr(self, f"import_{section[:-1]}")
            for index, row in enumerate(rows):
                key = row.get(KEY_FIELD[section]) if isinstance(row, dict) else None
                where = f"{section}[{index}]"
                if isinstance(key, str | int) and not isinstance(key, bool):
                    where += f' ({KEY_FIELD[section]} "{key}")'
                handle(row, where=where, seen=seen)
        self.check_paid()
        return self.report

    def remember(self, seen: dict, key: tuple, where: str, key_field: str) -> None:
        # A second row with the same key would silently override the first.
        if key in seen:
            raise ImportRowError(
                where, key_field, _("Same key as %(row)s.") % {"row": seen[key].split(" ")[0]}
            )
        seen[key] = where

    def import_establishment(self, row: Any, *, where: str, seen: dict) -> None:
        values = _clean(EstablishmentRowForm, row, where=where, required=REQUIRED["establishments"])
        code = values.pop("code")
        self.remember(seen, (code,), where, "code")
        existed = Establishment.objects.filter(code=code).exists()
        try:
            establishment, changed = establishment_upsert(code=code, **values)
        except (ValidationError, DatabaseError) as exc:
            raise _service_error(where, exc) from exc
        self.establishments[code] = establishment
        self.report.establishments.add(created=not existed, changed=changed)

    def import_debtor(self, row: Any, *, where: str, seen: dict) -> None:
        values = _clean(DebtorRowForm, row, where=where, required=REQUIRED["debtors"])
        establishment = self.establishment(values.pop("establishment"), where)
        number = values.pop("account_number")
        self.remember(seen, (establishment.pk, number), where, "account_number")
        if values.get("paused_until") and not values.get("pause_reason"):
            raise ImportRowError(where, "pause_reason", _("A pause needs a reason."))
        self.resolve_send_mode(values, establishment=establishment, where=where)
        existing = DebtorAccount.objects.filter(
            establishment=establishment, account_number=number
        ).exists()
        try:
            debtor, changed = debtor_upsert(
                establishment=establishment, account_number=number, **values
            )
        except (ValidationError, DebtorError, DatabaseError) as exc:
            raise _service_error(where, exc) from exc
        self.debtors[(establishment.pk, number)] = debtor
        self.report.debtors.add(created=not existing, changed=changed)

    def resolve_send_mode(self, values: dict, *, establishment, where: str) -> None:
        """`send_mode: "einvoicing"` goes with `integration`, the integration's name."""
        from dispatch.models import Integration

        name = values.pop("integration", None) or ""
        mode = values.get("send_mode")
        if name:
            if mode not in (None, SendMode.EINVOICING):
                raise ImportRowError(
                    where,
                    "integration",
                    _('An integration goes with send_mode "einvoicing".'),
                )
            integration = Integration.objects.filter(establishment=establishment, name=name).first()
            if integration is None:
                raise ImportRowError(
                    where,
                    "integration",
                    _('Unknown integration "%(name)s" in establishment "%(code)s".')
                    % {"name": name, "code": establishment.code},
                )
            values["send_mode"] = SendMode.EINVOICING
            values["integration"] = integration
        elif mode == SendMode.EINVOICING:
            raise ImportRowError(
                where,
                "integration",
                _('send_mode "einvoicing" needs the name of an integration.'),
            )
        elif mode is not None:
            values["integration"] = None

    def import_invoice(self, row: Any, *, where: str, seen: dict) -> None:
        values = _clean(
            InvoiceRowForm,
            row,
            where=where,
            required=REQUIRED["invoices"],
            nested=NESTED["invoices"],
        )
        establishment = self.establishment(values.pop("establishment"), where)
        debtor = self.debtor(establishment, values.pop("debtor"), where)
        number = values["number"]
        self.remember(seen, (establishment.pk, number), where, "number")
        raw_lines = row["lines"]
        if not isinstance(raw_lines, list) or not raw_lines:
            raise ImportRowError(where, "lines", _("Expected a non-empty list of lines."))
        lines = [
            _clean(
                LineForm,
                line,
                where=where,
                required=set(LineForm.base_fields),
                prefix=f"lines[{index}].",
            )
            for index, line in enumerate(raw_lines)
        ]
        if values["due_date"] < values["issue_date"]:
            raise ImportRowError(
                where, "due_date", _("The due date cannot precede the issue date.")
            )
        existing = Invoice.objects.filter(establishment=establishment, number=number).exists()
        try:
            invoice, changed = invoice_upsert(
                establishment=establishment, debtor=debtor, lines=lines, **values
            )
        except (InvoicingError, DatabaseError) as exc:
            raise _service_error(where, exc) from exc
        self.invoices[(establishment.pk, number)] = invoice
        if values.get("status") == InvoiceStatus.PAID:
            self.paid_rows.append((where, invoice))
        self.report.invoices.add(created=not existing, changed=changed)

    def import_payment(self, row: Any, *, where: str, seen: dict) -> None:
        values = _clean(PaymentRowForm, row, where=where, required=REQUIRED["payments"])
        establishment = self.establishment(values["establishment"], where)
        invoice = self.invoice(establishment, values["invoice"], where)
        reference = values["reference"]
        self.remember(seen, (invoice.pk, reference), where, "reference")
        existing = Payment.objects.filter(invoice=invoice, reference=reference).exists()
        try:
            _payment, changed = payment_upsert(
                invoice=invoice, reference=reference, date=values["date"], amount=values["amount"]
            )
        except (InvoicingError, DatabaseError) as exc:
            raise _service_error(where, exc) from exc
        self.report.payments.add(created=not existing, changed=changed)

    def check_paid(self) -> None:
        """`paid` in a row must be backed by payments: an invoice is paid by what it received."""
        due_by_pk = dict(
            Invoice.objects.with_amounts()
            .filter(pk__in=[invoice.pk for _where, invoice in self.paid_rows])
            .values_list("pk", "amount_due")
        )
        for where, invoice in self.paid_rows:
            if due_by_pk[invoice.pk] > 0:
                raise ImportRowError(
                    where,
                    "status",
                    _(
                        '"paid" needs payments covering the total, but %(due)s is still due. '
                        "Import its payments, or give the status open."
                    )
                    % {"due": due_by_pk[invoice.pk]},
                )


def billing_data_import(*, data: dict) -> ImportReport:
    """Upsert the document's rows in one transaction; raise `ImportRowError` on a bad row."""
    with transaction.atomic():
        return _Importer().run(data)
