"""Sending through a real SMTP server on loopback: delivery, idempotency, retries, failures."""

import datetime as dt
import email
import json
import threading
from decimal import Decimal
from email import policy
from io import StringIO

import pytest
from django.core import mail
from django.core.mail.backends import locmem
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation

from dispatch.models import (
    Dispatch,
    DispatchEvent,
    DispatchStatus,
    EventKind,
    Run,
    RunTrigger,
)
from dispatch.services import (
    DispatchStateError,
    dispatch_requeue,
    dispatch_send,
    dispatch_settle_interrupted,
    due_establishments_process,
    run_execute,
    stale_sending_after,
)
from dispatch.tasks import send_dispatch_task
from tests.dispatch.conftest import free_port
from tests.factories import (
    DebtorAccountFactory,
    EstablishmentFactory,
    InvoiceFactory,
    PaymentFactory,
)

pytestmark = pytest.mark.django_db

D = dt.date(2026, 12, 4)


def run_command(*args: str) -> dict:
    out = StringIO()
    call_command("send_pending_invoices", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def plan_one(establishment, business_date=D) -> Dispatch:
    outcome = run_execute(
        establishment=establishment,
        business_date=business_date,
        trigger=RunTrigger.COMMAND,
        enqueue=False,
    )
    (dispatch_id,) = outcome.created_ids
    return Dispatch.objects.get(pk=dispatch_id)


@pytest.fixture
def hotel():
    return EstablishmentFactory(code="paris", finance_email="compta@lumiere.example")


@pytest.fixture
def debtor(hotel):
    return DebtorAccountFactory(
        establishment=hotel, account_number="C001", contact_email="ap@agency.example"
    )


def test_letter_reaches_the_smtp_server_with_its_pdf(hotel, debtor, smtp_server):
    first = InvoiceFactory(debtor=debtor, number="F-1", gross=Decimal("250.00"))
    second = InvoiceFactory(debtor=debtor, number="F-2", gross=Decimal("100.00"))
    PaymentFactory(invoice=second, amount=Decimal("40.00"))

    report = run_command("--date", D.isoformat())

    assert len(smtp_server.messages) == 1
    mail_from, rcpt_tos = smtp_server.envelopes[0]
    assert rcpt_tos == ["ap@agency.example"]
    message = email.message_from_bytes(smtp_server.messages[0], policy=policy.default)
    assert message["To"] == "ap@agency.example"
    assert message["Reply-To"] == "compta@lumiere.example"
    dispatch = Dispatch.objects.get()
    assert message["Message-ID"].strip() == dispatch.message_id
    body_types = {part.get_content_type() for part in message.walk()}
    assert {"text/plain", "text/html", "application/pdf"} <= body_types
    (pdf,) = [p for p in message.iter_attachments() if p.get_content_type() == "application/pdf"]
    assert pdf.get_content().startswith(b"%PDF")

    assert dispatch.status == DispatchStatus.SENT
    assert dispatch.total_due == Decimal("310.00")
    assert [e.kind for e in dispatch.events.all()] == [
        EventKind.PLANNED,
        EventKind.CLAIMED,
        EventKind.SENT,
    ]
    (sent,) = report["sent"]
    assert sent["establishment"] == "paris"
    assert sent["debtor"] == "C001"
    assert sent["channel"] == "email"
    assert sorted(sent["invoices"]) == [first.number, second.number]
    assert sent["amount_due"] == "310.00"
    assert report["failed"] == [] and report["skipped"] == []
    run = Run.objects.get()
    assert (run.planned_count, run.sent_count, run.failed_count) == (1, 1, 0)


def test_the_job_run_twice_sends_one_letter(hotel, debtor, smtp_server):
    InvoiceFactory(debtor=debtor)
    first = run_command("--date", D.isoformat())
    second = run_command("--date", D.isoformat())
    assert len(first["sent"]) == 1
    assert second["sent"] == []
    assert [s["reason"] for s in second["skipped"]] == ["interval_not_reached"]
    assert len(smtp_server.messages) == 1
    assert Dispatch.objects.count() == 1


def test_a_new_invoice_the_same_day_waits_for_the_next_letter(hotel, debtor):
    InvoiceFactory(debtor=debtor)
    run_command("--date", D.isoformat())
    InvoiceFactory(debtor=debtor, issue_date=D)
    second = run_command("--date", D.isoformat())
    assert [s["reason"] for s in second["skipped"]] == ["already_sent_today"]
    assert len(mail.outbox) == 1
    third = run_command("--date", (D + dt.timedelta(days=1)).isoformat())
    assert len(third["sent"][0]["invoices"]) == 2
    assert len(mail.outbox) == 2


def test_the_task_run_twice_for_one_dispatch_sends_once(hotel, debtor):
    InvoiceFactory(debtor=debtor)
    dispatch = plan_one(hotel)
    assert send_dispatch_task.apply(args=[dispatch.pk]).get() == DispatchStatus.SENT
    assert send_dispatch_task.apply(args=[dispatch.pk]).get() == DispatchStatus.SENT
    assert len(mail.outbox) == 1
    assert dispatch.events.filter(kind=EventKind.CLAIMED).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_on_one_dispatch_send_once(smtp_server):
    hotel = EstablishmentFactory(code="race")
    InvoiceFactory(debtor__establishment=hotel)
    dispatch = plan_one(hotel)
    barrier = threading.Barrier(4)
    results = []

    def worker():
        barrier.wait()
        try:
            results.append(dispatch_send(dispatch_id=dispatch.pk).attempted)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [False, False, False, True]
    assert len(smtp_server.messages) == 1
    assert Dispatch.objects.get(pk=dispatch.pk).status == DispatchStatus.SENT


def test_transient_smtp_failure_is_retried_with_backoff(hotel, debtor, smtp_server, settings):
    settings.BILLING = {**settings.BILLING, "RETRY_BASE_SECONDS": 60, "MAX_SEND_ATTEMPTS": 5}
    InvoiceFactory(debtor=debtor)
    smtp_server.rcpt_replies = ["451 4.3.0 Mailbox temporarily unavailable"] * 2

    report = run_command("--date", D.isoformat())
    (failed,) = report["failed"]
    assert failed["status"] == "retry"
    assert "451" in failed["error"]
    dispatch = Dispatch.objects.get()
    first_delay = dispatch.next_attempt_at - dispatch.updated_at
    assert dt.timedelta(seconds=55) < first_delay <= dt.timedelta(seconds=61)

    # Too early: nothing happens.
    assert dispatch_send(dispatch_id=dispatch.pk).attempted is False
    # Second attempt fails again: the delay doubles.
    result = dispatch_send(dispatch_id=dispatch.pk, now=dispatch.next_attempt_at)
    dispatch = result.dispatch
    assert (dispatch.status, dispatch.attempts) == (DispatchStatus.RETRY, 2)
    second_delay = dispatch.next_attempt_at - dispatch.updated_at
    assert dt.timedelta(seconds=115) < second_delay <= dt.timedelta(seconds=121)
    # Third attempt goes through.
    dispatch = dispatch_send(dispatch_id=dispatch.pk, now=dispatch.next_attempt_at).dispatch
    assert dispatch.status == DispatchStatus.SENT
    assert len(smtp_server.messages) == 1
    assert [e.kind for e in dispatch.events.all()] == [
        EventKind.PLANNED,
        EventKind.CLAIMED,
        EventKind.RETRY,
        EventKind.CLAIMED,
        EventKind.RETRY,
        EventKind.CLAIMED,
        EventKind.SENT,
    ]


def test_the_next_run_sends_a_due_retry(hotel, debtor, smtp_server):
    InvoiceFactory(debtor=debtor)
    smtp_server.rcpt_replies = ["421 4.7.0 Try again later"]
    run_command("--date", D.isoformat())
    Dispatch.objects.update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))
    report = run_command("--date", D.isoformat())
    assert [s["status"] for s in report["sent"]] == ["sent"]
    assert len(smtp_server.messages) == 1


def test_permanent_smtp_failure_is_recorded_and_not_retried(hotel, debtor, smtp_server):
    InvoiceFactory(debtor=debtor)
    smtp_server.rcpt_replies = ["550 5.1.1 No such user"]
    report = run_command("--date", D.isoformat())
    (failed,) = report["failed"]
    assert failed["status"] == "failed"
    assert "550" in failed["error"] and "No such user" in failed["error"]
    dispatch = Dispatch.objects.get()
    assert dispatch.status == DispatchStatus.FAILED
    assert dispatch.next_attempt_at is None
    assert dispatch_send(dispatch_id=dispatch.pk).attempted is False
    # The failure stays visible on later runs of the same date.
    again = run_command("--date", D.isoformat())
    assert [f["debtor"] for f in again["failed"]] == ["C001"]
    assert smtp_server.messages == []


def test_retries_are_bounded(hotel, debtor, smtp_server, settings):
    settings.BILLING = {**settings.BILLING, "MAX_SEND_ATTEMPTS": 2}
    InvoiceFactory(debtor=debtor)
    smtp_server.rcpt_replies = ["451 4.3.0 busy"] * 5
    dispatch = plan_one(hotel)
    dispatch = dispatch_send(dispatch_id=dispatch.pk).dispatch
    assert dispatch.status == DispatchStatus.RETRY
    dispatch = dispatch_send(dispatch_id=dispatch.pk, now=dispatch.next_attempt_at).dispatch
    assert dispatch.status == DispatchStatus.FAILED
    assert dispatch.attempts == 2
    assert "451" in dispatch.last_error


def test_unreachable_smtp_server_is_a_transient_failure(hotel, debtor, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = free_port()  # nothing listens there
    settings.EMAIL_TIMEOUT = 2
    InvoiceFactory(debtor=debtor)
    dispatch = dispatch_send(dispatch_id=plan_one(hotel).pk).dispatch
    assert dispatch.status == DispatchStatus.RETRY
    assert "ConnectionRefusedError" in dispatch.last_error


def test_interrupted_send_is_settled_by_the_next_run_and_never_resent(hotel, debtor):
    invoice = InvoiceFactory(debtor=debtor)
    dispatch = plan_one(hotel)
    # A worker claimed it and died before recording the outcome.
    claimed = timezone.now() - stale_sending_after() - dt.timedelta(minutes=1)
    Dispatch.objects.filter(pk=dispatch.pk).update(
        status=DispatchStatus.SENDING, claimed_at=claimed, attempts=1
    )
    # A claim younger than the task's hard time limit is left alone.
    assert dispatch_settle_interrupted(now=claimed + dt.timedelta(seconds=30)) == []

    assert dispatch_settle_interrupted() == [dispatch.pk]
    dispatch.refresh_from_db()
    assert dispatch.status == DispatchStatus.FAILED
    assert "Interrupted" in dispatch.last_error
    assert dispatch.events.filter(kind=EventKind.INTERRUPTED).exists()
    # Not resent on the same business date...
    run_command("--date", D.isoformat())
    assert mail.outbox == []
    # ...and its invoice is in the next business date's letter.
    report = run_command("--date", (D + dt.timedelta(days=1)).isoformat())
    assert report["sent"][0]["invoices"] == [invoice.number]
    assert len(mail.outbox) == 1


def test_a_newer_letter_supersedes_an_unsent_older_one(hotel, debtor, smtp_server):
    InvoiceFactory(debtor=debtor)
    smtp_server.rcpt_replies = ["451 4.3.0 busy"]
    run_command("--date", D.isoformat())
    old = Dispatch.objects.get()
    assert old.status == DispatchStatus.RETRY
    report = run_command("--date", (D + dt.timedelta(days=1)).isoformat())
    old.refresh_from_db()
    assert old.status == DispatchStatus.SUPERSEDED
    assert [s["business_date"] for s in report["sent"]] == ["2026-12-05"]
    assert len(smtp_server.messages) == 1


def test_staff_can_requeue_a_failed_dispatch(hotel, debtor, django_capture_on_commit_callbacks):
    InvoiceFactory(debtor=debtor)
    dispatch = plan_one(hotel)
    Dispatch.objects.filter(pk=dispatch.pk).update(
        status=DispatchStatus.FAILED, last_error="550 boom"
    )
    with django_capture_on_commit_callbacks(execute=True):
        dispatch_requeue(dispatch_id=dispatch.pk)
    dispatch.refresh_from_db()
    assert dispatch.status == DispatchStatus.SENT
    assert dispatch.events.filter(kind=EventKind.REQUEUED).exists()
    assert len(mail.outbox) == 1
    with pytest.raises(DispatchStateError):
        dispatch_requeue(dispatch_id=dispatch.pk)


def test_dry_run_writes_and_sends_nothing(hotel, debtor):
    InvoiceFactory(debtor=debtor, number="F-9")
    InvoiceFactory(
        debtor__establishment=hotel, debtor__contact_email="", debtor__account_number="X"
    )
    report = run_command("--date", D.isoformat(), "--dry-run")
    assert report["dry_run"] is True
    assert [(s["debtor"], s["invoices"]) for s in report["sent"]] == [("C001", ["F-9"])]
    assert [(s["debtor"], s["reason"]) for s in report["skipped"]] == [("X", "missing_email")]
    assert Dispatch.objects.count() == 0
    assert Run.objects.count() == 0
    assert DispatchEvent.objects.count() == 0
    assert mail.outbox == []


def test_command_text_summary_names_skipped_accounts(hotel, debtor):
    InvoiceFactory(debtor=debtor)
    InvoiceFactory(
        debtor__establishment=hotel,
        debtor__contact_email="nope",
        debtor__account_number="BAD1",
        debtor__name="Voyages Sans Adresse",
    )
    EstablishmentFactory(code="off", auto_send_pending_invoices=False)
    out = StringIO()
    with translation.override("en"):
        call_command("send_pending_invoices", "--date", D.isoformat(), stdout=out)
    text = out.getvalue()
    assert "sent: 1 letter(s)" in text
    assert "invalid_email (Invalid contact email): 1" in text
    assert "BAD1" in text and "Voyages Sans Adresse" in text
    assert "automatic sending is off" in text
    assert "Total: 1 sent, 0 failed, 1 skipped." in text


def test_command_rejects_bad_arguments(hotel):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("send_pending_invoices", "--date", "04/12/2026")
    with pytest.raises(CommandError, match="nowhere"):
        call_command("send_pending_invoices", "--establishment", "nowhere")


def _planning_queries(debtor_count: int) -> int:
    establishment = EstablishmentFactory(code=f"bulk-{debtor_count}")
    for n in range(debtor_count):
        debtor = DebtorAccountFactory(establishment=establishment)
        InvoiceFactory(debtor=debtor, gross=Decimal("120.00"))
        if n % 3 == 0:
            InvoiceFactory(debtor=debtor, gross=Decimal("80.00"), due_date=D)
        if n % 5 == 0:
            debtor.contact_email = ""
            debtor.save()
    with CaptureQueriesContext(connection) as queries:
        outcome = run_execute(
            establishment=establishment,
            business_date=D,
            trigger=RunTrigger.COMMAND,
            enqueue=False,
        )
    assert len(outcome.created_ids) + outcome.run.skipped_count == debtor_count
    return len(queries)


def test_planning_query_count_does_not_grow_with_debtors():
    assert _planning_queries(10) == _planning_queries(200)


def test_scheduled_run_processes_each_establishment_once_per_business_date(
    django_capture_on_commit_callbacks,
):
    due = EstablishmentFactory(code="due", time_zone="Europe/Paris", send_hour=2)
    early = EstablishmentFactory(code="early", time_zone="America/Cancun", send_hour=2)
    off = EstablishmentFactory(code="off", auto_send_pending_invoices=False)
    for establishment in (due, early, off):
        InvoiceFactory(debtor__establishment=establishment)
    # 06:30 UTC is 07:30 in Paris (due) and 01:30 in Cancún (before its send hour).
    now = dt.datetime(2026, 12, 5, 6, 30, tzinfo=dt.UTC)
    with django_capture_on_commit_callbacks(execute=True):
        first = due_establishments_process(now=now)
    with django_capture_on_commit_callbacks(execute=True):
        second = due_establishments_process(now=now + dt.timedelta(minutes=20))
    assert first["planned"] == [("due", "2026-12-05")]
    assert second["planned"] == []
    assert list(Run.objects.values_list("establishment__code", "business_date")) == [
        ("due", dt.date(2026, 12, 5))
    ]
    assert len(mail.outbox) == 1
    # At 07:30 UTC, 02:30 in Cancún, its turn comes.
    with django_capture_on_commit_callbacks(execute=True):
        third = due_establishments_process(now=now + dt.timedelta(hours=1))
    assert third["planned"] == [("early", "2026-12-05")]


def test_periodic_task_is_installed_in_the_database_scheduler():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="dispatch.run_due_establishments")
    assert task.enabled
    assert (task.crontab.minute, task.crontab.hour) == ("5", "*")
    call_command("setup_periodic_tasks", stdout=StringIO())
    assert PeriodicTask.objects.filter(task="dispatch.run_due_establishments").count() == 1


class _LockedWhileSendingBackend(locmem.EmailBackend):
    """The real in-memory backend, which lets a test act at the moment of sending."""

    on_send = None

    def send_messages(self, messages):
        sent = super().send_messages(messages)
        hook = type(self).on_send
        if hook:
            hook()
        return sent


@pytest.mark.django_db(transaction=True)
def test_outcome_is_recorded_even_if_the_database_refuses_at_first(settings, caplog):
    """The message left; a lock timeout while recording it is retried, not lost."""
    settings.EMAIL_BACKEND = f"{__name__}._LockedWhileSendingBackend"
    hotel = EstablishmentFactory(code="locky")
    InvoiceFactory(debtor__establishment=hotel)
    dispatch = plan_one(hotel)
    locked, release = threading.Event(), threading.Event()

    def hold_row_lock():
        from django.db import transaction

        try:
            with transaction.atomic():
                Dispatch.objects.select_for_update().get(pk=dispatch.pk)
                locked.set()
                release.wait(timeout=10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_row_lock)

    def on_send():
        holder.start()
        assert locked.wait(timeout=10)
        # Let go after the first attempt to record the outcome has timed out.
        threading.Timer(0.6, release.set).start()

    _LockedWhileSendingBackend.on_send = on_send
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
    try:
        result = dispatch_send(dispatch_id=dispatch.pk)
    finally:
        _LockedWhileSendingBackend.on_send = None
        release.set()
        holder.join(timeout=10)
    assert result.dispatch.status == DispatchStatus.SENT
    assert "recording the outcome failed, retrying" in caplog.text
    assert len(mail.outbox) == 1


def _hourly_job_queries(count: int) -> int:
    now = dt.datetime(2026, 12, 5, 6, 30, tzinfo=dt.UTC)
    for n in range(count):
        establishment = EstablishmentFactory(code=f"done-{count}-{n}", time_zone="Europe/Paris")
        Run.objects.create(
            establishment=establishment,
            business_date=dt.date(2026, 12, 5),
            trigger=RunTrigger.SCHEDULE,
            finished_at=now,
        )
    with CaptureQueriesContext(connection) as queries:
        result = due_establishments_process(now=now)
    assert result["planned"] == []
    return len(queries)


def test_hourly_job_query_count_does_not_grow_with_establishments():
    assert _hourly_job_queries(2) == _hourly_job_queries(8)
