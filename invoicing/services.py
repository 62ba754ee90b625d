import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.utils.translation import gettext_lazy as _

from debtors.models import DebtorAccount
from establishments.models import Establishment
from invoicing.models import ZERO, Invoice, InvoiceLine, InvoiceStatus, Payment

CENT = Decimal("0.01")
LINE_KEYS = ("description", "quantity", "unit_price", "vat_rate")
# Decimal places of InvoiceLine's columns: more would be rounded silently by the database,
# and the stored line would no longer match the amounts computed from it.
LINE_PLACES = {"quantity": 3, "unit_price": 4, "vat_rate": 2}


class InvoicingError(Exception):
    """An invoice or payment change that the data or the current state does not allow.

    `field` names the offending input (`"amount"`, `"lines[2].quantity"`) when there is one,
    so that callers such as the import can point at it.
    """

    def __init__(self, message: Any, *, field: str = "") -> None:
        super().__init__(str(message))
        self.field = field


def invoice_initial_status(*, establishment) -> str:
    """New invoices wait in review when the establishment asks for it (review mode)."""
    return InvoiceStatus.REVIEW if establishment.review_mode else InvoiceStatus.OPEN


def line_amounts(
    *, quantity: Decimal, unit_price: Decimal, vat_rate: Decimal
) -> tuple[Decimal, Decimal]:
    """Net and VAT amounts of one line, each rounded to the cent, half up.

    VAT is computed on the rounded net of the line, as printed on the invoice.
    """
    for value in (quantity, unit_price, vat_rate):
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise TypeError(f"Money needs Decimal, got {type(value).__name__}: {value!r}")
    net = (Decimal(quantity) * Decimal(unit_price)).quantize(CENT, rounding=ROUND_HALF_UP)
    vat = (net * Decimal(vat_rate) / 100).quantize(CENT, rounding=ROUND_HALF_UP)
    return net, vat


def _amount_paid(invoice: Invoice, *, exclude_payment: Payment | None = None) -> Decimal:
    payments = Payment.objects.filter(invoice=invoice)
    if exclude_payment is not None:
        payments = payments.exclude(pk=exclude_payment.pk)
    return payments.aggregate(total=Sum("amount"))["total"] or ZERO


def _announce_paid(invoice: Invoice) -> None:
    """Once committed, platforms that received it as an e-invoice learn it is cashed (212)."""
    from dispatch.tasks import report_invoice_cashed_task

    invoice_id = invoice.pk
    # robust: a broker or platform outage must not undo or fail the payment itself; the
    # task retries on its own and the 212 can also be reported later.
    transaction.on_commit(lambda: report_invoice_cashed_task.delay(invoice_id), robust=True)


def _settled_status(status: str, *, gross: Decimal, paid: Decimal) -> str:
    """`paid` when payments cover the total, `open` again when they no longer do.

    Invoices in review keep their status: approval decides when they become open. An
    invoice of zero has nothing to settle and keeps what it was given.
    """
    if status == InvoiceStatus.REVIEW or gross <= 0:
        return status
    return InvoiceStatus.PAID if paid >= gross else InvoiceStatus.OPEN


def _clean_lines(lines: Iterable[Mapping[str, Any]]) -> list[tuple]:
    """Lines as `(description, quantity, unit_price, vat_rate, net, vat)` tuples."""
    cleaned = []
    for index, line in enumerate(lines):
        unknown = set(line) - set(LINE_KEYS)
        if unknown:
            raise InvoicingError(_("Unknown key."), field=f"lines[{index}].{sorted(unknown)[0]}")
        description = str(line.get("description", "")).strip()
        if not description:
            raise InvoicingError(_("This field is required."), field=f"lines[{index}].description")
        if len(description) > InvoiceLine._meta.get_field("description").max_length:
            raise InvoicingError(
                _("This description is too long."), field=f"lines[{index}].description"
            )
        values = {}
        for key, places in LINE_PLACES.items():
            value = line.get(key)
            if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
                raise InvoicingError(_("Enter a number."), field=f"lines[{index}].{key}")
            try:
                value = Decimal(value)
            except ArithmeticError:
                raise InvoicingError(_("Enter a number."), field=f"lines[{index}].{key}") from None
            if not value.is_finite() or value != value.quantize(Decimal(1).scaleb(-places)):
                raise InvoicingError(
                    _("Enter a number with at most %(places)d decimal places.")
                    % {"places": places},
                    field=f"lines[{index}].{key}",
                )
            values[key] = value
        if values["quantity"] <= 0:
            raise InvoicingError(
                _("The quantity must be above zero."), field=f"lines[{index}].quantity"
            )
        if values["unit_price"] < 0:
            raise InvoicingError(
                _("The unit price cannot be negative."), field=f"lines[{index}].unit_price"
            )
        if not 0 <= values["vat_rate"] <= 100:
            raise InvoicingError(
                _("The VAT rate must be between 0 and 100."), field=f"lines[{index}].vat_rate"
            )
        net, vat = line_amounts(**values)
        cleaned.append(
            (description, values["quantity"], values["unit_price"], values["vat_rate"], net, vat)
        )
    return cleaned


def _line_tuple(line: InvoiceLine) -> tuple:
    return (
        line.description,
        line.quantity,
        line.unit_price,
        line.vat_rate,
        line.net_amount,
        line.vat_amount,
    )


@transaction.atomic
def invoice_upsert(
    *,
    establishment: Establishment,
    debtor: DebtorAccount,
    number: str,
    issue_date: dt.date,
    due_date: dt.date,
    lines: list[dict],
    currency: str | None = None,
    series: str | None = None,
    status: str | None = None,
    disputed: bool | None = None,
    dispute_reason: str | None = None,
) -> tuple[Invoice, bool]:
    """Create invoice `number` of `establishment` or bring it in line with the arguments.

    `lines` replace the invoice's lines; totals are computed from them. `None` for
    `series`, `status`, `disputed` or `dispute_reason` keeps the current value (a new
    invoice gets "", `review` when the establishment is in review mode else `open`,
    not disputed). `status="open"` on an invoice whose payments cover it gives `paid`;
    `status="paid"` is taken as given. Returns `(invoice, changed)`; nothing is written
    when nothing differs.
    """
    if debtor.establishment_id != establishment.pk:
        raise InvoicingError(_("The debtor belongs to another establishment."), field="debtor")
    # One letter lists every invoice of a debtor with one total: it has a single currency.
    currency = currency or establishment.currency
    if currency != establishment.currency:
        raise InvoicingError(
            _("The currency must be the establishment's currency, %(currency)s.")
            % {"currency": establishment.currency},
            field="currency",
        )
    if due_date < issue_date:
        raise InvoicingError(_("The due date cannot precede the issue date."), field="due_date")
    if status is not None and status not in InvoiceStatus.values:
        raise InvoicingError(_("Unknown status."), field="status")
    new_lines = _clean_lines(lines)
    net_total = sum((line[4] for line in new_lines), ZERO)
    vat_total = sum((line[5] for line in new_lines), ZERO)
    gross_total = net_total + vat_total

    invoice = (
        Invoice.objects.select_for_update()
        .filter(establishment=establishment, number=number)
        .first()
    )
    creating = invoice is None
    if creating:
        invoice = Invoice(
            establishment=establishment,
            number=number,
            status=invoice_initial_status(establishment=establishment),
        )
        paid = ZERO
    else:
        paid = _amount_paid(invoice)
        if paid > gross_total:
            raise InvoicingError(
                _("Payments of %(paid)s exceed the new total of %(total)s.")
                % {"paid": paid, "total": gross_total},
                field="lines",
            )

    if status == InvoiceStatus.PAID:
        new_status = status
    else:
        new_status = _settled_status(status or invoice.status, gross=gross_total, paid=paid)
    new_disputed = invoice.disputed if disputed is None else disputed
    if dispute_reason is not None:
        new_reason = dispute_reason.strip()
    else:
        new_reason = invoice.dispute_reason if new_disputed else ""
    if new_disputed and not new_reason:
        raise InvoicingError(_("A disputed invoice needs a reason."), field="dispute_reason")

    fields = {
        "debtor_id": debtor.pk,
        "issue_date": issue_date,
        "due_date": due_date,
        "currency": currency,
        "series": invoice.series if series is None else series,
        "status": new_status,
        "disputed": new_disputed,
        "dispute_reason": new_reason,
        "net_total": net_total,
        "vat_total": vat_total,
        "gross_total": gross_total,
    }
    lines_changed = creating or [_line_tuple(line) for line in invoice.lines.all()] != new_lines
    fields_changed = creating or any(getattr(invoice, k) != v for k, v in fields.items())
    if not (lines_changed or fields_changed):
        return invoice, False

    for name, value in fields.items():
        setattr(invoice, name, value)
    invoice.save()
    if lines_changed:
        invoice.lines.all().delete()
        InvoiceLine.objects.bulk_create(
            InvoiceLine(
                invoice=invoice,
                position=position,
                description=description,
                quantity=quantity,
                unit_price=unit_price,
                vat_rate=vat_rate,
                net_amount=net,
                vat_amount=vat,
            )
            for position, (description, quantity, unit_price, vat_rate, net, vat) in enumerate(
                new_lines, start=1
            )
        )
    return invoice, True


@transaction.atomic
def invoice_recalculate(*, invoice: Invoice) -> Invoice:
    """Recompute line amounts, totals and the paid status after lines or payments changed.

    Raises `InvoicingError` when the payments exceed the new total; the caller's
    transaction should then be rolled back.
    """
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    lines = list(invoice.lines.all())
    for line in lines:
        line.net_amount, line.vat_amount = line_amounts(
            quantity=line.quantity, unit_price=line.unit_price, vat_rate=line.vat_rate
        )
    InvoiceLine.objects.bulk_update(lines, ["net_amount", "vat_amount"])
    net_total = sum((line.net_amount for line in lines), ZERO)
    vat_total = sum((line.vat_amount for line in lines), ZERO)
    gross_total = net_total + vat_total
    paid = _amount_paid(invoice)
    if paid > gross_total:
        raise InvoicingError(
            _("Payments of %(paid)s exceed the invoice total of %(total)s.")
            % {"paid": paid, "total": gross_total},
            field="payments",
        )
    fields = {
        "net_total": net_total,
        "vat_total": vat_total,
        "gross_total": gross_total,
        "status": _settled_status(invoice.status, gross=gross_total, paid=paid),
    }
    if any(getattr(invoice, k) != v for k, v in fields.items()):
        became_paid = (
            invoice.status != InvoiceStatus.PAID and fields["status"] == InvoiceStatus.PAID
        )
        for name, value in fields.items():
            setattr(invoice, name, value)
        invoice.save(update_fields=[*fields, "updated_at"])
        if became_paid:
            _announce_paid(invoice)
    return invoice


@transaction.atomic
def payment_upsert(
    *, invoice: Invoice, reference: str, date: dt.date, amount: Decimal
) -> tuple[Payment, bool]:
    """Record payment `reference` of `invoice` (or correct it) and settle the invoice.

    The invoice row is locked so that two payments recorded at once cannot together
    exceed its total. Returns `(payment, changed)`.
    """
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        raise TypeError(f"Money needs Decimal, got {type(amount).__name__}: {amount!r}")
    amount = Decimal(amount)
    if amount <= 0:
        raise InvoicingError(_("The amount must be above zero."), field="amount")
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    payment = Payment.objects.filter(invoice=invoice, reference=reference).first()
    if payment is not None and payment.date == date and payment.amount == amount:
        return payment, False

    paid = _amount_paid(invoice, exclude_payment=payment) + amount
    if paid > invoice.gross_total:
        raise InvoicingError(
            _("Payments would reach %(paid)s, above the invoice total of %(total)s.")
            % {"paid": paid, "total": invoice.gross_total},
            field="amount",
        )
    if payment is None:
        payment = Payment(invoice=invoice, reference=reference)
    payment.date = date
    payment.amount = amount
    payment.save()

    status = _settled_status(invoice.status, gross=invoice.gross_total, paid=paid)
    if status != invoice.status:
        invoice.status = status
        invoice.save(update_fields=["status", "updated_at"])
        if status == InvoiceStatus.PAID:
            _announce_paid(invoice)
    return payment, True


@transaction.atomic
def invoice_approve(*, invoice: Invoice) -> Invoice:
    """Release an invoice from review: from now on it can be sent."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if invoice.status != InvoiceStatus.REVIEW:
        raise InvoicingError(_("Only an invoice in review can be approved."), field="status")
    invoice.status = _settled_status(
        InvoiceStatus.OPEN, gross=invoice.gross_total, paid=_amount_paid(invoice)
    )
    invoice.save(update_fields=["status", "updated_at"])
    return invoice


@transaction.atomic
def invoice_mark_disputed(*, invoice: Invoice, reason: str) -> Invoice:
    """Hold the invoice out of letters while the debtor contests it."""
    reason = reason.strip()
    if not reason:
        raise InvoicingError(_("A disputed invoice needs a reason."), field="dispute_reason")
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if invoice.disputed and invoice.dispute_reason == reason:
        return invoice
    invoice.disputed = True
    invoice.dispute_reason = reason
    invoice.save(update_fields=["disputed", "dispute_reason", "updated_at"])
    return invoice


@transaction.atomic
def invoice_clear_dispute(*, invoice: Invoice) -> Invoice:
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if not invoice.disputed:
        raise InvoicingError(_("This invoice is not disputed."), field="disputed")
    invoice.disputed = False
    invoice.dispute_reason = ""
    invoice.save(update_fields=["disputed", "dispute_reason", "updated_at"])
    return invoice
