from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from invoicing.models import MONEY, ZERO


class Channel(models.TextChoices):
    EMAIL = "email", _("Email letter")


class DispatchStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SENDING = "sending", _("Sending")
    RETRY = "retry", _("Retry planned")
    SENT = "sent", _("Sent")
    FAILED = "failed", _("Failed")
    SUPERSEDED = "superseded", _("Superseded")


# States a worker may claim a dispatch from.
SENDABLE_STATUSES = (DispatchStatus.PENDING, DispatchStatus.RETRY)


class SkipReason(models.TextChoices):
    """Stable codes: scripts and the accountants' pages rely on them."""

    NO_SEND_MODE = "no_send_mode", _("No send mode chosen")
    MISSING_EMAIL = "missing_email", _("No contact email")
    INVALID_EMAIL = "invalid_email", _("Invalid contact email")
    INTEGRATION_INACTIVE = "integration_inactive", _("E-invoicing integration inactive")
    MISSING_EINVOICING_ID = "missing_einvoicing_id", _("No e-invoicing recipient id")
    PAUSED = "paused", _("Reminders paused")
    BELOW_MINIMUM = "below_minimum", _("Total due below the minimum")
    INTERVAL_NOT_REACHED = "interval_not_reached", _("Reminder interval not reached")
    # Informational: the debtor's letter for this business date already went out; invoices
    # that appeared since then go in the next one.
    ALREADY_SENT_TODAY = "already_sent_today", _("Letter already sent on this business date")


# Reasons that mean "fix this account"; the others follow from amounts and the cadence.
CONFIGURATION_REASONS = frozenset(
    {
        SkipReason.NO_SEND_MODE,
        SkipReason.MISSING_EMAIL,
        SkipReason.INVALID_EMAIL,
        SkipReason.INTEGRATION_INACTIVE,
        SkipReason.MISSING_EINVOICING_ID,
        SkipReason.PAUSED,
    }
)


class RunTrigger(models.TextChoices):
    SCHEDULE = "schedule", _("Schedule")
    COMMAND = "command", _("Command")


class Run(models.Model):
    """One processing of one establishment for one business date."""

    establishment = models.ForeignKey(
        "establishments.Establishment",
        on_delete=models.PROTECT,
        related_name="runs",
        verbose_name=_("establishment"),
    )
    business_date = models.DateField(_("business date"))
    trigger = models.CharField(_("trigger"), max_length=10, choices=RunTrigger.choices)
    started_at = models.DateTimeField(_("started at"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    planned_count = models.PositiveIntegerField(_("planned"), default=0)
    sent_count = models.PositiveIntegerField(_("sent"), default=0)
    failed_count = models.PositiveIntegerField(_("failed"), default=0)
    skipped_count = models.PositiveIntegerField(_("skipped"), default=0)
    skipped_by_reason = models.JSONField(_("skipped by reason"), default=dict, blank=True)

    class Meta:
        verbose_name = _("run")
        verbose_name_plural = _("runs")
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["establishment", "business_date"])]

    def __str__(self) -> str:
        return f"{self.establishment.code} {self.business_date}"


class Dispatch(models.Model):
    """The outbox: one planned message, written in the same transaction as the decision."""

    establishment = models.ForeignKey(
        "establishments.Establishment",
        on_delete=models.PROTECT,
        related_name="dispatches",
        verbose_name=_("establishment"),
    )
    debtor = models.ForeignKey(
        "debtors.DebtorAccount",
        on_delete=models.PROTECT,
        related_name="dispatches",
        verbose_name=_("debtor"),
    )
    run = models.ForeignKey(
        Run,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="dispatches",
        verbose_name=_("run"),
    )
    channel = models.CharField(_("channel"), max_length=20, choices=Channel.choices)
    business_date = models.DateField(_("business date"))
    # letter:<debtor id>:<business date>: at most one letter per debtor per business date.
    idempotency_key = models.CharField(_("idempotency key"), max_length=120, unique=True)
    status = models.CharField(
        _("status"), max_length=12, choices=DispatchStatus.choices, default=DispatchStatus.PENDING
    )
    recipient = models.CharField(_("recipient"), max_length=254)
    language = models.CharField(_("language"), max_length=2)
    currency = models.CharField(_("currency"), max_length=3)
    total_due = models.DecimalField(_("total due"), **MONEY)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    message_id = models.CharField(_("Message-ID"), max_length=255, blank=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("dispatch")
        verbose_name_plural = _("dispatches")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(total_due__gt=0), name="dispatch_total_gt_0"),
            models.CheckConstraint(
                condition=~Q(status="sent") | Q(sent_at__isnull=False),
                name="dispatch_sent_has_sent_at",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["debtor", "status", "business_date"]),
        ]

    def __str__(self) -> str:
        return self.idempotency_key


class DispatchItem(models.Model):
    """An invoice covered by a dispatch, with what was due on it when it was planned."""

    dispatch = models.ForeignKey(
        Dispatch, on_delete=models.CASCADE, related_name="items", verbose_name=_("dispatch")
    )
    invoice = models.ForeignKey(
        "invoicing.Invoice",
        on_delete=models.PROTECT,
        related_name="dispatch_items",
        verbose_name=_("invoice"),
    )
    amount_due = models.DecimalField(_("amount due"), **MONEY)
    days_overdue = models.PositiveIntegerField(_("days overdue"), default=0)

    class Meta:
        verbose_name = _("dispatch item")
        verbose_name_plural = _("dispatch items")
        ordering = ["dispatch", "invoice__due_date", "invoice__number"]
        constraints = [
            models.UniqueConstraint(fields=["dispatch", "invoice"], name="item_unique_invoice"),
            models.CheckConstraint(condition=Q(amount_due__gt=ZERO), name="item_due_gt_0"),
        ]

    def __str__(self) -> str:
        return f"{self.invoice_id}: {self.amount_due}"


class EventKind(models.TextChoices):
    PLANNED = "planned", _("Planned")
    CLAIMED = "claimed", _("Claimed by a worker")
    SENT = "sent", _("Sent")
    RETRY = "retry", _("Transient failure, retry planned")
    FAILED = "failed", _("Failed")
    INTERRUPTED = "interrupted", _("Interrupted mid-send")
    SUPERSEDED = "superseded", _("Superseded by a newer letter")
    REQUEUED = "requeued", _("Requeued by staff")


class DispatchEvent(models.Model):
    """Append-only log of what happened to a dispatch."""

    dispatch = models.ForeignKey(
        Dispatch, on_delete=models.CASCADE, related_name="events", verbose_name=_("dispatch")
    )
    at = models.DateTimeField(_("at"), auto_now_add=True)
    kind = models.CharField(_("kind"), max_length=20, choices=EventKind.choices)
    message = models.TextField(_("message"), blank=True)

    class Meta:
        verbose_name = _("dispatch event")
        verbose_name_plural = _("dispatch events")
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.at:%Y-%m-%d %H:%M:%S}"


class SkippedDebtor(models.Model):
    """A debtor with pending invoices that a run did not serve, and why."""

    run = models.ForeignKey(
        Run, on_delete=models.CASCADE, related_name="skips", verbose_name=_("run")
    )
    debtor = models.ForeignKey(
        "debtors.DebtorAccount",
        on_delete=models.CASCADE,
        related_name="skips",
        verbose_name=_("debtor"),
    )
    reason = models.CharField(_("reason"), max_length=40, choices=SkipReason.choices)
    invoice_count = models.PositiveIntegerField(_("pending invoices"))
    amount_due = models.DecimalField(_("amount due"), **MONEY)

    class Meta:
        verbose_name = _("skipped debtor")
        verbose_name_plural = _("skipped debtors")
        ordering = ["run", "reason", "debtor__name"]
        constraints = [
            models.UniqueConstraint(fields=["run", "debtor"], name="skip_unique_debtor_per_run")
        ]

    def __str__(self) -> str:
        return f"{self.debtor_id}: {self.reason}"
