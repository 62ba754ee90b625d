import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import (
    Case,
    CharField,
    Count,
    DateField,
    DecimalField,
    F,
    IntegerField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Trim
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from debtors.models import DebtorAccount, SendMode
from establishments.models import Establishment


def integration_list_for_send_mode(*, establishment: Establishment | None = None) -> QuerySet:
    """Active integrations a debtor may be sent through (all establishments' when None)."""
    from dispatch.models import Integration

    integrations = Integration.objects.filter(active=True).select_related("establishment")
    if establishment is not None:
        integrations = integrations.filter(establishment=establishment)
    return integrations.order_by("establishment__name", "name", "pk")


def debtor_einvoice_status_subquery() -> Subquery:
    """The lifecycle code of the debtor's latest e-invoice with one, for `annotate()`.

    One subquery in the list's SQL instead of a query per row.
    """
    from dispatch.models import Channel, Dispatch

    latest = (
        Dispatch.objects.filter(debtor=OuterRef("pk"), channel=Channel.EINVOICE)
        .exclude(lifecycle_code="")
        .order_by("-created_at", "-id")
        .values("lifecycle_code")[:1]
    )
    return Subquery(latest)


# --- the accountants' pages --------------------------------------------------------------

# Close to Django's EmailValidator, in SQL so that the list can filter and count on it. The
# run applies the exact Python check (dispatch.selectors._is_valid_email); an address that
# passes this and fails that is rare and is still reported by the run as `invalid_email`.
EMAIL_SQL_REGEX = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


def debtor_local_date(*, establishment: Establishment, now: dt.datetime | None = None) -> dt.date:
    """The establishment's local date: the business date of "send now" and the preview."""
    return (now or timezone.now()).astimezone(establishment.tzinfo).date()


def _pending_invoices(**filters) -> QuerySet:
    from invoicing.models import Invoice

    return Invoice.objects.pending().filter(**filters).order_by()


def debtor_misconfig_case(*, on: dt.date) -> Case:
    """The configuration reason the run would skip the debtor for on `on`, "" when none.

    Mirrors the configuration checks of dispatch.selectors._decide, in the same order (the
    first that fails wins). Amounts and cadence (below_minimum, interval_not_reached) are
    not configuration and are left to the run.
    """
    from dispatch.models import SkipReason

    einvoicing = Q(send_mode=SendMode.EINVOICING)
    return Case(
        When(paused_until__gte=on, then=Value(SkipReason.PAUSED.value)),
        When(
            einvoicing
            & (
                Q(integration__isnull=True)
                | Q(integration__active=False)
                | ~Q(integration__establishment_id=F("establishment_id"))
            ),
            then=Value(SkipReason.INTEGRATION_INACTIVE.value),
        ),
        When(
            einvoicing & Q(_einvoicing_id_trimmed=""),
            then=Value(SkipReason.MISSING_EINVOICING_ID.value),
        ),
        When(einvoicing, then=Value("")),
        When(~Q(send_mode=SendMode.EMAIL), then=Value(SkipReason.NO_SEND_MODE.value)),
        When(_email_trimmed="", then=Value(SkipReason.MISSING_EMAIL.value)),
        When(
            ~Q(_email_trimmed__regex=EMAIL_SQL_REGEX),
            then=Value(SkipReason.INVALID_EMAIL.value),
        ),
        default=Value(""),
        output_field=CharField(),
    )


def debtor_list_annotated(
    *, establishments: QuerySet | Iterable[Establishment], on: dt.date | None = None
) -> QuerySet:
    """Debtors of `establishments` with what the list shows and filters on, all in SQL.

    Annotations: `total_due` (Decimal, 0 when nothing is pending), `pending_count`,
    `oldest_due_date` (None when nothing is pending), `misconfig_reason` (a SkipReason code
    or ""), `einvoice_status` (latest lifecycle code or None). Correlated subqueries keep it
    one query whatever the number of rows, and let the database sort and filter on them.
    `on` is the date the pause is judged on (today by default).
    """
    from invoicing.models import MONEY, ZERO

    on = on or timezone.localdate()
    money = DecimalField(**MONEY)
    pending = _pending_invoices(debtor=OuterRef("pk")).values("debtor")
    total_due = pending.annotate(total=Sum("amount_due")).values("total")
    pending_count = pending.annotate(n=Count("pk")).values("n")
    oldest = pending.annotate(oldest=Min("due_date")).values("oldest")
    return (
        DebtorAccount.objects.filter(establishment__in=establishments)
        .select_related("establishment", "integration")
        .annotate(
            total_due=Coalesce(
                Subquery(total_due, output_field=money), Value(ZERO), output_field=money
            ),
            pending_count=Coalesce(Subquery(pending_count, output_field=IntegerField()), Value(0)),
            oldest_due_date=Subquery(oldest, output_field=DateField()),
            einvoice_status=debtor_einvoice_status_subquery(),
            _email_trimmed=Trim("contact_email"),
            _einvoicing_id_trimmed=Trim("einvoicing_id"),
        )
        .annotate(misconfig_reason=debtor_misconfig_case(on=on))
    )


@dataclass(frozen=True)
class AgingBucket:
    key: str
    label: str
    amount: Decimal
    count: int


@dataclass(frozen=True)
class Aging:
    on: dt.date
    buckets: tuple[AgingBucket, ...]

    @property
    def total(self) -> Decimal:
        return sum((b.amount for b in self.buckets), Decimal("0.00"))


# (key, label, lowest days overdue, highest days overdue or None)
AGING_BUCKETS = (
    ("current", _("Not yet due"), None, 0),
    ("1_30", _("1-30 days"), 1, 30),
    ("31_60", _("31-60 days"), 31, 60),
    ("61_90", _("61-90 days"), 61, 90),
    ("over_90", _("Over 90 days"), 91, None),
)


def debtor_aging(*, debtor: DebtorAccount, on: dt.date) -> Aging:
    """Amount due of the debtor's pending invoices by days overdue on `on`."""
    from invoicing.models import cents

    amounts = {key: Decimal("0.00") for key, *_ in AGING_BUCKETS}
    counts = dict.fromkeys(amounts, 0)
    for due_date, amount_due in _pending_invoices(debtor=debtor).values_list(
        "due_date", "amount_due"
    ):
        days = (on - due_date).days
        for key, _label, low, high in AGING_BUCKETS:
            if (low is None or days >= low) and (high is None or days <= high):
                amounts[key] += cents(amount_due)
                counts[key] += 1
                break
    return Aging(
        on=on,
        buckets=tuple(
            AgingBucket(key=key, label=label, amount=amounts[key], count=counts[key])
            for key, label, *_ in AGING_BUCKETS
        ),
    )


@dataclass(frozen=True)
class PendingLine:
    invoice: Any
    amount_paid: Decimal
    amount_due: Decimal
    days_overdue: int

    @property
    def is_overdue(self) -> bool:
        return self.days_overdue > 0


def debtor_pending_invoices(*, debtor: DebtorAccount, on: dt.date) -> list[PendingLine]:
    """The debtor's pending invoices, oldest due first, with what is due on `on`."""
    from invoicing.models import cents

    return [
        PendingLine(
            invoice=invoice,
            amount_paid=cents(invoice.amount_paid),
            amount_due=cents(invoice.amount_due),
            days_overdue=max(0, (on - invoice.due_date).days),
        )
        for invoice in _pending_invoices(debtor=debtor).order_by("due_date", "number")
    ]


def debtor_dispatch_history(*, debtor: DebtorAccount, limit: int = 50) -> list:
    """The debtor's latest letters and e-invoice submissions, with their invoices, events
    and lifecycle statuses (a fixed number of queries)."""
    from dispatch.models import Dispatch

    return list(
        Dispatch.objects.filter(debtor=debtor)
        .select_related("integration")
        .prefetch_related("items__invoice", "events", "lifecycle")
        .order_by("-created_at", "-id")[:limit]
    )


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class HistoryEntry:
    at: dt.datetime
    user: Any
    subject: str
    kind: str  # "+" created, "~" changed, "-" deleted
    changes: tuple[FieldChange, ...]


# Fields of an invoice whose changes belong on the debtor's page: the rest is the import's.
INVOICE_HISTORY_FIELDS = ("status", "disputed", "dispute_reason")


def _display(record, field_name: str, value: Any) -> Any:
    field = record.instance_type._meta.get_field(field_name)
    if value in (None, ""):
        return "—"
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if field.choices:
        return dict(field.flatchoices).get(value, value)
    if field.is_relation:
        # History keeps the id; the name reads better and the few changes make it cheap.
        related = field.related_model._default_manager.filter(pk=value).first()
        return str(related) if related is not None else f"#{value}"
    return value


def _entries(
    records: list, *, subject, included_fields=None, with_created: bool = True
) -> list[HistoryEntry]:
    """Diff each historical record against the previous one of the same object."""
    entries: list[HistoryEntry] = []
    previous: dict[int, Any] = {}
    for record in records:
        before = previous.get(record.id)
        previous[record.id] = record
        if before is None or record.history_type != "~":
            if record.history_type == "~" or (record.history_type == "+" and not with_created):
                # A change whose predecessor is older than what was read has nothing to be
                # compared with.
                continue
            entries.append(
                HistoryEntry(
                    at=record.history_date,
                    user=record.history_user,
                    subject=subject(record),
                    kind=record.history_type,
                    changes=(),
                )
            )
            continue
        delta = record.diff_against(before, included_fields=included_fields)
        changes = tuple(
            FieldChange(
                field=str(record.instance_type._meta.get_field(c.field).verbose_name),
                old=_display(record, c.field, c.old),
                new=_display(record, c.field, c.new),
            )
            for c in delta.changes
        )
        if changes:
            entries.append(
                HistoryEntry(
                    at=record.history_date,
                    user=record.history_user,
                    subject=subject(record),
                    kind="~",
                    changes=changes,
                )
            )
    return entries


def debtor_change_history(*, debtor: DebtorAccount, limit: int = 100) -> list[HistoryEntry]:
    """Who changed what on the account and on its invoices' status and dispute, newest first.

    `limit` bounds the records read of each model; the oldest change of a window has no
    predecessor to compare with and is left out.
    """
    from invoicing.models import Invoice

    debtor_records = list(
        debtor.history.select_related("history_user").order_by("-history_date", "-history_id")[
            :limit
        ]
    )
    invoice_records = list(
        Invoice.history.filter(debtor_id=debtor.pk)
        .select_related("history_user")
        .order_by("-history_date", "-history_id")[:limit]
    )
    entries = _entries(
        debtor_records[::-1], subject=lambda r: str(DebtorAccount._meta.verbose_name).capitalize()
    )
    entries += _entries(
        invoice_records[::-1],
        subject=lambda r: _("Invoice %(number)s") % {"number": r.number},
        included_fields=list(INVOICE_HISTORY_FIELDS),
        # Invoices arrive by the import: their creation is not a change to the account.
        with_created=False,
    )
    return sorted(entries, key=lambda e: e.at, reverse=True)
