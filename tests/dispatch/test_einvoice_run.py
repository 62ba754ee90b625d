"""The nightly run for e-invoicing debtors: selection, submission once, reminders, statuses."""

import datetime as dt
import json
import re
import time
from decimal import Decimal
from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from werkzeug import Response

from debtors.models import SendMode
from dispatch.einvoicing import einvoice_poll, einvoice_report_cashed
from dispatch.integrations import integration_set_secrets
from dispatch.models import (
    Channel,
    Dispatch,
    DispatchStatus,
    EventKind,
    Integration,
    LifecycleEvent,
    Provider,
)
from dispatch.services import dispatch_send
from invoicing.services import payment_upsert
from tests.factories import DebtorAccountFactory, EstablishmentFactory, InvoiceFactory

pytestmark = pytest.mark.django_db

D = dt.date(2026, 12, 4)


def run_command(*args: str) -> dict:
    out = StringIO()
    call_command("send_pending_invoices", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture
def hotel():
    return EstablishmentFactory(code="paris", reminder_interval_days=7)


@pytest.fixture
def sandbox(hotel, tmp_path):
    return Integration.objects.create(
        establishment=hotel,
        provider=Provider.SANDBOX,
        name="Plateforme démo",
        active=True,
        endpoint=str(tmp_path / "platform"),
    )


@pytest.fixture
def debtor(hotel, sandbox):
    return DebtorAccountFactory(
        establishment=hotel,
        account_number="E001",
        send_mode=SendMode.EINVOICING,
        integration=sandbox,
        einvoicing_id="73282932000074",
        contact_email="ap@agency.example",
    )


def test_each_pending_invoice_is_submitted_once(hotel, sandbox, debtor, tmp_path):
    first = InvoiceFactory(debtor=debtor, number="F-1", due_date=D + dt.timedelta(days=10))
    second = InvoiceFactory(debtor=debtor, number="F-2", due_date=D + dt.timedelta(days=20))
    report = run_command("--date", D.isoformat())

    assert sorted(e["invoices"][0] for e in report["sent"]) == ["F-1", "F-2"]
    assert {e["channel"] for e in report["sent"]} == {"sandbox"}
    assert all(e["platform_ref"] and e["status"] == "sent" for e in report["sent"])
    dispatches = Dispatch.objects.filter(channel=Channel.EINVOICE)
    assert dispatches.count() == 2
    for dispatch in dispatches:
        assert dispatch.status == DispatchStatus.SENT
        assert dispatch.lifecycle_code == "200"
        assert dispatch.recipient == "73282932000074"
        assert (tmp_path / "platform" / dispatch.platform_ref).exists()
    # No letter: the invoices are not overdue, the e-invoices told the debtor.
    assert mail.outbox == []

    again = run_command("--date", (D + dt.timedelta(days=1)).isoformat())
    assert again["sent"] == []
    assert Dispatch.objects.filter(channel=Channel.EINVOICE).count() == 2

    third = InvoiceFactory(debtor=debtor, number="F-3", issue_date=D)
    later = run_command("--date", (D + dt.timedelta(days=2)).isoformat())
    assert [e["invoices"] for e in later["sent"]] == [[third.number]]
    assert {first.number, second.number}.isdisjoint(later["sent"][0]["invoices"])


def test_dry_run_lists_submissions_without_sending(hotel, sandbox, debtor):
    InvoiceFactory(debtor=debtor, number="F-9", due_date=D + dt.timedelta(days=5))
    InvoiceFactory(debtor=debtor, number="F-8", issue_date=D - dt.timedelta(days=40))
    report = run_command("--date", D.isoformat(), "--dry-run")
    assert sorted((e["channel"], tuple(e["invoices"])) for e in report["sent"]) == [
        ("email", ("F-8", "F-9")),  # the overdue reminder lists every pending invoice
        ("sandbox", ("F-8",)),
        ("sandbox", ("F-9",)),
    ]
    assert Dispatch.objects.count() == 0


def test_inactive_integration_skips_the_debtor_without_falling_back(hotel, sandbox, debtor):
    InvoiceFactory(debtor=debtor, issue_date=D - dt.timedelta(days=40))
    sandbox.active = False
    sandbox.save()
    report = run_command("--date", D.isoformat())
    assert report["sent"] == []
    assert [(e["debtor"], e["reason"], e["channel"]) for e in report["skipped"]] == [
        ("E001", "integration_inactive", "sandbox")
    ]
    assert mail.outbox == []


def test_missing_recipient_id_is_skipped_with_its_reason(hotel, sandbox, debtor):
    debtor.einvoicing_id = ""
    debtor.save()
    InvoiceFactory(debtor=debtor)
    report = run_command("--date", D.isoformat())
    assert [(e["debtor"], e["reason"]) for e in report["skipped"]] == [
        ("E001", "missing_einvoicing_id")
    ]


def test_overdue_einvoices_get_the_remittance_letter_at_the_reminder_cadence(
    hotel, sandbox, debtor
):
    overdue = InvoiceFactory(debtor=debtor, issue_date=D - dt.timedelta(days=40))
    first = run_command("--date", D.isoformat())
    # Submitted, and overdue: the reminder letter goes to the contact email too.
    assert sorted(e["channel"] for e in first["sent"]) == ["email", "sandbox"]
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ap@agency.example"]

    within = run_command("--date", (D + dt.timedelta(days=3)).isoformat())
    assert within["sent"] == []
    assert [e["reason"] for e in within["skipped"]] == ["interval_not_reached"]

    after = run_command("--date", (D + dt.timedelta(days=7)).isoformat())
    assert [(e["channel"], e["invoices"]) for e in after["sent"]] == [("email", [overdue.number])]
    assert Dispatch.objects.filter(channel=Channel.EINVOICE).count() == 1


def test_a_reminder_without_contact_email_is_reported(hotel, sandbox, debtor):
    debtor.contact_email = ""
    debtor.save()
    InvoiceFactory(debtor=debtor, issue_date=D - dt.timedelta(days=40))
    report = run_command("--date", D.isoformat())
    assert [e["channel"] for e in report["sent"]] == ["sandbox"]
    assert [e["reason"] for e in report["skipped"]] == ["missing_email"]


def test_platform_statuses_are_polled_into_the_history(hotel, sandbox, debtor, tmp_path):
    InvoiceFactory(debtor=debtor)
    run_command("--date", D.isoformat())
    dispatch = Dispatch.objects.get(channel=Channel.EINVOICE)
    receipt_path = tmp_path / "platform" / f"{dispatch.platform_ref}.receipt.json"
    receipt = json.loads(receipt_path.read_text())
    receipt["status"] = "205"
    receipt_path.write_text(json.dumps(receipt))

    assert einvoice_poll(integration=sandbox) == 1
    dispatch.refresh_from_db()
    assert dispatch.lifecycle_code == "205"
    assert list(dispatch.lifecycle.values_list("code", "source")) == [
        ("200", LifecycleEvent.Source.SUBMISSION),
        ("205", LifecycleEvent.Source.POLL),
    ]


def test_a_paid_einvoice_is_reported_cashed(hotel, sandbox, debtor):
    invoice = InvoiceFactory(debtor=debtor, gross=Decimal("150.00"))
    run_command("--date", D.isoformat())
    payment_upsert(invoice=invoice, reference="VIR-1", date=D, amount=Decimal("150.00"))
    assert einvoice_report_cashed(invoice_id=invoice.pk) == 1
    dispatch = Dispatch.objects.get(channel=Channel.EINVOICE)
    assert dispatch.lifecycle_code == "212"
    assert dispatch.lifecycle.last().source == LifecycleEvent.Source.LOCAL
    # Once only.
    assert einvoice_report_cashed(invoice_id=invoice.pk) == 0


def test_deactivated_after_planning_nothing_is_submitted(hotel, sandbox, debtor):
    from dispatch.models import RunTrigger
    from dispatch.services import run_execute

    InvoiceFactory(debtor=debtor, due_date=D + dt.timedelta(days=5))
    outcome = run_execute(
        establishment=hotel, business_date=D, trigger=RunTrigger.COMMAND, enqueue=False
    )
    Integration.objects.filter(pk=sandbox.pk).update(active=False)
    (dispatch_id,) = outcome.created_ids
    dispatch = dispatch_send(dispatch_id=dispatch_id).dispatch
    assert dispatch.status == DispatchStatus.FAILED
    assert "not active" in dispatch.last_error
    assert dispatch.events.filter(kind=EventKind.FAILED).exists()


@pytest.fixture
def bavel(hotel, httpserver):
    integration = Integration.objects.create(
        establishment=hotel,
        provider=Provider.BAVEL,
        name="Bavel",
        active=True,
        endpoint=httpserver.url_for("/bavel").rstrip("/"),
        options={"hotel_code": "PARLUM"},
    )
    integration_set_secrets(
        integration=integration, credentials={"username": "hotel", "password": "s3cret"}
    )
    return integration


def test_bavel_rejection_is_final_and_keeps_the_platform_message(hotel, bavel, httpserver):
    debtor = DebtorAccountFactory(
        establishment=hotel,
        send_mode=SendMode.EINVOICING,
        integration=bavel,
        einvoicing_id="73282932000074",
    )
    InvoiceFactory(debtor=debtor, number="F-REJ")
    httpserver.expect_request(re.compile(r"/bavel/Outbox/.+"), method="PUT").respond_with_data(
        "Unknown recipient 73282932000074", status=422
    )
    report = run_command("--date", D.isoformat())
    (failed,) = report["failed"]
    assert failed["channel"] == "bavel"
    assert failed["status"] == "rejected"
    assert "Unknown recipient" in failed["error"]
    dispatch = Dispatch.objects.get(channel=Channel.EINVOICE)
    assert dispatch_send(dispatch_id=dispatch.pk).attempted is False
    assert dispatch.http_attempts.count() == 1


def test_bavel_timeout_after_arrival_is_checked_not_resubmitted(hotel, bavel, httpserver, settings):
    """The PUT reached Bavel but the answer timed out: the retry asks, finds it, stops."""
    settings.EINVOICING_HTTP_TIMEOUT = (1, 0.3)
    debtor = DebtorAccountFactory(
        establishment=hotel,
        send_mode=SendMode.EINVOICING,
        integration=bavel,
        einvoicing_id="73282932000074",
    )
    InvoiceFactory(debtor=debtor, number="F-SLOW", due_date=D + dt.timedelta(days=10))
    received: list[str] = []

    def slow_put(request):
        received.append(request.path.rsplit("/", 1)[-1])
        time.sleep(0.8)
        return Response(status=201)

    httpserver.expect_request(re.compile(r"/bavel/Outbox/.+"), method="PUT").respond_with_handler(
        slow_put
    )
    httpserver.expect_request("/bavel/Outbox/", method="GET").respond_with_handler(
        lambda request: Response(json.dumps(received), content_type="application/json")
    )

    first = run_command("--date", D.isoformat())
    (waiting,) = first["failed"]
    assert waiting["status"] == "retry"
    dispatch = Dispatch.objects.get(channel=Channel.EINVOICE)
    assert dispatch.outcome_unknown is True

    # The retry comes after the backoff, when the platform has finished with the PUT (the
    # test server answers one request at a time).
    time.sleep(0.7)
    result = dispatch_send(dispatch_id=dispatch.pk, now=dispatch.next_attempt_at)
    dispatch = result.dispatch
    assert dispatch.status == DispatchStatus.SENT
    assert dispatch.platform_ref == received[0]
    assert dispatch.outcome_unknown is False
    assert len(received) == 1, "the document must not be submitted twice"
    assert dispatch.events.filter(kind=EventKind.CHECKED).exists()
    operations = list(dispatch.http_attempts.order_by("at").values_list("operation", flat=True))
    assert operations == ["submit", "find_submission"]


def test_a_status_seen_twice_is_stored_once(hotel, sandbox, debtor):
    from dispatch.connectors.base import StatusUpdate
    from dispatch.einvoicing import lifecycle_record

    InvoiceFactory(debtor=debtor, due_date=D + dt.timedelta(days=10))
    run_command("--date", D.isoformat())
    dispatch = Dispatch.objects.get(channel=Channel.EINVOICE)
    update = StatusUpdate(code="204", platform_ref=dispatch.platform_ref, event_id="evt-204")
    for _ in range(2):
        recorded = lifecycle_record(
            integration=sandbox, updates=[update], source=LifecycleEvent.Source.POLL
        )
        assert recorded.handled == [update]  # handled both times, so it is acknowledged
    assert list(dispatch.lifecycle.values_list("code", flat=True)) == ["200", "204"]


def test_an_interrupted_submission_is_checked_with_the_platform(hotel, sandbox, debtor):
    from django.utils import timezone

    from dispatch.models import RunTrigger
    from dispatch.services import dispatch_settle_interrupted, run_execute, stale_sending_after

    InvoiceFactory(debtor=debtor, due_date=D + dt.timedelta(days=10))
    outcome = run_execute(
        establishment=hotel, business_date=D, trigger=RunTrigger.COMMAND, enqueue=False
    )
    (dispatch_id,) = outcome.created_ids
    # The worker submitted the document and died before recording it.
    dispatch = dispatch_send(dispatch_id=dispatch_id).dispatch
    platform_ref = dispatch.platform_ref
    Dispatch.objects.filter(pk=dispatch_id).update(
        status=DispatchStatus.SENDING,
        platform_ref="",
        sent_at=None,
        claimed_at=timezone.now() - stale_sending_after() - dt.timedelta(minutes=1),
    )
    assert dispatch_settle_interrupted() == [dispatch_id]
    dispatch = Dispatch.objects.get(pk=dispatch_id)
    assert (dispatch.status, dispatch.outcome_unknown) == (DispatchStatus.RETRY, True)

    dispatch = dispatch_send(dispatch_id=dispatch_id).dispatch
    assert dispatch.status == DispatchStatus.SENT
    assert dispatch.platform_ref == platform_ref
    assert dispatch.events.filter(kind=EventKind.CHECKED).exists()
