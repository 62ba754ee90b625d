from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from invoicing.models import MONEY, ZERO


class Channel(models.TextChoices):
    EMAIL = "email", _("Email letter")
    EINVOICE = "einvoice", _("E-invoice")


class Provider(models.TextChoices):
    BAVEL = "bavel", "Bavel"
    AFNOR = "afnor", _("AFNOR platform (XP Z12-013)")
    SANDBOX = "sandbox", _("Sandbox (local folder)")


class DocumentFormat(models.TextChoices):
    FACTURX_EN16931 = "facturx_en16931", _("Factur-X EN 16931 (PDF/A-3 with CII)")
    UBL = "ubl21", _("UBL 2.1 invoice")
    CII = "cii", _("CII D16B (UN/CEFACT) alone")


class LifecycleCode(models.TextChoices):
    """CDAR lifecycle statuses of the French e-invoicing reform (XP Z12-013)."""

    DEPOSITED = "200", _("200 Deposited")
    ISSUED = "201", _("201 Issued")
    RECEIVED = "202", _("202 Received")
    MADE_AVAILABLE = "203", _("203 Made available")
    TAKEN_OVER = "204", _("204 Taken over")
    APPROVED = "205", _("205 Approved")
    PARTIALLY_APPROVED = "206", _("206 Partially approved")
    DISPUTED = "207", _("207 Disputed")
    SUSPENDED = "208", _("208 Suspended")
    COMPLETED = "209", _("209 Completed")
    REFUSED = "210", _("210 Refused")
    PAYMENT_SENT = "211", _("211 Payment sent")
    CASHED = "212", _("212 Cashed")
    REJECTED = "213", _("213 Rejected")


class Integration(models.Model):
    """An establishment's account on an e-invoicing platform: a send mode for its debtors.

    Secrets (credentials, webhook secret) are stored encrypted with Fernet keys from the
    environment (`dispatch.crypto`) and never rendered back.
    """

    establishment = models.ForeignKey(
        "establishments.Establishment",
        on_delete=models.PROTECT,
        related_name="integrations",
        verbose_name=_("establishment"),
    )
    provider = models.CharField(_("provider"), max_length=20, choices=Provider.choices)
    name = models.CharField(
        _("display name"), max_length=80, help_text=_("Shown as the send mode, e.g. Bavel.")
    )
    active = models.BooleanField(_("active"), default=False)
    endpoint = models.CharField(
        _("endpoint"),
        max_length=500,
        blank=True,
        help_text=_("Base URL of the platform (a folder for the sandbox)."),
    )
    document_format = models.CharField(
        _("document format"),
        max_length=20,
        choices=DocumentFormat.choices,
        default=DocumentFormat.FACTURX_EN16931,
    )
    options = models.JSONField(
        _("options"),
        default=dict,
        blank=True,
        help_text=_("Non-secret settings of the provider, e.g. the Bavel hotel code."),
    )
    credentials_encrypted = models.TextField(_("credentials (encrypted)"), blank=True)
    webhook_secret_encrypted = models.TextField(_("webhook secret (encrypted)"), blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("e-invoicing integration")
        verbose_name_plural = _("e-invoicing integrations")
        ordering = ["establishment", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["establishment", "name"], name="integration_unique_name"
            )
        ]

    def __str__(self) -> str:
        return self.name


class DispatchStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SENDING = "sending", _("Sending")
    RETRY = "retry", _("Retry planned")
    SENT = "sent", _("Sent")
    FAILED = "failed", _("Failed")
    # The platform refused the document (HTTP 4xx, validation): never retried.
    REJECTED = "rejected", _("Rejected")
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
    # One debtor, "send now" on the accountants' page: not the establishment's nightly run.
    MANUAL = "manual", _("Sent now by an accountant")


# Runs that process a whole establishment: one of them done means the night is done.
FULL_RUN_TRIGGERS = (RunTrigger.SCHEDULE, RunTrigger.COMMAND)


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
    integration = models.ForeignKey(
        Integration,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="dispatches",
        verbose_name=_("integration"),
    )
    business_date = models.DateField(_("business date"))
    # letter:<debtor id>:<business date>: at most one letter per debtor per business date;
    # einvoice:<integration id>:<invoice id>: one submission per invoice per integration.
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
    # E-invoices: our tracking id, the platform's reference, the document's fingerprint.
    tracking_id = models.CharField(_("tracking id"), max_length=64, blank=True)
    platform_ref = models.CharField(_("platform reference"), max_length=255, blank=True)
    document_sha256 = models.CharField(_("document SHA-256"), max_length=64, blank=True)
    # A timeout after the document was sent: ask the platform before sending it again.
    outcome_unknown = models.BooleanField(_("outcome unknown"), default=False)
    lifecycle_code = models.CharField(
        _("lifecycle status"), max_length=3, choices=LifecycleCode.choices, blank=True
    )
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
            models.CheckConstraint(
                condition=Q(channel="einvoice", integration__isnull=False)
                | (~Q(channel="einvoice") & Q(integration__isnull=True)),
                name="dispatch_einvoice_has_integration",
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
    REJECTED = "rejected", _("Rejected by the platform")
    INVALID = "invalid", _("Document failed validation")
    CHECKED = "checked", _("Checked with the platform after an unknown outcome")


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


class LifecycleEvent(models.Model):
    """Append-only history of an e-invoice's lifecycle statuses on its platform."""

    class Source(models.TextChoices):
        SUBMISSION = "submission", _("Submission answer")
        POLL = "poll", _("Status poll")
        WEBHOOK = "webhook", _("Webhook")
        LOCAL = "local", _("Reported by this module")

    dispatch = models.ForeignKey(
        Dispatch, on_delete=models.CASCADE, related_name="lifecycle", verbose_name=_("dispatch")
    )
    code = models.CharField(_("status"), max_length=3, choices=LifecycleCode.choices)
    source = models.CharField(_("source"), max_length=12, choices=Source.choices)
    occurred_at = models.DateTimeField(_("occurred at"), null=True, blank=True)
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)
    message = models.TextField(_("message"), blank=True)
    # The platform's id of the event: polls that return the whole history add nothing twice.
    event_id = models.CharField(_("event id"), max_length=200, blank=True)

    class Meta:
        verbose_name = _("lifecycle status")
        verbose_name_plural = _("lifecycle statuses")
        ordering = ["received_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["dispatch", "event_id"],
                condition=~Q(event_id=""),
                name="lifecycle_unique_event_id",
            )
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.get_code_display()}"


class HttpAttempt(models.Model):
    """Every HTTP request made to a platform, with its answer or error."""

    integration = models.ForeignKey(
        Integration,
        on_delete=models.CASCADE,
        related_name="http_attempts",
        verbose_name=_("integration"),
    )
    dispatch = models.ForeignKey(
        Dispatch,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="http_attempts",
        verbose_name=_("dispatch"),
    )
    operation = models.CharField(_("operation"), max_length=30)
    method = models.CharField(_("method"), max_length=10)
    url = models.CharField(_("URL"), max_length=1000)
    status_code = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)
    at = models.DateTimeField(_("at"), auto_now_add=True)

    class Meta:
        verbose_name = _("HTTP attempt")
        verbose_name_plural = _("HTTP attempts")
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.method} {self.url} {self.status_code or self.error[:40]}"


class WebhookEvent(models.Model):
    """A platform callback already processed: replays of its event id are ignored."""

    integration = models.ForeignKey(
        Integration,
        on_delete=models.CASCADE,
        related_name="webhook_events",
        verbose_name=_("integration"),
    )
    event_id = models.CharField(_("event id"), max_length=200)
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)
    payload = models.JSONField(_("payload"), default=dict)

    class Meta:
        verbose_name = _("webhook event")
        verbose_name_plural = _("webhook events")
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["integration", "event_id"], name="webhook_event_unique_id"
            )
        ]

    def __str__(self) -> str:
        return self.event_id


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
