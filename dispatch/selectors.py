"""Reads of the nightly run: which establishments are due, and what each debtor gets.

The planner is set-based: one query reads every pending invoice of an establishment with
what the decision needs (amount due, whether it was ever in a sent letter, the debtor's
last letter), and existing dispatches are looked up by key in fixed-size batches, so the
number of queries does not grow with the number of debtors.
"""

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils import timezone

from debtors.models import SendMode
from establishments.models import Establishment
from invoicing.models import ZERO, Invoice, cents

from .models import Channel, Dispatch, DispatchItem, DispatchStatus, SkipReason

# Keys per `IN (...)` lookup: small enough for any database's parameter limit (SQLite
# allows 999), large enough that a few thousand debtors cost a handful of queries.
BATCH_SIZE = 500
# Rows fetched per round trip while streaming pending invoices.
STREAM_CHUNK_SIZE = 2000


def letter_idempotency_key(*, debtor_id: int, business_date: dt.date) -> str:
    """At most one letter per debtor per business date: the unique key of the outbox."""
    return f"letter:{debtor_id}:{business_date.isoformat()}"


def einvoice_idempotency_key(*, integration_id: int, invoice_id: int) -> str:
    """Each invoice is submitted once per integration, whatever the number of runs."""
    return f"einvoice:{integration_id}:{invoice_id}"


def establishment_business_date(
    *, establishment: Establishment, now: dt.datetime | None = None
) -> dt.date | None:
    """The establishment's local date when its send hour has passed, else None."""
    now = now or timezone.now()
    local = now.astimezone(establishment.tzinfo)
    if local.hour < establishment.send_hour:
        return None
    return local.date()


@dataclass(frozen=True)
class PendingInvoice:
    invoice_id: int
    number: str
    issue_date: dt.date
    due_date: dt.date
    gross_total: Decimal
    amount_due: Decimal
    days_overdue: int
    ever_sent: bool


@dataclass
class DebtorDecision:
    """What the run does for one debtor: send a letter (reason None) or skip, and why."""

    debtor_id: int
    account_number: str
    name: str
    recipient: str
    language: str
    invoices: list[PendingInvoice] = field(default_factory=list)
    last_letter_date: dt.date | None = None
    reason: str | None = None
    # "new_invoices" or "reminder" when a letter is due.
    cause: str = ""
    # The outbox row of this debtor for the business date, when one exists already.
    existing_dispatch_id: int | None = None
    existing_status: str = ""
    # E-invoicing debtors: their integration, and the invoices to submit tonight.
    send_mode: str = ""
    integration_id: int | None = None
    provider: str = ""
    einvoicing_id: str = ""
    submissions: list[PendingInvoice] = field(default_factory=list)

    @property
    def channel_label(self) -> str:
        """`email`, or the provider of the e-invoicing integration."""
        return self.provider if self.send_mode == SendMode.EINVOICING else "email"

    @property
    def total_due(self) -> Decimal:
        return sum((i.amount_due for i in self.invoices), ZERO)

    @property
    def invoice_numbers(self) -> list[str]:
        return [i.number for i in self.invoices]


@dataclass
class EstablishmentPlan:
    establishment: Establishment
    business_date: dt.date
    letters: list[DebtorDecision]
    skips: list[DebtorDecision]
    # Letters due whose dispatch for this date exists and is not sent yet (to send or report).
    existing: list[DebtorDecision]
    # E-invoicing debtors with invoices never submitted to their integration.
    submitters: list[DebtorDecision] = field(default_factory=list)

    @property
    def submission_count(self) -> int:
        return sum(len(d.submissions) for d in self.submitters)


def _is_valid_email(value: str) -> bool:
    try:
        validate_email(value)
    except ValidationError:
        return False
    return True


def _pending_rows(
    *, establishment: Establishment, business_date: dt.date, debtor_ids: list[int] | None = None
) -> Iterator[dict]:
    sent_items = DispatchItem.objects.filter(
        invoice=OuterRef("pk"), dispatch__status=DispatchStatus.SENT
    )
    last_letter = (
        Dispatch.objects.filter(
            debtor=OuterRef("debtor"), channel=Channel.EMAIL, status=DispatchStatus.SENT
        )
        .order_by("-business_date")
        .values("business_date")[:1]
    )
    invoices = Invoice.objects.pending().filter(
        establishment=establishment, issue_date__lte=business_date
    )
    if debtor_ids is not None:
        invoices = invoices.filter(debtor_id__in=debtor_ids)
    return (
        invoices.annotate(ever_sent=Exists(sent_items), last_letter_date=Subquery(last_letter))
        .order_by("debtor_id", "due_date", "number")
        .values(
            "id",
            "number",
            "issue_date",
            "due_date",
            "gross_total",
            "amount_due",
            "ever_sent",
            "last_letter_date",
            "debtor_id",
            "debtor__account_number",
            "debtor__name",
            "debtor__contact_email",
            "debtor__send_mode",
            "debtor__language",
            "debtor__paused_until",
            "debtor__einvoicing_id",
            "debtor__integration_id",
            "debtor__integration__active",
            "debtor__integration__establishment_id",
            "debtor__integration__provider",
        )
        .iterator(chunk_size=STREAM_CHUNK_SIZE)
    )


def _reminder_due(decision: DebtorDecision, *, establishment, business_date) -> bool:
    """Some invoice is overdue and the last letter is at least the interval old."""
    has_overdue = any(i.days_overdue > 0 for i in decision.invoices)
    last = decision.last_letter_date
    interval = establishment.reminder_interval_days
    return has_overdue and (last is None or (business_date - last).days >= interval)


def _email_problem(decision: DebtorDecision) -> str | None:
    if not decision.recipient:
        return SkipReason.MISSING_EMAIL
    if not _is_valid_email(decision.recipient):
        return SkipReason.INVALID_EMAIL
    return None


def _decide(
    decision: DebtorDecision,
    *,
    row: dict,
    establishment: Establishment,
    business_date: dt.date,
) -> None:
    """Apply the rules of selection (DESIGN.md) in a fixed order; the first that fails wins.

    Configuration problems come before amounts and cadence, so the accountants' check
    shows what to fix even on small balances. E-invoicing debtors get each invoice
    submitted once, and the remittance letter as an overdue reminder at the same cadence
    as email debtors.
    """
    paused_until = row["debtor__paused_until"]
    send_mode = row["debtor__send_mode"]
    if paused_until is not None and paused_until >= business_date:
        decision.reason = SkipReason.PAUSED
    elif send_mode == SendMode.EINVOICING:
        if not row["debtor__integration__active"] or (
            row["debtor__integration__establishment_id"] != establishment.pk
        ):
            decision.reason = SkipReason.INTEGRATION_INACTIVE
        elif not decision.einvoicing_id:
            decision.reason = SkipReason.MISSING_EINVOICING_ID
        elif _reminder_due(decision, establishment=establishment, business_date=business_date):
            if problem := _email_problem(decision):
                decision.reason = problem
            elif decision.total_due < establishment.minimum_amount:
                decision.reason = SkipReason.BELOW_MINIMUM
            else:
                decision.cause = "reminder"
        else:
            decision.reason = SkipReason.INTERVAL_NOT_REACHED
    elif send_mode != SendMode.EMAIL:
        decision.reason = SkipReason.NO_SEND_MODE
    elif problem := _email_problem(decision):
        decision.reason = problem
    elif decision.total_due < establishment.minimum_amount:
        decision.reason = SkipReason.BELOW_MINIMUM
    else:
        if any(not i.ever_sent for i in decision.invoices):
            decision.cause = "new_invoices"
        elif _reminder_due(decision, establishment=establishment, business_date=business_date):
            decision.cause = "reminder"
        else:
            decision.reason = SkipReason.INTERVAL_NOT_REACHED


def _batched(items: list, size: int = BATCH_SIZE) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def establishment_plan_letters(
    *,
    establishment: Establishment,
    business_date: dt.date,
    debtor_ids: list[int] | None = None,
) -> EstablishmentPlan:
    """Decide, for every debtor with pending invoices, whether it gets a letter tonight.

    `debtor_ids` restricts the plan to those debtors ("send now" for one account).
    """
    decisions: dict[int, DebtorDecision] = {}
    first_rows: dict[int, dict] = {}
    for row in _pending_rows(
        establishment=establishment, business_date=business_date, debtor_ids=debtor_ids
    ):
        debtor_id = row["debtor_id"]
        decision = decisions.get(debtor_id)
        if decision is None:
            decision = DebtorDecision(
                debtor_id=debtor_id,
                account_number=row["debtor__account_number"],
                name=row["debtor__name"],
                recipient=row["debtor__contact_email"].strip(),
                language=row["debtor__language"] or establishment.language,
                last_letter_date=row["last_letter_date"],
                send_mode=row["debtor__send_mode"],
                integration_id=row["debtor__integration_id"],
                provider=row["debtor__integration__provider"] or "",
                einvoicing_id=(row["debtor__einvoicing_id"] or "").strip(),
            )
            decisions[debtor_id] = decision
            first_rows[debtor_id] = row
        decision.invoices.append(
            PendingInvoice(
                invoice_id=row["id"],
                number=row["number"],
                issue_date=row["issue_date"],
                due_date=row["due_date"],
                gross_total=row["gross_total"],
                amount_due=cents(row["amount_due"]),
                days_overdue=max(0, (business_date - row["due_date"]).days),
                ever_sent=row["ever_sent"],
            )
        )

    letters: list[DebtorDecision] = []
    skips: list[DebtorDecision] = []
    for debtor_id, decision in decisions.items():
        _decide(
            decision,
            row=first_rows[debtor_id],
            establishment=establishment,
            business_date=business_date,
        )
        (skips if decision.reason else letters).append(decision)

    submitters = _plan_submissions(decisions.values(), establishment=establishment)
    served = {d.debtor_id for d in submitters}
    # A debtor whose invoices go out as e-invoices tonight is served, even without a
    # reminder; a reminder it cannot get for a configuration problem stays visible.
    skips = [
        d
        for d in skips
        if d.debtor_id not in served
        or d.reason in (SkipReason.MISSING_EMAIL, SkipReason.INVALID_EMAIL)
    ]

    # A letter already in the outbox for this date is never planned twice.
    by_key = {
        letter_idempotency_key(debtor_id=d.debtor_id, business_date=business_date): d
        for d in letters
    }
    for keys in _batched(list(by_key)):
        for key, dispatch_id, status in Dispatch.objects.filter(
            idempotency_key__in=keys
        ).values_list("idempotency_key", "id", "status"):
            by_key[key].existing_dispatch_id = dispatch_id
            by_key[key].existing_status = status

    existing: list[DebtorDecision] = []
    new_letters: list[DebtorDecision] = []
    for decision in letters:
        if decision.existing_dispatch_id is None:
            new_letters.append(decision)
        elif decision.existing_status == DispatchStatus.SENT:
            decision.reason = SkipReason.ALREADY_SENT_TODAY
            skips.append(decision)
        else:
            existing.append(decision)
    return EstablishmentPlan(
        establishment=establishment,
        business_date=business_date,
        letters=new_letters,
        skips=skips,
        existing=existing,
        submitters=submitters,
    )


def _plan_submissions(decisions, *, establishment: Establishment) -> list[DebtorDecision]:
    """E-invoicing debtors in good standing: their invoices never submitted to the integration."""
    eligible = [
        d
        for d in decisions
        if d.send_mode == SendMode.EINVOICING
        and d.reason
        not in (
            SkipReason.PAUSED,
            SkipReason.INTEGRATION_INACTIVE,
            SkipReason.MISSING_EINVOICING_ID,
        )
    ]
    by_key = {
        einvoice_idempotency_key(integration_id=d.integration_id, invoice_id=i.invoice_id): (d, i)
        for d in eligible
        for i in d.invoices
    }
    submitted: set[str] = set()
    for keys in _batched(list(by_key)):
        submitted.update(
            Dispatch.objects.filter(idempotency_key__in=keys).values_list(
                "idempotency_key", flat=True
            )
        )
    for key, (decision, invoice) in by_key.items():
        if key not in submitted:
            decision.submissions.append(invoice)
    return [d for d in eligible if d.submissions]


def dispatch_ids_due(
    *, now: dt.datetime, establishment_id: int | None = None, limit: int | None = None
) -> list[int]:
    """Dispatches waiting to be sent: planned, or a retry whose time has come."""
    qs = Dispatch.objects.filter(
        Q(status=DispatchStatus.PENDING) | Q(status=DispatchStatus.RETRY, next_attempt_at__lte=now)
    )
    if establishment_id is not None:
        qs = qs.filter(establishment_id=establishment_id)
    ids = qs.order_by("id").values_list("id", flat=True)
    return list(ids[:limit] if limit else ids)
