"""Read-only views of the nightly runs and the outbox.

These rows are written by the planner and the workers only; the admin shows them so that
every skip and failure is visible, and offers "Retry now" through the dispatch service.
"""

from django.contrib import admin, messages
from django.db.models import Case, IntegerField, Value, When
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from dispatch.models import (
    CONFIGURATION_REASONS,
    Dispatch,
    DispatchEvent,
    DispatchItem,
    Run,
    SkippedDebtor,
    SkipReason,
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
    ]
    list_filter = ["status", "channel", "establishment", "business_date"]
    list_select_related = ["establishment", "debtor"]
    search_fields = ["debtor__name", "debtor__account_number", "idempotency_key"]
    date_hierarchy = "business_date"
    inlines = [DispatchItemInline, DispatchEventInline]
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
