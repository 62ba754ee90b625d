"""Read-only views of the nightly runs and the outbox.

These rows are written by the planner and the workers only; the admin shows them so that
every skip and failure is visible, and offers "Retry now" through the dispatch service.
"""

import ipaddress
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db.models import Case, IntegerField, Value, When
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from dispatch.connectors import ConnectorError, connector_for
from dispatch.crypto import SecretError
from dispatch.integrations import (
    integration_credentials,
    integration_set_secrets,
    integration_webhook_secret,
)
from dispatch.models import (
    CONFIGURATION_REASONS,
    Dispatch,
    DispatchEvent,
    DispatchItem,
    HttpAttempt,
    Integration,
    LifecycleEvent,
    Provider,
    Run,
    SkippedDebtor,
    SkipReason,
    WebhookEvent,
)


class ReadOnlyAdminMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False


class SkippedDebtorInline(ReadOnlyInline):
    model = SkippedDebtor
    fields = ["debtor", "reason", "invoice_count", "amount_due"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("debtor")


class DispatchItemInline(ReadOnlyInline):
    model = DispatchItem
    fields = ["invoice", "amount_due", "days_overdue"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice")


class DispatchEventInline(ReadOnlyInline):
    model = DispatchEvent
    fields = ["at", "kind", "message"]
    readonly_fields = fields


class LifecycleEventInline(ReadOnlyInline):
    model = LifecycleEvent
    fields = ["received_at", "code", "source", "occurred_at", "message"]
    readonly_fields = fields


@admin.register(Run)
class RunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "establishment",
        "business_date",
        "trigger",
        "started_at",
        "finished_at",
        "planned_count",
        "sent_count",
        "failed_count",
        "skipped_count",
        "skipped_reasons",
    ]
    list_filter = ["establishment", "trigger", "business_date"]
    list_select_related = ["establishment"]
    search_fields = ["establishment__code", "establishment__name"]
    date_hierarchy = "business_date"
    inlines = [SkippedDebtorInline]
    fields = [
        "establishment",
        "business_date",
        "trigger",
        ("started_at", "finished_at"),
        ("planned_count", "sent_count", "failed_count", "skipped_count"),
        "skipped_reasons",
    ]
    readonly_fields = [
        "establishment",
        "business_date",
        "trigger",
        "started_at",
        "finished_at",
        "planned_count",
        "sent_count",
        "failed_count",
        "skipped_count",
        "skipped_reasons",
    ]

    @admin.display(description=_("skipped by reason"))
    def skipped_reasons(self, obj):
        labels = dict(SkipReason.choices)
        return ", ".join(
            f"{labels.get(code, code)}: {count}"
            for code, count in sorted((obj.skipped_by_reason or {}).items())
        )


@admin.register(Dispatch)
class DispatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "debtor",
        "establishment",
        "channel",
        "business_date",
        "status",
        "attempts",
        "next_attempt_at",
        "short_error",
        "sent_at",
        "lifecycle_code",
    ]
    list_filter = ["status", "channel", "establishment", "business_date"]
    list_select_related = ["establishment", "debtor"]
    search_fields = ["debtor__name", "debtor__account_number", "idempotency_key"]
    date_hierarchy = "business_date"
    inlines = [DispatchItemInline, DispatchEventInline, LifecycleEventInline]
    actions = ["retry_now"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "establishment",
                    "debtor",
                    "run",
                    "channel",
                    "business_date",
                    "idempotency_key",
                ]
            },
        ),
        (_("Message"), {"fields": ["recipient", "language", ("currency", "total_due")]}),
        (
            _("Delivery"),
            {
                "fields": [
                    "status",
                    ("attempts", "next_attempt_at", "claimed_at"),
                    "last_error",
                    "message_id",
                    "sent_at",
                    ("created_at", "updated_at"),
                ]
            },
        ),
        (
            _("E-invoice"),
            {
                "fields": [
                    "integration",
                    ("tracking_id", "platform_ref"),
                    "document_sha256",
                    "outcome_unknown",
                    "lifecycle_code",
                ]
            },
        ),
    ]
    readonly_fields = [
        "establishment",
        "debtor",
        "run",
        "channel",
        "business_date",
        "idempotency_key",
        "recipient",
        "language",
        "currency",
        "total_due",
        "status",
        "attempts",
        "next_attempt_at",
        "claimed_at",
        "last_error",
        "message_id",
        "sent_at",
        "created_at",
        "updated_at",
        "integration",
        "tracking_id",
        "platform_ref",
        "document_sha256",
        "outcome_unknown",
        "lifecycle_code",
    ]

    @admin.display(description=_("last error"))
    def short_error(self, obj):
        return Truncator(obj.last_error).chars(80)

    def has_retry_permission(self, request):
        # The admin is read-only, but retrying is a change the model permission governs.
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    @admin.action(description=_("Retry now"), permissions=["retry"])
    def retry_now(self, request, queryset):
        from dispatch.services import DispatchStateError, dispatch_requeue

        requeued = 0
        for dispatch in queryset.select_related("debtor").order_by("pk"):
            try:
                dispatch_requeue(dispatch_id=dispatch.pk)
            except DispatchStateError as exc:
                self.message_user(
                    request,
                    gettext("%(dispatch)s was not retried: %(error)s")
                    % {"dispatch": dispatch, "error": exc},
                    messages.ERROR,
                )
            else:
                requeued += 1
        if requeued:
            self.message_user(
                request,
                ngettext(
                    "%(count)d dispatch queued for a new attempt.",
                    "%(count)d dispatches queued for a new attempt.",
                    requeued,
                )
                % {"count": requeued},
                messages.SUCCESS,
            )


class NeedsFixingFilter(admin.SimpleListFilter):
    title = _("needs fixing")
    parameter_name = "needs_fixing"

    def lookups(self, request, model_admin):
        return [
            ("yes", _("Yes: the account's configuration")),
            ("no", _("No: amounts and reminder cadence")),
        ]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(reason__in=CONFIGURATION_REASONS)
        if self.value() == "no":
            return queryset.exclude(reason__in=CONFIGURATION_REASONS)
        return queryset


@admin.register(SkippedDebtor)
class SkippedDebtorAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "debtor",
        "fix_link",
        "establishment",
        "business_date",
        "reason",
        "invoice_count",
        "amount_due",
    ]
    list_filter = [NeedsFixingFilter, "reason", "run__establishment", "run__business_date"]
    list_select_related = ["debtor", "run__establishment"]
    # Accounts to fix first, newest runs first.
    ordering = [
        Case(
            When(reason__in=CONFIGURATION_REASONS, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        ).asc(),
        "-run__business_date",
        "debtor__name",
    ]

    @admin.display(description=_("debtor account"))
    def fix_link(self, obj):
        url = reverse("admin:debtors_debtoraccount_change", args=[obj.debtor_id])
        return format_html('<a href="{}">{}</a>', url, _("Open the account"))

    search_fields = ["debtor__name", "debtor__account_number"]
    fields = ["run", "debtor", "reason", "invoice_count", "amount_due"]
    readonly_fields = fields

    @admin.display(description=_("establishment"), ordering="run__establishment__name")
    def establishment(self, obj):
        return obj.run.establishment

    @admin.display(description=_("business date"), ordering="run__business_date")
    def business_date(self, obj):
        return obj.run.business_date


@admin.register(DispatchEvent)
class DispatchEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["at", "dispatch", "kind", "short_message"]
    list_filter = ["kind"]
    list_select_related = ["dispatch"]
    search_fields = ["dispatch__idempotency_key", "dispatch__debtor__name", "message"]
    date_hierarchy = "at"
    fields = ["dispatch", "at", "kind", "message"]
    readonly_fields = fields

    @admin.display(description=_("message"))
    def short_message(self, obj):
        return Truncator(obj.message).chars(100)


# --- e-invoicing integrations -----------------------------------------------------------

# Credential keys each provider's connector reads from `integration_credentials()`.
PROVIDER_CREDENTIALS = {
    Provider.BAVEL: ("username", "password"),
    Provider.AFNOR: ("client_id", "client_secret"),
    Provider.SANDBOX: (),
}
CREDENTIAL_FIELDS = ("username", "password", "client_id", "client_secret")
SECRET_FIELDS = (*CREDENTIAL_FIELDS, "webhook_secret")


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _secret_field(label):
    # render_value=False: a stored secret is never sent back to the browser, not even
    # masked; blank means "keep the stored value".
    return forms.CharField(
        label=label, required=False, widget=forms.PasswordInput(render_value=False)
    )


class IntegrationAdminForm(forms.ModelForm):
    username = _secret_field(_("user name (Bavel)"))
    password = _secret_field(_("password (Bavel)"))
    client_id = _secret_field(_("client id (AFNOR)"))
    client_secret = _secret_field(_("client secret (AFNOR)"))
    webhook_secret = _secret_field(_("webhook secret"))

    class Meta:
        model = Integration
        # The encrypted columns are never part of a form: secrets come in through the
        # write-only fields above and go out through `integration_set_secrets` only.
        fields = [
            "establishment",
            "provider",
            "name",
            "active",
            "endpoint",
            "document_format",
            "options",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stored = stored_secrets(self.instance)
        for name in SECRET_FIELDS:
            if name not in self.fields:
                continue
            self.fields[name].help_text = (
                _("Stored. Leave blank to keep it.") if self.stored.get(name) else _("Not stored.")
            )

    def clean_options(self):
        options = self.cleaned_data.get("options")
        if options in (None, ""):
            return {}
        if not isinstance(options, dict):
            raise forms.ValidationError(_('Give the options as a JSON object, e.g. {"a": "b"}.'))
        return options

    def clean(self):
        cleaned = super().clean()
        provider = cleaned.get("provider")
        if provider in (Provider.BAVEL, Provider.AFNOR):
            self._check_endpoint(cleaned.get("endpoint", ""), Provider(provider).label)
        if provider == Provider.BAVEL and "options" in cleaned:
            if not str(cleaned["options"].get("hotel_code", "")).strip():
                self.add_error(
                    "options",
                    _('Bavel needs the hotel code in the options, e.g. {"hotel_code": "PAR01"}.'),
                )
        for name in PROVIDER_CREDENTIALS.get(provider, ()):
            if name in self.fields and not cleaned.get(name) and not self.stored.get(name):
                self.add_error(name, _("Required: nothing is stored yet."))
        return cleaned

    def _check_endpoint(self, endpoint: str, provider_label: str) -> None:
        if "endpoint" not in self.fields:
            return
        endpoint = endpoint.strip()
        if not endpoint:
            self.add_error(
                "endpoint",
                _("%(provider)s needs the platform's base URL.") % {"provider": provider_label},
            )
            return
        try:
            URLValidator(schemes=["http", "https"])(endpoint)
        except ValidationError:
            self.add_error("endpoint", _("Enter a URL starting with https://."))
            return
        parts = urlsplit(endpoint)
        if parts.username or parts.password:
            self.add_error("endpoint", _("Put no credentials in the URL: use the fields below."))
        elif parts.scheme == "http" and not _is_loopback(parts.hostname):
            # Basic auth and OAuth secrets never travel in clear over a network.
            self.add_error(
                "endpoint",
                _("Use https:// (plain http:// only for a test server on this machine)."),
            )

    def secrets_to_save(self) -> tuple[dict | None, str | None]:
        """The credentials and webhook secret to store; None where the stored one stays."""
        provider = self.cleaned_data.get("provider")
        keys = PROVIDER_CREDENTIALS.get(provider, ())
        credentials = {}
        for key in keys:
            value = self.cleaned_data.get(key) or self.stored.get(key)
            if value:
                credentials[key] = value
        # Keys of another provider go when the provider changes.
        current = {key: self.stored[key] for key in CREDENTIAL_FIELDS if self.stored.get(key)}
        webhook_secret = self.cleaned_data.get("webhook_secret") or None
        return (credentials if credentials != current else None), webhook_secret


def stored_secrets(integration: Integration) -> dict:
    """The stored secrets of `integration`, for this module's checks; never rendered."""
    if not integration.pk:
        return {}
    try:
        stored = dict(integration_credentials(integration=integration))
        stored["webhook_secret"] = integration_webhook_secret(integration=integration)
    except SecretError:
        # Unreadable with the configured keys: as good as absent, to be typed again.
        return {}
    return stored


def redact(message: str, integration: Integration) -> str:
    """`message` without any stored secret of `integration` (errors may echo a URL)."""
    for value in sorted(stored_secrets(integration).values(), key=len, reverse=True):
        if isinstance(value, str) and value:
            message = message.replace(value, "***")
    return message


@admin.register(Integration)
class IntegrationAdmin(admin.ModelAdmin):
    form = IntegrationAdminForm
    list_display = [
        "establishment",
        "name",
        "provider",
        "active",
        "document_format",
        "endpoint",
    ]
    list_display_links = ["name"]
    list_filter = ["provider", "active", "document_format", "establishment"]
    list_select_related = ["establishment"]
    search_fields = ["name", "endpoint", "establishment__name", "establishment__code"]
    autocomplete_fields = ["establishment"]
    actions = ["test_connection"]
    readonly_fields = ["secrets_stored", "created_at", "updated_at"]
    fieldsets = [
        (
            None,
            {
                "description": _(
                    "Debtors of the establishment can choose an active integration as their "
                    "send mode. Untick “active” to stop sending through it: its debtors are "
                    "then skipped by the nightly run, never sent another way."
                ),
                "fields": ["establishment", "provider", "name", "active"],
            },
        ),
        (_("Platform"), {"fields": ["endpoint", "document_format", "options"]}),
        (
            _("Secrets"),
            {
                "description": _(
                    "Stored encrypted and never shown again. Leave a field blank to keep the "
                    "stored value. Bavel uses the user name and password, the AFNOR platform "
                    "the client id and secret."
                ),
                "fields": [
                    "secrets_stored",
                    ("username", "password"),
                    ("client_id", "client_secret"),
                    "webhook_secret",
                ],
            },
        ),
        (_("History"), {"classes": ["collapse"], "fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description=_("stored secrets"))
    def secrets_stored(self, obj):
        stored = stored_secrets(obj) if obj is not None else {}
        keys = (*PROVIDER_CREDENTIALS.get(obj.provider, ()), "webhook_secret") if obj else ()
        labels = {name: IntegrationAdminForm.base_fields[name].label for name in SECRET_FIELDS}
        return ", ".join(
            f"{labels[key]}: {gettext('stored') if stored.get(key) else gettext('not stored')}"
            for key in keys
        )

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        credentials, webhook_secret = form.secrets_to_save()
        integration_set_secrets(
            integration=obj, credentials=credentials, webhook_secret=webhook_secret
        )

    @admin.action(description=_("Test connection"), permissions=["change"])
    def test_connection(self, request, queryset):
        for integration in queryset.select_related("establishment").order_by("pk"):
            names = {"integration": integration.name, "establishment": integration.establishment}
            try:
                answer = connector_for(integration).test_connection()
            except (ConnectorError, SecretError) as exc:
                self.message_user(
                    request,
                    gettext("%(integration)s (%(establishment)s): connection failed: %(error)s")
                    % {**names, "error": redact(str(exc), integration)},
                    messages.ERROR,
                )
            else:
                self.message_user(
                    request,
                    gettext("%(integration)s (%(establishment)s): %(answer)s")
                    % {**names, "answer": redact(answer, integration)},
                    messages.SUCCESS,
                )


@admin.register(HttpAttempt)
class HttpAttemptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "at",
        "integration",
        "operation",
        "method",
        "short_url",
        "status_code",
        "short_error",
        "duration_ms",
        "dispatch",
    ]
    list_filter = ["integration", "operation", "status_code"]
    list_select_related = ["integration", "dispatch"]
    search_fields = ["url", "error"]
    date_hierarchy = "at"
    fields = [
        "at",
        "integration",
        "dispatch",
        "operation",
        ("method", "status_code", "duration_ms"),
        "url",
        "error",
    ]
    readonly_fields = [
        "at",
        "integration",
        "dispatch",
        "operation",
        "method",
        "status_code",
        "duration_ms",
        "url",
        "error",
    ]

    @admin.display(description=_("URL"), ordering="url")
    def short_url(self, obj):
        return Truncator(obj.url).chars(80)

    @admin.display(description=_("error"))
    def short_error(self, obj):
        return Truncator(obj.error).chars(80)


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["received_at", "integration", "event_id"]
    list_filter = ["integration"]
    list_select_related = ["integration"]
    search_fields = ["event_id"]
    date_hierarchy = "received_at"
    fields = ["received_at", "integration", "event_id", "payload"]
    readonly_fields = fields
