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
    establishment_id: int | None = None

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
    *, business_dates: dict[int, dt.date], debtor_ids: list[int] | None = None
) -> Iterator[dict]:
    """Pending invoices of each establishment id issued up to its business date, one query."""
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
    scope = Q()
    for establishment_id, business_date in business_dates.items():
        scope |= Q(establishment_id=establishment_id, issue_date__lte=business_date)
    invoices = Invoice.objects.pending().filter(scope)
    if debtor_ids is not None:
        invoices = invoices.filter(debtor_id__in=debtor_ids)
    return (
        invoices.annotate(ever_sent=Exists(sent_items), last_letter_date=Subquery(last_letter))
        .order_by("establishment_id", "debtor_id", "due_date", "number")
        .values(
            "id",
            "establishment_id",
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


def _decided_debtors(
    *,
    establishments: dict[int, Establishment],
    business_dates: dict[int, dt.date],
    debtor_ids: list[int] | None = None,
) -> list[DebtorDecision]:
    """Every debtor with pending invoices, grouped from the rows and put through `_decide`.

    Shared by the nightly planner (one establishment) and the admin's count of accounts to
    fix (many establishments at once), so both apply the very same rules.
    """
    decisions: dict[int, DebtorDecision] = {}
    first_rows: dict[int, dict] = {}
    for row in _pending_rows(business_dates=business_dates, debtor_ids=debtor_ids):
        establishment = establishments[row["establishment_id"]]
        business_date = business_dates[establishment.pk]
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
                establishment_id=establishment.pk,
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
    for debtor_id, decision in decisions.items():
        _decide(
            decision,
            row=first_rows[debtor_id],
            establishment=establishments[decision.establishment_id],
            business_date=business_dates[decision.establishment_id],
        )
    return list(decisions.values())


def establishment_plan_letters(
    *,
    establishment: Establishment,
    business_date: dt.date,
    debtor_ids: list[int] | None = None,
) -> EstablishmentPlan:
    """Decide, for every debtor with pending invoices, whether it gets a letter tonight.

    `debtor_ids` restricts the plan to those debtors ("send now" for one account).
    """
    decided = _decided_debtors(
        establishments={establishment.pk: establishment},
        business_dates={establishment.pk: business_date},
        debtor_ids=debtor_ids,
    )
    letters: list[DebtorDecision] = []
    skips: list[DebtorDecision] = []
    for decision in decided:
        (skips if decision.reason else letters).append(decision)

    submitters = _plan_submissions(decided, establishment=establishment)
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
    *,
    now: dt.datetime,
    establishment_id: int | None = None,
    debtor_ids: list[int] | None = None,
    limit: int | None = None,
) -> list[int]:
    """Dispatches waiting to be sent: planned, or a retry whose time has come."""
    qs = Dispatch.objects.filter(
        Q(status=DispatchStatus.PENDING) | Q(status=DispatchStatus.RETRY, next_attempt_at__lte=now)
    )
    if establishment_id is not None:
        qs = qs.filter(establishment_id=establishment_id)
    if debtor_ids is not None:
        qs = qs.filter(debtor_id__in=debtor_ids)
    ids = qs.order_by("id").values_list("id", flat=True)
    return list(ids[:limit] if limit else ids)


# --- Accountants' pages: configuration check and tonight's preview (issue 4) -----------------

from django.db.models import Case, Count, IntegerField, Prefetch, Sum, Value, When  # noqa: E402

from .models import (  # noqa: E402
    CONFIGURATION_REASONS,
    FULL_RUN_TRIGGERS,
    DispatchEvent,
    Integration,
    LifecycleEvent,
    Run,
    SkippedDebtor,
)

# Reasons shown first on the check, in this order, as "to fix"; the cadence ones follow.
_REASON_ORDER = [choice.value for choice in SkipReason]


def skip_reason_rank(reason: str) -> int:
    """Sort key of skip reasons: configuration ones first, each group in SkipReason order."""
    return _reason_rank(reason)


def _reason_rank(reason: str) -> int:
    position = _REASON_ORDER.index(reason) if reason in _REASON_ORDER else len(_REASON_ORDER)
    return position + (0 if reason in CONFIGURATION_REASONS else len(_REASON_ORDER) + 1)


@dataclass(frozen=True)
class NextRun:
    """When the nightly job next processes an establishment, and for which business date."""

    business_date: dt.date
    # True: the hourly job takes it at its next pass (send hour passed, date not done yet).
    due_now: bool
    # The local moment from which it is due (the send hour of `business_date`).
    due_at: dt.datetime


def establishment_next_runs(
    *, establishments: Iterable[Establishment], now: dt.datetime
) -> dict[int, NextRun]:
    """The business date the next nightly run of each establishment will plan.

    Before the local send hour it is today's local date (due at the send hour); after
    it, today's date until a full run of that date has finished (due now), then
    tomorrow's. One query whatever the number of establishments.
    """
    establishments = list(establishments)
    today = {e.pk: now.astimezone(e.tzinfo).date() for e in establishments}
    done = set()
    if establishments:
        done = set(
            Run.objects.filter(
                establishment_id__in=list(today),
                business_date__gte=min(today.values()),
                trigger__in=FULL_RUN_TRIGGERS,
                finished_at__isnull=False,
            ).values_list("establishment_id", "business_date")
        )
    result: dict[int, NextRun] = {}
    for establishment in establishments:
        local_today = today[establishment.pk]
        send_hour_passed = (
            establishment_business_date(establishment=establishment, now=now) is not None
        )
        if not send_hour_passed:
            business_date, due_now = local_today, False
        elif (establishment.pk, local_today) not in done:
            business_date, due_now = local_today, True
        else:
            business_date, due_now = local_today + dt.timedelta(days=1), False
        due_at = dt.datetime.combine(
            business_date, dt.time(establishment.send_hour), tzinfo=establishment.tzinfo
        )
        result[establishment.pk] = NextRun(
            business_date=business_date, due_now=due_now, due_at=due_at
        )
    return result


@dataclass
class SkipGroup:
    """The debtors one reason keeps out of the next run, with what is at stake."""

    reason: str
    configuration: bool
    debtors: list[DebtorDecision]

    @property
    def label(self) -> str:
        return SkipReason(self.reason).label if self.reason in _REASON_ORDER else self.reason

    @property
    def count(self) -> int:
        return len(self.debtors)

    @property
    def invoice_count(self) -> int:
        return sum(len(d.invoices) for d in self.debtors)

    @property
    def amount(self) -> Decimal:
        return sum((d.total_due for d in self.debtors), ZERO)


@dataclass
class EstablishmentCheck:
    """One establishment on the configuration check (and its preview)."""

    establishment: Establishment
    auto_send: bool
    next_run: NextRun
    # Planned by the same planner as the nightly run; None when auto-send is off.
    plan: EstablishmentPlan | None
    groups: list[SkipGroup] = field(default_factory=list)
    # Establishments with auto-send off: what stays pending with nothing sent.
    pending_invoice_count: int = 0
    pending_total: Decimal = ZERO

    @property
    def currency(self) -> str:
        return self.establishment.currency

    @property
    def configuration_groups(self) -> list[SkipGroup]:
        return [g for g in self.groups if g.configuration]

    @property
    def cadence_groups(self) -> list[SkipGroup]:
        return [g for g in self.groups if not g.configuration]

    @property
    def to_fix_count(self) -> int:
        return sum(g.count for g in self.configuration_groups)

    @property
    def to_fix_amount(self) -> Decimal:
        return sum((g.amount for g in self.configuration_groups), ZERO)

    @property
    def other_skip_count(self) -> int:
        return sum(g.count for g in self.cadence_groups)


def _skip_groups(skips: list[DebtorDecision]) -> list[SkipGroup]:
    by_reason: dict[str, list[DebtorDecision]] = {}
    for decision in skips:
        by_reason.setdefault(decision.reason, []).append(decision)
    return [
        SkipGroup(
            reason=reason,
            configuration=reason in CONFIGURATION_REASONS,
            debtors=sorted(by_reason[reason], key=lambda d: (-d.total_due, d.name.lower())),
        )
        for reason in sorted(by_reason, key=_reason_rank)
    ]


def configuration_check(
    *, establishments: Iterable[Establishment], now: dt.datetime
) -> list[EstablishmentCheck]:
    """What the next nightly run of each establishment would skip, grouped by reason.

    Establishments with auto-send on are planned by `establishment_plan_letters`, the
    nightly run's own planner, for the business date of their next run (see
    `establishment_next_runs`), so the check cannot disagree with the run. Nothing is
    written. Those with auto-send off are not planned (nothing is sent for them) and
    carry their pending total instead. Queries: a fixed few per establishment, none per
    debtor.
    """
    establishments = list(establishments)
    next_runs = establishment_next_runs(establishments=establishments, now=now)
    off_ids = [e.pk for e in establishments if not e.auto_send_pending_invoices]
    pending_off: dict[int, dict] = {}
    if off_ids:
        pending_off = {
            row["establishment_id"]: row
            for row in Invoice.objects.pending()
            .filter(establishment_id__in=off_ids)
            .order_by()
            .values("establishment_id")
            .annotate(count=Count("id"), total=Sum("amount_due"))
        }
    checks: list[EstablishmentCheck] = []
    for establishment in establishments:
        next_run = next_runs[establishment.pk]
        if not establishment.auto_send_pending_invoices:
            row = pending_off.get(establishment.pk, {})
            checks.append(
                EstablishmentCheck(
                    establishment=establishment,
                    auto_send=False,
                    next_run=next_run,
                    plan=None,
                    pending_invoice_count=row.get("count", 0),
                    pending_total=cents(row.get("total") or ZERO),
                )
            )
            continue
        plan = establishment_plan_letters(
            establishment=establishment, business_date=next_run.business_date
        )
        checks.append(
            EstablishmentCheck(
                establishment=establishment,
                auto_send=True,
                next_run=next_run,
                plan=plan,
                groups=_skip_groups(plan.skips),
            )
        )
    return checks


def configuration_to_fix_counts(
    *, establishments: Iterable[Establishment], now: dt.datetime
) -> dict[int, int | None]:
    """Debtors the next run skips for a configuration reason, per establishment id.

    The number `configuration_check` shows as "accounts to fix", for a list of many
    establishments (the admin's changelist): the pending invoices of all of them are read
    in one query and each debtor goes through `_decided_debtors`, the nightly planner's own
    rules, for its establishment's next business date. Configuration reasons are settled
    there (the planner's later outbox lookups only turn letters into submissions or
    "already sent"), so the count is the planner's; two queries whatever the number of
    establishments and debtors. None for an establishment whose auto-send is off.
    """
    establishments = list(establishments)
    next_runs = establishment_next_runs(establishments=establishments, now=now)
    counts: dict[int, int | None] = {
        e.pk: (0 if e.auto_send_pending_invoices else None) for e in establishments
    }
    active = {e.pk: e for e in establishments if e.auto_send_pending_invoices}
    if not active:
        return counts
    decided = _decided_debtors(
        establishments=active,
        business_dates={pk: next_runs[pk].business_date for pk in active},
    )
    for decision in decided:
        if decision.reason in CONFIGURATION_REASONS:
            counts[decision.establishment_id] += 1
    return counts


@dataclass(frozen=True)
class PlannedSubmission:
    """One e-invoice the next run would submit."""

    decision: DebtorDecision
    invoice: PendingInvoice
    integration_name: str


@dataclass
class EstablishmentPreview:
    """The dry run of an establishment's next run: what it would send, and what it skips."""

    check: EstablishmentCheck
    submissions: list[PlannedSubmission] = field(default_factory=list)

    @property
    def establishment(self) -> Establishment:
        return self.check.establishment

    @property
    def letters(self) -> list[DebtorDecision]:
        return self.check.plan.letters if self.check.plan else []

    @property
    def waiting(self) -> list[DebtorDecision]:
        """Letters of this business date already in the outbox, not sent yet."""
        return self.check.plan.existing if self.check.plan else []

    @property
    def waiting_rows(self) -> list[tuple[DebtorDecision, str]]:
        return [(d, DispatchStatus(d.existing_status).label) for d in self.waiting]

    @property
    def letters_total(self) -> Decimal:
        return sum((d.total_due for d in self.letters), ZERO)

    @property
    def submissions_total(self) -> Decimal:
        return sum((s.invoice.amount_due for s in self.submissions), ZERO)

    @property
    def skip_count(self) -> int:
        return sum(g.count for g in self.check.groups)


def run_preview(
    *, establishments: Iterable[Establishment], now: dt.datetime
) -> list[EstablishmentPreview]:
    """What the next run of each establishment would send: a dry run, nothing written."""
    previews = [
        EstablishmentPreview(check=check)
        for check in configuration_check(establishments=establishments, now=now)
    ]
    integration_ids = {
        d.integration_id
        for p in previews
        if p.check.plan
        for d in p.check.plan.submitters
        if d.integration_id
    }
    names = dict(
        Integration.objects.filter(pk__in=integration_ids).values_list("pk", "name")
        if integration_ids
        else []
    )
    for preview in previews:
        if preview.check.plan is None:
            continue
        preview.submissions = [
            PlannedSubmission(
                decision=decision,
                invoice=invoice,
                integration_name=names.get(decision.integration_id, decision.provider),
            )
            for decision in sorted(preview.check.plan.submitters, key=lambda d: d.name.lower())
            for invoice in decision.submissions
        ]
    return previews


# Failures first on a run's page: what needs someone's attention, then what is in flight.
_STATUS_RANK = {
    DispatchStatus.FAILED: 0,
    DispatchStatus.REJECTED: 1,
    DispatchStatus.RETRY: 2,
    DispatchStatus.SENDING: 3,
    DispatchStatus.PENDING: 4,
    DispatchStatus.SENT: 5,
    DispatchStatus.SUPERSEDED: 6,
}


def run_list(*, establishments, establishment_id: int | None = None):
    """Runs of the given establishments, newest first, with live dispatch counts.

    `live_sent`, `live_failed` (failed or rejected by the platform) and `live_waiting`
    are counted from the dispatches in the same query as the page: a letter sent by a
    retry after the run was recorded shows as sent.
    """
    runs = Run.objects.filter(establishment__in=establishments)
    if establishment_id is not None:
        runs = runs.filter(establishment_id=establishment_id)
    return (
        runs.select_related("establishment")
        .annotate(
            live_sent=Count("dispatches", filter=Q(dispatches__status=DispatchStatus.SENT)),
            live_failed=Count(
                "dispatches",
                filter=Q(dispatches__status__in=[DispatchStatus.FAILED, DispatchStatus.REJECTED]),
            ),
            live_waiting=Count(
                "dispatches",
                filter=Q(
                    dispatches__status__in=[
                        DispatchStatus.PENDING,
                        DispatchStatus.SENDING,
                        DispatchStatus.RETRY,
                    ]
                ),
            ),
        )
        .order_by("-started_at", "-id")
    )


def run_get(*, establishments, run_id: int) -> Run:
    """One run of the given establishments, with the live counts of `run_list`.

    Run.DoesNotExist for a run of any other establishment.
    """
    return run_list(establishments=establishments).get(pk=run_id)


def run_dispatches(*, run: Run):
    """A run's dispatches, failures first, with their invoices and events prefetched."""
    rank = Case(
        *[When(status=status, then=Value(value)) for status, value in _STATUS_RANK.items()],
        default=Value(len(_STATUS_RANK)),
        output_field=IntegerField(),
    )
    return (
        Dispatch.objects.filter(run=run)
        .select_related("debtor", "integration")
        .prefetch_related(
            Prefetch("items", queryset=DispatchItem.objects.select_related("invoice")),
            Prefetch("events", queryset=DispatchEvent.objects.order_by("at", "id")),
            Prefetch("lifecycle", queryset=LifecycleEvent.objects.order_by("received_at", "id")),
        )
        .annotate(status_rank=rank)
        .order_by("status_rank", "debtor__name", "id")
    )


def run_skips(*, run: Run):
    """A run's skipped debtors: configuration reasons first, then larger amounts."""
    rank = Case(
        *[When(reason=reason, then=Value(_reason_rank(reason))) for reason in _REASON_ORDER],
        default=Value(2 * len(_REASON_ORDER) + 2),
        output_field=IntegerField(),
    )
    return (
        SkippedDebtor.objects.filter(run=run)
        .select_related("debtor")
        .annotate(reason_rank=rank)
        .order_by("reason_rank", "-amount_due", "debtor__name", "id")
    )
