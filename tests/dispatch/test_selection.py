"""The rules of selection (DESIGN.md), one by one, through the planner the run uses."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from debtors.models import SendMode
from dispatch.models import (
    Channel,
    Dispatch,
    DispatchItem,
    DispatchStatus,
    Run,
    RunTrigger,
    SkipReason,
)
from dispatch.selectors import establishment_business_date, establishment_plan_letters
from dispatch.services import run_execute
from invoicing.models import InvoiceStatus
from tests.factories import (
    DebtorAccountFactory,
    EstablishmentFactory,
    InvoiceFactory,
    PaymentFactory,
)

pytestmark = pytest.mark.django_db

D = dt.date(2026, 12, 4)


def plan(establishment, business_date=D):
    return establishment_plan_letters(establishment=establishment, business_date=business_date)


def decisions(establishment, business_date=D):
    """{account number: reason or cause} for every debtor with pending invoices."""
    p = plan(establishment, business_date)
    result = {d.account_number: d.cause for d in p.letters}
    result.update({d.account_number: str(d.reason) for d in p.skips})
    return result


def mark_sent(establishment, debtor, business_date, invoices):
    """A letter sent on `business_date` covering `invoices`, as the run would leave it."""
    dispatch = Dispatch.objects.create(
        establishment=establishment,
        debtor=debtor,
        channel=Channel.EMAIL,
        business_date=business_date,
        idempotency_key=f"letter:{debtor.pk}:{business_date}",
        status=DispatchStatus.SENT,
        sent_at=timezone.now(),
        recipient=debtor.contact_email,
        language="fr",
        currency="EUR",
        total_due=sum(i.gross_total for i in invoices),
    )
    for invoice in invoices:
        DispatchItem.objects.create(
            dispatch=dispatch, invoice=invoice, amount_due=invoice.gross_total
        )
    return dispatch


@pytest.fixture
def hotel():
    return EstablishmentFactory(code="paris", minimum_amount=Decimal("0.01"))


def test_open_invoice_is_pending_and_planned(hotel):
    invoice = InvoiceFactory(debtor__establishment=hotel, debtor__account_number="A1")
    p = plan(hotel)
    assert [d.account_number for d in p.letters] == ["A1"]
    assert p.letters[0].invoice_numbers == [invoice.number]
    assert p.letters[0].total_due == Decimal("110.00")
    assert p.letters[0].cause == "new_invoices"


def test_review_and_paid_invoices_are_not_pending(hotel):
    InvoiceFactory(debtor__establishment=hotel, status=InvoiceStatus.REVIEW)
    InvoiceFactory(debtor__establishment=hotel, status=InvoiceStatus.PAID)
    assert decisions(hotel) == {}


def test_partial_payment_leaves_the_rest_due(hotel):
    invoice = InvoiceFactory(
        debtor__establishment=hotel, debtor__account_number="A1", gross=Decimal("300.00")
    )
    PaymentFactory(invoice=invoice, amount=Decimal("120.50"))
    (letter,) = plan(hotel).letters
    assert letter.invoices[0].amount_due == Decimal("179.50")
    assert letter.total_due == Decimal("179.50")


def test_open_invoice_fully_paid_by_payments_is_not_pending(hotel):
    invoice = InvoiceFactory(debtor__establishment=hotel, gross=Decimal("100.00"))
    PaymentFactory(invoice=invoice, amount=Decimal("60.00"))
    PaymentFactory(invoice=invoice, amount=Decimal("40.00"))
    assert decisions(hotel) == {}


def test_disputed_invoice_is_not_pending(hotel):
    debtor = DebtorAccountFactory(establishment=hotel, account_number="A1")
    InvoiceFactory(debtor=debtor, disputed=True, dispute_reason="Room not clean")
    kept = InvoiceFactory(debtor=debtor)
    (letter,) = plan(hotel).letters
    assert letter.invoice_numbers == [kept.number]


def test_invoice_issued_after_the_business_date_waits(hotel):
    InvoiceFactory(debtor__establishment=hotel, issue_date=D + dt.timedelta(days=1))
    assert decisions(hotel) == {}


def test_paused_debtor_is_skipped_until_the_pause_ends(hotel):
    InvoiceFactory(
        debtor__establishment=hotel,
        debtor__account_number="A1",
        debtor__paused_until=D,
        debtor__pause_reason="Payment plan agreed",
    )
    assert decisions(hotel) == {"A1": SkipReason.PAUSED}
    assert decisions(hotel, D + dt.timedelta(days=1)) == {"A1": "new_invoices"}


@pytest.mark.parametrize(
    ("send_mode", "email", "reason"),
    [
        (SendMode.NONE, "ap@agency.example", SkipReason.NO_SEND_MODE),
        (SendMode.EMAIL, "", SkipReason.MISSING_EMAIL),
        (SendMode.EMAIL, "   ", SkipReason.MISSING_EMAIL),
        (SendMode.EMAIL, "not-an-address", SkipReason.INVALID_EMAIL),
        (SendMode.EMAIL, "ap@agency", SkipReason.INVALID_EMAIL),
    ],
)
def test_misconfigured_accounts_are_skipped_with_a_reason(hotel, send_mode, email, reason):
    InvoiceFactory(
        debtor__establishment=hotel,
        debtor__account_number="A1",
        debtor__send_mode=send_mode,
        debtor__contact_email=email,
    )
    assert decisions(hotel) == {"A1": reason}


def test_below_minimum_counts_the_whole_balance(hotel):
    hotel.minimum_amount = Decimal("50.00")
    hotel.save()
    small = DebtorAccountFactory(establishment=hotel, account_number="SMALL")
    InvoiceFactory(debtor=small, gross=Decimal("49.99"))
    enough = DebtorAccountFactory(establishment=hotel, account_number="ENOUGH")
    InvoiceFactory(debtor=enough, gross=Decimal("30.00"))
    InvoiceFactory(debtor=enough, gross=Decimal("20.00"))
    assert decisions(hotel) == {
        "SMALL": SkipReason.BELOW_MINIMUM,
        "ENOUGH": "new_invoices",
    }


def test_reminder_cadence_for_overdue_invoices(hotel):
    debtor = DebtorAccountFactory(establishment=hotel, account_number="A1")
    overdue = InvoiceFactory(
        debtor=debtor, issue_date=dt.date(2026, 10, 1), due_date=dt.date(2026, 10, 31)
    )
    mark_sent(hotel, debtor, D, [overdue])

    # Everything was in the letter sent on D: nothing to say before the interval.
    for days in range(1, 7):
        assert decisions(hotel, D + dt.timedelta(days=days)) == {
            "A1": SkipReason.INTERVAL_NOT_REACHED
        }
    # Seven days later the overdue invoice earns a reminder.
    p = plan(hotel, D + dt.timedelta(days=7))
    (letter,) = p.letters
    assert letter.cause == "reminder"
    assert letter.invoices[0].days_overdue == (D + dt.timedelta(days=7) - overdue.due_date).days


def test_no_reminder_for_invoices_not_yet_due(hotel):
    debtor = DebtorAccountFactory(establishment=hotel, account_number="A1")
    invoice = InvoiceFactory(debtor=debtor, issue_date=D, due_date=D + dt.timedelta(days=60))
    mark_sent(hotel, debtor, D, [invoice])
    assert decisions(hotel, D + dt.timedelta(days=30)) == {"A1": SkipReason.INTERVAL_NOT_REACHED}


def test_a_new_invoice_brings_a_letter_listing_everything_before_the_interval(hotel):
    debtor = DebtorAccountFactory(establishment=hotel, account_number="A1")
    old = InvoiceFactory(debtor=debtor, due_date=dt.date(2026, 11, 10))
    mark_sent(hotel, debtor, D, [old])
    new = InvoiceFactory(debtor=debtor, issue_date=D + dt.timedelta(days=1))
    (letter,) = plan(hotel, D + dt.timedelta(days=2)).letters
    assert letter.cause == "new_invoices"
    assert set(letter.invoice_numbers) == {old.number, new.number}
    overdue = {i.number: i.days_overdue for i in letter.invoices}
    assert overdue[old.number] == 26
    assert overdue[new.number] == 0


def test_a_failed_letter_does_not_count_as_sent(hotel):
    debtor = DebtorAccountFactory(establishment=hotel, account_number="A1")
    invoice = InvoiceFactory(debtor=debtor)
    dispatch = mark_sent(hotel, debtor, D, [invoice])
    Dispatch.objects.filter(pk=dispatch.pk).update(status=DispatchStatus.FAILED)
    assert decisions(hotel, D + dt.timedelta(days=1)) == {"A1": "new_invoices"}


def test_missed_nights_are_caught_up_by_state(hotel):
    """No run for a week: the next run finds the same invoices, whatever their dates."""
    debtor = DebtorAccountFactory(establishment=hotel, account_number="A1")
    invoices = [
        InvoiceFactory(debtor=debtor, issue_date=D - dt.timedelta(days=n)) for n in range(7)
    ]
    later = D + dt.timedelta(days=3)
    outcome = run_execute(
        establishment=hotel, business_date=later, trigger=RunTrigger.COMMAND, enqueue=False
    )
    (dispatch,) = Dispatch.objects.filter(pk__in=outcome.created_ids)
    assert {i.invoice.number for i in dispatch.items.select_related("invoice")} == {
        i.number for i in invoices
    }


def test_other_establishments_are_not_mixed(hotel):
    InvoiceFactory(debtor__establishment=hotel, debtor__account_number="A1")
    InvoiceFactory(debtor__establishment=EstablishmentFactory(code="cancun"))
    assert decisions(hotel) == {"A1": "new_invoices"}


@pytest.mark.parametrize(
    ("time_zone", "utc_now", "expected"),
    [
        # Paris is UTC+1 in December: 00:30 local on the 5th, before the 02:00 send hour.
        ("Europe/Paris", dt.datetime(2026, 12, 4, 23, 30), None),
        ("Europe/Paris", dt.datetime(2026, 12, 5, 0, 59), None),
        ("Europe/Paris", dt.datetime(2026, 12, 5, 1, 0), dt.date(2026, 12, 5)),
        # Cancún is UTC-5: 22:00 UTC on the 4th is still the afternoon of the 4th.
        ("America/Cancun", dt.datetime(2026, 12, 4, 22, 0), dt.date(2026, 12, 4)),
        ("America/Cancun", dt.datetime(2026, 12, 5, 5, 30), None),
        ("America/Cancun", dt.datetime(2026, 12, 5, 7, 0), dt.date(2026, 12, 5)),
        # Auckland is UTC+13: already the 5th at 13:00 UTC on the 4th.
        ("Pacific/Auckland", dt.datetime(2026, 12, 4, 13, 0), dt.date(2026, 12, 5)),
        ("Pacific/Auckland", dt.datetime(2026, 12, 4, 12, 0), None),
    ],
)
def test_business_date_follows_the_local_clock_and_send_hour(time_zone, utc_now, expected):
    establishment = EstablishmentFactory(time_zone=time_zone, send_hour=2)
    now = utc_now.replace(tzinfo=dt.UTC)
    assert establishment_business_date(establishment=establishment, now=now) == expected


def test_skips_are_recorded_on_the_run(hotel):
    InvoiceFactory(debtor__establishment=hotel, debtor__account_number="A1")
    InvoiceFactory(
        debtor__establishment=hotel, debtor__account_number="B2", debtor__contact_email=""
    )
    InvoiceFactory(
        debtor__establishment=hotel,
        debtor__account_number="C3",
        debtor__send_mode=SendMode.NONE,
    )
    outcome = run_execute(
        establishment=hotel, business_date=D, trigger=RunTrigger.COMMAND, enqueue=False
    )
    run = Run.objects.get(pk=outcome.run.pk)
    assert run.planned_count == 1
    assert run.skipped_count == 2
    assert run.skipped_by_reason == {"missing_email": 1, "no_send_mode": 1}
    assert run.finished_at is not None
    assert {(s.debtor.account_number, s.reason) for s in run.skips.all()} == {
        ("B2", "missing_email"),
        ("C3", "no_send_mode"),
    }
