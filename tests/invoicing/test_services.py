import datetime as dt
from decimal import Decimal

import pytest

from debtors.services import DebtorError, debtor_pause, debtor_resume, debtor_upsert
from establishments.services import establishment_upsert
from invoicing.models import Invoice, InvoiceLine, InvoiceStatus, Payment
from invoicing.services import (
    InvoicingError,
    invoice_approve,
    invoice_clear_dispute,
    invoice_mark_disputed,
    invoice_recalculate,
    invoice_upsert,
    line_amounts,
    payment_upsert,
)
from tests.factories import DebtorAccountFactory, EstablishmentFactory

pytestmark = pytest.mark.django_db

D = Decimal


def line(description="Nuitée", quantity="1", unit_price="100.00", vat_rate="10"):
    return {
        "description": description,
        "quantity": D(quantity),
        "unit_price": D(unit_price),
        "vat_rate": D(vat_rate),
    }


def upsert(debtor, number="F-1", lines=None, **kwargs):
    return invoice_upsert(
        establishment=debtor.establishment,
        debtor=debtor,
        number=number,
        issue_date=kwargs.pop("issue_date", dt.date(2026, 11, 1)),
        due_date=kwargs.pop("due_date", dt.date(2026, 12, 1)),
        lines=lines if lines is not None else [line()],
        **kwargs,
    )


@pytest.mark.parametrize(
    ("quantity", "unit_price", "vat_rate", "net", "vat"),
    [
        ("1", "100.00", "10", "100.00", "10.00"),
        # 3 × 0.335 = 1.005: half up gives 1.01 where banker's rounding would give 1.00.
        ("3", "0.335", "0", "1.01", "0.00"),
        # VAT on the rounded net: 0.05 × 10% = 0.005 -> 0.01.
        ("1", "0.05", "10", "0.05", "0.01"),
        ("2.5", "33.3333", "20", "83.33", "16.67"),
        ("1", "19.99", "5.5", "19.99", "1.10"),
        ("12", "5.20", "0", "62.40", "0.00"),
    ],
)
def test_line_amounts_round_half_up_to_the_cent(quantity, unit_price, vat_rate, net, vat):
    assert line_amounts(quantity=D(quantity), unit_price=D(unit_price), vat_rate=D(vat_rate)) == (
        D(net),
        D(vat),
    )


def test_line_amounts_refuse_floats():
    with pytest.raises(TypeError):
        line_amounts(quantity=D(1), unit_price=0.1, vat_rate=D(0))


def test_invoice_upsert_computes_totals_from_lines():
    debtor = DebtorAccountFactory()
    invoice, changed = upsert(
        debtor,
        lines=[
            line("Chambres", "6", "189.00", "10"),
            line("Salle", "1", "450.00", "20"),
            line("Taxe de séjour", "12", "5.20", "0"),
        ],
    )
    assert changed
    invoice.refresh_from_db()
    assert (invoice.net_total, invoice.vat_total, invoice.gross_total) == (
        D("1646.40"),
        D("203.40"),
        D("1849.80"),
    )
    assert invoice.currency == "EUR"
    assert invoice.status == InvoiceStatus.OPEN
    assert [(x.position, x.net_amount, x.vat_amount) for x in invoice.lines.all()] == [
        (1, D("1134.00"), D("113.40")),
        (2, D("450.00"), D("90.00")),
        (3, D("62.40"), D("0.00")),
    ]


def test_invoice_upsert_starts_in_review_in_review_mode():
    debtor = DebtorAccountFactory(establishment=EstablishmentFactory(review_mode=True))
    invoice, _ = upsert(debtor)
    assert invoice.status == InvoiceStatus.REVIEW


def test_invoice_upsert_unchanged_writes_nothing():
    debtor = DebtorAccountFactory()
    invoice, _ = upsert(debtor, lines=[line(), line("Petit déjeuner", "2", "12.50", "10")])
    before = Invoice.objects.get(pk=invoice.pk)
    line_ids = list(InvoiceLine.objects.filter(invoice=invoice).values_list("pk", flat=True))

    again, changed = upsert(debtor, lines=[line(), line("Petit déjeuner", "2", "12.5", "10.00")])

    assert not changed
    after = Invoice.objects.get(pk=invoice.pk)
    assert after.updated_at == before.updated_at
    assert list(InvoiceLine.objects.filter(invoice=invoice).values_list("pk", flat=True)) == (
        line_ids
    )


def test_invoice_upsert_replaces_lines_and_keeps_omitted_fields():
    debtor = DebtorAccountFactory()
    upsert(debtor, series="F2026", disputed=True, dispute_reason="Conteste le tarif")
    invoice, changed = upsert(debtor, lines=[line(unit_price="50.00")])
    assert changed
    invoice.refresh_from_db()
    assert invoice.lines.count() == 1
    assert invoice.gross_total == D("55.00")
    assert (invoice.series, invoice.disputed, invoice.dispute_reason) == (
        "F2026",
        True,
        "Conteste le tarif",
    )


def test_invoice_upsert_refuses_a_foreign_currency():
    debtor = DebtorAccountFactory()
    with pytest.raises(InvoicingError) as error:
        upsert(debtor, currency="USD")
    assert error.value.field == "currency"
    assert not Invoice.objects.exists()


def test_invoice_upsert_refuses_a_total_below_payments():
    debtor = DebtorAccountFactory()
    invoice, _ = upsert(debtor)
    payment_upsert(invoice=invoice, reference="P1", date=dt.date(2026, 11, 5), amount=D("100"))
    with pytest.raises(InvoicingError) as error:
        upsert(debtor, lines=[line(unit_price="50.00")])
    assert error.value.field == "lines"
    invoice.refresh_from_db()
    assert invoice.gross_total == D("110.00")


def test_invoice_upsert_open_with_payments_covering_stays_paid():
    debtor = DebtorAccountFactory()
    invoice, _ = upsert(debtor)
    payment_upsert(invoice=invoice, reference="P1", date=dt.date(2026, 11, 5), amount=D("110"))
    invoice, changed = upsert(debtor, status="open")
    assert not changed
    assert invoice.status == InvoiceStatus.PAID


def test_partial_payments_then_paid():
    debtor = DebtorAccountFactory()
    invoice, _ = upsert(debtor)  # 110.00

    payment, created = payment_upsert(
        invoice=invoice, reference="VIR-1", date=dt.date(2026, 11, 10), amount=D("60.00")
    )
    assert created
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN
    assert Invoice.objects.with_amounts().get(pk=invoice.pk).amount_due == D("50.00")
    assert Invoice.objects.pending().filter(pk=invoice.pk).exists()

    payment_upsert(invoice=invoice, reference="VIR-2", date=dt.date(2026, 11, 20), amount=D("50"))
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert not Invoice.objects.pending().filter(pk=invoice.pk).exists()


def test_payment_upsert_same_values_is_unchanged():
    debtor = DebtorAccountFactory()
    invoice, _ = upsert(debtor)
    payment_upsert(invoice=invoice, reference="VIR-1", date=dt.date(2026, 11, 10), amount=D("10"))
    payment, changed = payment_upsert(
        invoice=invoice, reference="VIR-1", date=dt.date(2026, 11, 10), amount=D("10.00")
    )
    assert not changed
    assert Payment.objects.count() == 1


def test_overpayment_is_refused():
    debtor = DebtorAccountFactory()
    invoice, _ = upsert(debtor)
    payment_upsert(invoice=invoice, reference="VIR-1", date=dt.date(2026, 11, 10), amount=D("100"))
    with pytest.raises(InvoicingError) as error:
        payment_upsert(
            invoice=invoice, reference="VIR-2", date=dt.date(2026, 11, 11), amount=D("10.01")
        )
    assert error.value.field == "amount"
    assert Payment.objects.count() == 1
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN


def test_correcting_a_payment_down_reopens_the_invoice():
    debtor = DebtorAccountFactory()
    invoice, _ = upsert(debtor)
    payment_upsert(invoice=invoice, reference="VIR-1", date=dt.date(2026, 11, 10), amount=D("110"))
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    _, changed = payment_upsert(
        invoice=invoice, reference="VIR-1", date=dt.date(2026, 11, 10), amount=D("100")
    )
    assert changed
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN


def test_recalculate_after_lines_edited_and_payment_removed():
    debtor = DebtorAccountFactory()
    invoice, _ = upsert(debtor, lines=[line(quantity="2", unit_price="100.00")])  # 220.00
    payment_upsert(invoice=invoice, reference="VIR-1", date=dt.date(2026, 11, 10), amount=D("165"))

    # As the admin does: lines edited in an inline, then the invoice recalculated.
    InvoiceLine.objects.filter(invoice=invoice).update(quantity=D("1.5"))
    invoice = invoice_recalculate(invoice=invoice)
    assert (invoice.net_total, invoice.vat_total, invoice.gross_total) == (
        D("150.00"),
        D("15.00"),
        D("165.00"),
    )
    assert invoice.lines.get().net_amount == D("150.00")
    assert invoice.status == InvoiceStatus.PAID

    Payment.objects.filter(invoice=invoice).delete()
    invoice = invoice_recalculate(invoice=invoice)
    assert invoice.status == InvoiceStatus.OPEN


def test_recalculate_refuses_payments_above_the_new_total():
    debtor = DebtorAccountFactory()
    invoice, _ = upsert(debtor)
    payment_upsert(invoice=invoice, reference="VIR-1", date=dt.date(2026, 11, 10), amount=D("110"))
    InvoiceLine.objects.filter(invoice=invoice).update(unit_price=D("10"))
    with pytest.raises(InvoicingError):
        invoice_recalculate(invoice=invoice)


def test_approve_and_disputes():
    debtor = DebtorAccountFactory(establishment=EstablishmentFactory(review_mode=True))
    invoice, _ = upsert(debtor)
    assert not Invoice.objects.pending().filter(pk=invoice.pk).exists()

    invoice = invoice_approve(invoice=invoice)
    assert invoice.status == InvoiceStatus.OPEN
    with pytest.raises(InvoicingError):
        invoice_approve(invoice=invoice)

    with pytest.raises(InvoicingError):
        invoice_mark_disputed(invoice=invoice, reason="  ")
    invoice = invoice_mark_disputed(invoice=invoice, reason="Tarif contesté")
    assert (invoice.disputed, invoice.dispute_reason) == (True, "Tarif contesté")
    assert not Invoice.objects.pending().filter(pk=invoice.pk).exists()

    invoice = invoice_clear_dispute(invoice=invoice)
    assert (invoice.disputed, invoice.dispute_reason) == (False, "")
    assert Invoice.objects.pending().filter(pk=invoice.pk).exists()
    with pytest.raises(InvoicingError):
        invoice_clear_dispute(invoice=invoice)


def test_establishment_and_debtor_upserts_report_changes():
    establishment, changed = establishment_upsert(code="h1", name="Hôtel 1", currency="EUR")
    assert changed
    before = establishment.updated_at
    establishment, changed = establishment_upsert(code="h1", name="Hôtel 1")
    assert not changed
    establishment.refresh_from_db()
    assert establishment.updated_at == before
    establishment, changed = establishment_upsert(code="h1", minimum_amount=D("50"))
    assert changed
    assert establishment.name == "Hôtel 1"

    debtor, changed = debtor_upsert(
        establishment=establishment,
        account_number="411A",
        name="Agence A",
        contact_email="not an email",
    )
    assert changed
    assert debtor.contact_email == "not an email"
    _, changed = debtor_upsert(establishment=establishment, account_number="411A", name="Agence A")
    assert not changed


def test_debtor_pause_and_resume():
    debtor = DebtorAccountFactory()
    with pytest.raises(DebtorError):
        debtor_pause(debtor=debtor, until=dt.date(2027, 1, 31), reason="")
    debtor = debtor_pause(debtor=debtor, until=dt.date(2027, 1, 31), reason="Échéancier")
    assert (debtor.paused_until, debtor.pause_reason) == (dt.date(2027, 1, 31), "Échéancier")
    debtor = debtor_resume(debtor=debtor)
    assert (debtor.paused_until, debtor.pause_reason) == (None, "")
    with pytest.raises(DebtorError):
        debtor_resume(debtor=debtor)
