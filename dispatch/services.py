"""Writes of the nightly run: the outbox, sending one dispatch, settling what went wrong.

Guarantees (DESIGN.md):
- never twice: a dispatch is claimed under a row lock before anything is sent, and the
  outbox key `letter:<debtor>:<business date>` is unique in the database;
- nothing lost: every planned letter is a row written in the planning transaction, tasks
  are enqueued on commit with ids only, and the hourly sweep re-enqueues whatever waits;
- tell, don't hide: skips are rows with a reason, failures keep their error and events.
"""

import datetime as dt
import logging
import smtplib
import socket
import time
import uuid
from dataclasses import dataclass
from email.utils import make_msgid

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from debtors.models import DebtorAccount
from establishments.models import Establishment

from .connectors.base import (
    ConnectorError,
    OutcomeUnknown,
    RejectedError,
    SubmitReceipt,
    TransientError,
)
from .models import (
    FULL_RUN_TRIGGERS,
    SENDABLE_STATUSES,
    Channel,
    Dispatch,
    DispatchEvent,
    DispatchItem,
    DispatchStatus,
    EventKind,
    LifecycleCode,
    LifecycleEvent,
    Run,
    RunTrigger,
    SkippedDebtor,
)
from .selectors import (
    BATCH_SIZE,
    EstablishmentPlan,
    dispatch_ids_due,
    einvoice_idempotency_key,
    establishment_plan_letters,
    letter_idempotency_key,
)

logger = logging.getLogger(__name__)


class DispatchStateError(Exception):
    """The dispatch is not in a state that allows the requested change."""


class TransientSendError(Exception):
    """A failure worth retrying (temporary SMTP answer, timeout, connection lost)."""


@dataclass
class RunOutcome:
    run: Run
    plan: EstablishmentPlan
    created_ids: list[int]
    # Dispatches of the establishment waiting to be sent after this run (new ones included).
    due_ids: list[int]


def _billing(name: str):
    return settings.BILLING[name]


def stale_sending_after() -> dt.timedelta:
    """A claim older than the task's hard time limit means the worker died mid-send."""
    return dt.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)


def _enqueue_sends(dispatch_ids: list[int]) -> None:
    from .tasks import send_dispatch_task

    for dispatch_id in dispatch_ids:
        send_dispatch_task.delay(dispatch_id)


def run_execute(
    *,
    establishment: Establishment,
    business_date: dt.date,
    trigger: str,
    enqueue: bool,
    now: dt.datetime | None = None,
    debtor_ids: list[int] | None = None,
) -> RunOutcome | None:
    """Plan one establishment's business date and write the outbox in one transaction.

    Scheduled runs process a business date once; a command run processes it again, which
    is safe: existing letters are never planned twice. Returns None when a scheduled run
    finds the date already processed.
    """
    now = now or timezone.now()
    with transaction.atomic():
        # Serializes planners of one establishment (several beats or workers).
        establishment = Establishment.objects.select_for_update().get(pk=establishment.pk)
        if (
            trigger == RunTrigger.SCHEDULE
            and Run.objects.filter(
                establishment=establishment,
                business_date=business_date,
                trigger__in=FULL_RUN_TRIGGERS,
                finished_at__isnull=False,
            ).exists()
        ):
            return None
        plan = establishment_plan_letters(
            establishment=establishment, business_date=business_date, debtor_ids=debtor_ids
        )
        run = Run.objects.create(
            establishment=establishment, business_date=business_date, trigger=trigger
        )

        dispatches = [
            Dispatch(
                establishment=establishment,
                debtor_id=decision.debtor_id,
                run=run,
                channel=Channel.EMAIL,
                business_date=business_date,
                idempotency_key=letter_idempotency_key(
                    debtor_id=decision.debtor_id, business_date=business_date
                ),
                recipient=decision.recipient,
                language=decision.language,
                currency=establishment.currency,
                total_due=decision.total_due,
            )
            for decision in plan.letters
        ]
        Dispatch.objects.bulk_create(dispatches, batch_size=BATCH_SIZE)
        items = [
            DispatchItem(
                dispatch=dispatch,
                invoice_id=invoice.invoice_id,
                amount_due=invoice.amount_due,
                days_overdue=invoice.days_overdue,
            )
            for dispatch, decision in zip(dispatches, plan.letters, strict=True)
            for invoice in decision.invoices
        ]
        submissions = [
            Dispatch(
                establishment=establishment,
                debtor_id=decision.debtor_id,
                run=run,
                channel=Channel.EINVOICE,
                integration_id=decision.integration_id,
                business_date=business_date,
                idempotency_key=einvoice_idempotency_key(
                    integration_id=decision.integration_id, invoice_id=invoice.invoice_id
                ),
                recipient=decision.einvoicing_id,
                language=decision.language,
                currency=establishment.currency,
                total_due=invoice.amount_due,
                tracking_id=uuid.uuid4().hex,
            )
            for decision in plan.submitters
            for invoice in decision.submissions
        ]
        Dispatch.objects.bulk_create(submissions, batch_size=BATCH_SIZE)
        submitted_invoices = [
            (decision, invoice) for decision in plan.submitters for invoice in decision.submissions
        ]
        items += [
            DispatchItem(
                dispatch=dispatch,
                invoice_id=invoice.invoice_id,
                amount_due=invoice.amount_due,
                days_overdue=invoice.days_overdue,
            )
            for dispatch, (_decision, invoice) in zip(submissions, submitted_invoices, strict=True)
        ]
        DispatchItem.objects.bulk_create(items, batch_size=BATCH_SIZE)

        events = [
            DispatchEvent(
                dispatch=dispatch,
                kind=EventKind.PLANNED,
                message=f"{decision.cause}: {len(decision.invoices)} invoice(s)",
            )
            for dispatch, decision in zip(dispatches, plan.letters, strict=True)
        ]
        events += [
            DispatchEvent(
                dispatch=dispatch,
                kind=EventKind.PLANNED,
                message=f"e-invoice {invoice.number} to {decision.provider}",
            )
            for dispatch, (decision, invoice) in zip(submissions, submitted_invoices, strict=True)
        ]
        events += _supersede_older(
            debtor_ids=[d.debtor_id for d in plan.letters], business_date=business_date
        )
        DispatchEvent.objects.bulk_create(events, batch_size=BATCH_SIZE)

        SkippedDebtor.objects.bulk_create(
            [
                SkippedDebtor(
                    run=run,
                    debtor_id=decision.debtor_id,
                    reason=decision.reason,
                    invoice_count=len(decision.invoices),
                    amount_due=decision.total_due,
                )
                for decision in plan.skips
            ],
            batch_size=BATCH_SIZE,
        )
        by_reason: dict[str, int] = {}
        for decision in plan.skips:
            by_reason[decision.reason] = by_reason.get(decision.reason, 0) + 1
        run.planned_count = len(dispatches) + len(submissions)
        run.skipped_count = len(plan.skips)
        run.skipped_by_reason = dict(sorted(by_reason.items()))
        run.finished_at = timezone.now()
        run.save(
            update_fields=["planned_count", "skipped_count", "skipped_by_reason", "finished_at"]
        )
        due_ids = dispatch_ids_due(
            now=now, establishment_id=establishment.pk, debtor_ids=debtor_ids
        )
        if enqueue:
            transaction.on_commit(lambda: _enqueue_sends(due_ids))
    created_ids = [d.pk for d in [*dispatches, *submissions]]
    return RunOutcome(run=run, plan=plan, created_ids=created_ids, due_ids=due_ids)


def _supersede_older(*, debtor_ids: list[int], business_date: dt.date) -> list[DispatchEvent]:
    """Unsent letters of earlier dates give way to tonight's, which lists every invoice."""
    events: list[DispatchEvent] = []
    for start in range(0, len(debtor_ids), BATCH_SIZE):
        batch = debtor_ids[start : start + BATCH_SIZE]
        older = list(
            Dispatch.objects.filter(
                debtor_id__in=batch,
                channel=Channel.EMAIL,
                status__in=SENDABLE_STATUSES,
                business_date__lt=business_date,
            ).values_list("id", flat=True)
        )
        if not older:
            continue
        Dispatch.objects.filter(id__in=older, status__in=SENDABLE_STATUSES).update(
            status=DispatchStatus.SUPERSEDED, next_attempt_at=None, updated_at=timezone.now()
        )
        events += [
            DispatchEvent(
                dispatch_id=dispatch_id,
                kind=EventKind.SUPERSEDED,
                message=f"replaced by the letter of {business_date.isoformat()}",
            )
            for dispatch_id in older
        ]
    return events


def _is_transient(exc: BaseException) -> bool:
    """SMTP 4xx, timeouts and lost connections are retried; SMTP 5xx and the rest are not."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _message in exc.recipients.values()]
        return bool(codes) and all(400 <= code < 500 for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500 or exc.smtp_code < 0
    if isinstance(exc, TransientSendError | TransientError | smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, ConnectorError):
        return False
    return isinstance(exc, socket.timeout | TimeoutError | ConnectionError | OSError)


def retry_delay(attempts: int) -> dt.timedelta:
    """Bounded exponential backoff: base, 2x base, 4x base... capped."""
    seconds = _billing("RETRY_BASE_SECONDS") * 2 ** max(0, attempts - 1)
    return dt.timedelta(seconds=min(seconds, _billing("RETRY_MAX_SECONDS")))


def _event(dispatch: Dispatch, kind: str, message: str = "") -> None:
    DispatchEvent.objects.create(dispatch=dispatch, kind=kind, message=message[:2000])


def _claim(*, dispatch_id: int, now: dt.datetime) -> Dispatch | None:
    with transaction.atomic():
        dispatch = Dispatch.objects.select_for_update().get(pk=dispatch_id)
        if dispatch.status not in SENDABLE_STATUSES:
            return None
        # A task can arrive a little before its countdown ends; anything earlier is a
        # stray duplicate and waits for its turn.
        early = dt.timedelta(seconds=5)
        if (
            dispatch.status == DispatchStatus.RETRY
            and dispatch.next_attempt_at
            and dispatch.next_attempt_at > now + early
        ):
            return None
        dispatch.status = DispatchStatus.SENDING
        dispatch.attempts += 1
        dispatch.claimed_at = now
        dispatch.next_attempt_at = None
        if dispatch.channel == Channel.EMAIL and not dispatch.message_id:
            dispatch.message_id = make_msgid(
                idstring=f"letter{dispatch.pk}", domain=_billing("MESSAGE_ID_DOMAIN")
            )
        dispatch.save(
            update_fields=[
                "status",
                "attempts",
                "claimed_at",
                "next_attempt_at",
                "message_id",
                "updated_at",
            ]
        )
        _event(dispatch, EventKind.CLAIMED, f"attempt {dispatch.attempts}")
    return dispatch


def _deliver(dispatch: Dispatch) -> SubmitReceipt | None:
    if dispatch.channel == Channel.EINVOICE:
        from .einvoicing import einvoice_deliver

        return einvoice_deliver(dispatch=dispatch)

    from .documents.letter import letter_build_email, letter_data_from_dispatch, letter_render_pdf

    data = letter_data_from_dispatch(dispatch=dispatch)
    pdf = letter_render_pdf(data=data)
    message = letter_build_email(
        data=data, pdf=pdf, recipient=dispatch.recipient, message_id=dispatch.message_id
    )
    message.send(fail_silently=False)
    return None


# Once the message has left, its outcome must be recorded: a database hiccup at that
# moment (a lock, a dropped connection) is retried in place this many times.
SETTLE_ATTEMPTS = 5
SETTLE_FIRST_PAUSE_SECONDS = 0.2


def _settle(
    *,
    dispatch_id: int,
    claimed_at: dt.datetime,
    error: BaseException | None,
    receipt: SubmitReceipt | None = None,
) -> Dispatch:
    for attempt in range(1, SETTLE_ATTEMPTS + 1):
        try:
            return _settle_once(
                dispatch_id=dispatch_id, claimed_at=claimed_at, error=error, receipt=receipt
            )
        except (OperationalError, InterfaceError):
            if attempt == SETTLE_ATTEMPTS:
                # Left in `sending`: the interrupted-send sweep settles it and says why.
                raise
            logger.warning("dispatch %s: recording the outcome failed, retrying", dispatch_id)
            connection.close()
            time.sleep(SETTLE_FIRST_PAUSE_SECONDS * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _settle_once(
    *,
    dispatch_id: int,
    claimed_at: dt.datetime,
    error: BaseException | None,
    receipt: SubmitReceipt | None,
) -> Dispatch:
    from .documents.einvoice import DocumentInvalid

    with transaction.atomic():
        dispatch = Dispatch.objects.select_for_update().get(pk=dispatch_id)
        if dispatch.status != DispatchStatus.SENDING or dispatch.claimed_at != claimed_at:
            # Settled by someone else meanwhile (the interrupted-send sweep): keep theirs.
            return dispatch
        now = timezone.now()
        fields = ["status", "sent_at", "last_error", "next_attempt_at", "updated_at"]
        if error is None:
            dispatch.status = DispatchStatus.SENT
            dispatch.sent_at = now
            dispatch.last_error = ""
            if receipt is not None:
                dispatch.platform_ref = receipt.platform_ref[:255]
                dispatch.outcome_unknown = False
                fields += ["platform_ref", "outcome_unknown", "lifecycle_code", "document_sha256"]
                code = receipt.code or LifecycleCode.DEPOSITED
                dispatch.lifecycle_code = code
                LifecycleEvent.objects.create(
                    dispatch=dispatch,
                    code=code,
                    source=LifecycleEvent.Source.SUBMISSION,
                    occurred_at=now,
                    message=receipt.message[:2000],
                )
                _event(
                    dispatch, EventKind.SENT, f"to {dispatch.integration} as {receipt.platform_ref}"
                )
            else:
                _event(dispatch, EventKind.SENT, f"to {dispatch.recipient}")
        else:
            detail = f"{type(error).__name__}: {error}"
            dispatch.last_error = detail[:2000]
            if isinstance(error, RejectedError):
                dispatch.status = DispatchStatus.REJECTED
                _event(dispatch, EventKind.REJECTED, detail)
            elif isinstance(error, DocumentInvalid):
                dispatch.status = DispatchStatus.FAILED
                _event(dispatch, EventKind.INVALID, detail)
            elif _is_transient(error) and dispatch.attempts < _billing("MAX_SEND_ATTEMPTS"):
                dispatch.status = DispatchStatus.RETRY
                delay = retry_delay(dispatch.attempts)
                retry_after = getattr(error, "retry_after", None)
                if retry_after:
                    delay = max(delay, dt.timedelta(seconds=retry_after))
                dispatch.next_attempt_at = now + delay
                if isinstance(error, OutcomeUnknown):
                    dispatch.outcome_unknown = True
                    fields.append("outcome_unknown")
                _event(
                    dispatch,
                    EventKind.RETRY,
                    f"{detail}; next attempt at {dispatch.next_attempt_at.isoformat()}",
                )
            else:
                dispatch.status = DispatchStatus.FAILED
                _event(dispatch, EventKind.FAILED, detail)
        dispatch.save(update_fields=fields)
    if dispatch.run_id:
        run_refresh_counts(run_id=dispatch.run_id)
    return dispatch


@dataclass
class SendResult:
    dispatch: Dispatch
    # False when the dispatch was not in a state to be sent (already sent, claimed, early).
    attempted: bool


def dispatch_send(*, dispatch_id: int, now: dt.datetime | None = None) -> SendResult:
    """Send one dispatch once. Safe to call again: only a pending or due retry is claimed."""
    now = now or timezone.now()
    dispatch = _claim(dispatch_id=dispatch_id, now=now)
    if dispatch is None:
        return SendResult(dispatch=Dispatch.objects.get(pk=dispatch_id), attempted=False)
    error: BaseException | None = None
    receipt: SubmitReceipt | None = None
    try:
        receipt = _deliver(dispatch)
    except Exception as exc:  # noqa: BLE001  every failure is recorded on the dispatch
        logger.warning("dispatch %s failed: %s", dispatch_id, type(exc).__name__)
        error = exc
    return SendResult(
        dispatch=_settle(
            dispatch_id=dispatch_id, claimed_at=dispatch.claimed_at, error=error, receipt=receipt
        ),
        attempted=True,
    )


def run_refresh_counts(*, run_id: int) -> None:
    counts = Dispatch.objects.filter(run_id=run_id).aggregate(
        sent=Count("id", filter=Q(status=DispatchStatus.SENT)),
        failed=Count("id", filter=Q(status=DispatchStatus.FAILED)),
    )
    Run.objects.filter(pk=run_id).update(sent_count=counts["sent"], failed_count=counts["failed"])


def dispatch_settle_interrupted(*, now: dt.datetime | None = None) -> list[int]:
    """Settle dispatches whose worker died mid-send.

    A letter: whether it left is unknown and an SMTP server cannot be asked, so it is not
    sent again automatically (that would risk a second letter). It is marked failed with
    the reason, shown to staff, who may requeue it; its invoices, never in a sent letter,
    go in the debtor's next letter. An e-invoice: the platform can be asked, so it is
    retried with its outcome marked unknown, and the retry checks before submitting.
    """
    now = now or timezone.now()
    settled: list[int] = []
    with transaction.atomic():
        stuck = list(
            Dispatch.objects.select_for_update(skip_locked=True).filter(
                status=DispatchStatus.SENDING, claimed_at__lt=now - stale_sending_after()
            )
        )
        letter_message = (
            "Interrupted while sending: delivery unknown. Not resent automatically so that "
            "the debtor never gets it twice; its invoices go in the next letter."
        )
        einvoice_message = (
            "Interrupted while submitting: the platform is asked whether it has the "
            "document before anything is submitted again."
        )
        for dispatch in stuck:
            if dispatch.channel == Channel.EINVOICE:
                dispatch.status = DispatchStatus.RETRY
                dispatch.next_attempt_at = now
                dispatch.outcome_unknown = True
                dispatch.last_error = einvoice_message
            else:
                dispatch.status = DispatchStatus.FAILED
                dispatch.last_error = letter_message
            dispatch.save(
                update_fields=[
                    "status",
                    "next_attempt_at",
                    "outcome_unknown",
                    "last_error",
                    "updated_at",
                ]
            )
            _event(dispatch, EventKind.INTERRUPTED, dispatch.last_error)
            settled.append(dispatch.pk)
    for run_id in {d.run_id for d in stuck if d.run_id}:
        run_refresh_counts(run_id=run_id)
    return settled


def dispatch_requeue(*, dispatch_id: int) -> Dispatch:
    """Staff decision to try a failed (or waiting) dispatch again now."""
    with transaction.atomic():
        dispatch = Dispatch.objects.select_for_update().get(pk=dispatch_id)
        if dispatch.status not in (DispatchStatus.FAILED, DispatchStatus.RETRY):
            raise DispatchStateError(
                f"Dispatch {dispatch.pk} is {dispatch.status}: only failed or retrying "
                "dispatches can be requeued."
            )
        newer = Dispatch.objects.filter(
            debtor_id=dispatch.debtor_id,
            channel=dispatch.channel,
            business_date__gt=dispatch.business_date,
        ).exclude(status__in=[DispatchStatus.FAILED, DispatchStatus.SUPERSEDED])
        if newer.exists():
            raise DispatchStateError(
                f"Dispatch {dispatch.pk} has a newer letter for the same debtor; "
                "requeueing it would send outdated amounts."
            )
        dispatch.status = DispatchStatus.RETRY
        dispatch.next_attempt_at = timezone.now()
        dispatch.save(update_fields=["status", "next_attempt_at", "updated_at"])
        _event(dispatch, EventKind.REQUEUED)
        transaction.on_commit(lambda: _enqueue_sends([dispatch.pk]))
    return dispatch


def due_establishments_process(*, now: dt.datetime | None = None) -> dict:
    """The hourly job: settle interrupted sends, fan out due establishments, sweep the outbox."""
    from .selectors import establishment_business_date
    from .tasks import plan_establishment_task

    now = now or timezone.now()
    interrupted = dispatch_settle_interrupted(now=now)
    due = {}
    for establishment in Establishment.objects.filter(auto_send_pending_invoices=True):
        business_date = establishment_business_date(establishment=establishment, now=now)
        if business_date is not None:
            due[establishment] = business_date
    # Which of them already had their night, in one query whatever their number.
    done = set(
        Run.objects.filter(
            establishment__in=list(due),
            business_date__in=set(due.values()),
            trigger__in=FULL_RUN_TRIGGERS,
            finished_at__isnull=False,
        ).values_list("establishment_id", "business_date")
    )
    planned: list[tuple[str, str]] = []
    for establishment, business_date in due.items():
        if (establishment.pk, business_date) in done:
            continue
        planned.append((establishment.code, business_date.isoformat()))
        plan_establishment_task.delay(establishment.pk, business_date.isoformat())
    # Whatever waits in the outbox (a task lost with a broker, a retry whose message
    # expired) is enqueued again; a duplicate is harmless, the claim lets one through.
    swept = dispatch_ids_due(now=now)
    _enqueue_sends(swept)
    return {"interrupted": interrupted, "planned": planned, "swept": len(swept)}


def debtor_send_now(*, debtor: DebtorAccount, now: dt.datetime | None = None) -> RunOutcome:
    """An accountant's "send now": tonight's decision for one debtor, taken right away.

    It uses the same planner and keys as the nightly run, so a second click on the same
    business date sends nothing new, and the nightly run does not send it again either.
    The business date is the establishment's local date, whatever its send hour.
    """
    now = now or timezone.now()
    establishment = debtor.establishment
    business_date = now.astimezone(establishment.tzinfo).date()
    return run_execute(
        establishment=establishment,
        business_date=business_date,
        trigger=RunTrigger.MANUAL,
        enqueue=True,
        now=now,
        debtor_ids=[debtor.pk],
    )
