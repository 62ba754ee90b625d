from django.contrib import admin
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from debtors.forms import DebtorSendModeForm
from debtors.models import DebtorAccount, SendMode
from debtors.selectors import debtor_einvoice_status_subquery
from dispatch.models import LifecycleCode


class DebtorAccountAdminForm(DebtorSendModeForm):
    class Meta(DebtorSendModeForm.Meta):
        # The admin narrows this to the fields of its fieldsets.
        fields = [
            "establishment",
            "account_number",
            "name",
            "send_mode",
            "contact_email",
            "language",
            "einvoicing_id",
            "address_line1",
            "address_line2",
            "postal_code",
            "city",
            "country",
            "siret",
            "vat_number",
            "credit_limit",
            "paused_until",
            "pause_reason",
        ]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("paused_until") and not cleaned.get("pause_reason", "").strip():
            self.add_error(
                "pause_reason", _("Give a reason when reminders are paused until a date.")
            )
        return cleaned


class PausedListFilter(admin.SimpleListFilter):
    title = _("reminders paused")
    parameter_name = "paused"

    def lookups(self, request, model_admin):
        return [("yes", _("Paused")), ("no", _("Not paused"))]

    def queryset(self, request, queryset):
        # The pause includes its last day (see DebtorAccount.paused_until).
        today = timezone.localdate()
        if self.value() == "yes":
            return queryset.filter(paused_until__gte=today)
        if self.value() == "no":
            return queryset.exclude(paused_until__gte=today)
        return queryset


@admin.register(DebtorAccount)
class DebtorAccountAdmin(admin.ModelAdmin):
    form = DebtorAccountAdminForm
    list_display = [
        "account_number",
        "name",
        "establishment",
        "contact_email",
        "send_mode_label",
        "language",
        "paused_until",
        "einvoice_status",
    ]
    list_display_links = ["account_number", "name"]
    list_filter = ["establishment", "send_mode", "integration", "language", PausedListFilter]
    list_select_related = ["establishment", "integration"]
    search_fields = ["name", "account_number", "contact_email"]
    autocomplete_fields = ["establishment"]
    readonly_fields = ["einvoice_status", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["establishment", "account_number", "name"]}),
        (
            _("Sending"),
            {
                "description": _(
                    "How this debtor is told what it owes. Accounts that cannot be served are "
                    "skipped by the nightly run with a reason, shown in the runs."
                ),
                "fields": [
                    "send_mode",
                    "contact_email",
                    "language",
                    "einvoicing_id",
                    "einvoice_status",
                ],
            },
        ),
        (
            _("Address"),
            {
                "fields": [
                    "address_line1",
                    "address_line2",
                    ("postal_code", "city"),
                    "country",
                ]
            },
        ),
        (_("Legal data and credit"), {"fields": ["siret", "vat_number", "credit_limit"]}),
        (_("Reminder pause"), {"fields": ["paused_until", "pause_reason"]}),
        (_("History"), {"classes": ["collapse"], "fields": ["created_at", "updated_at"]}),
    ]

    def get_queryset(self, request):
        # In SQL, so that the list makes no query per row.
        return (
            super().get_queryset(request).annotate(einvoice_code=debtor_einvoice_status_subquery())
        )

    @admin.display(description=_("send mode"), ordering="send_mode")
    def send_mode_label(self, obj):
        # E-invoicing modes are named after their integration, as in the form.
        if obj.send_mode == SendMode.EINVOICING and obj.integration is not None:
            if not obj.integration.active:
                return _("%(name)s (inactive)") % {"name": obj.integration.name}
            return obj.integration.name
        return obj.get_send_mode_display()

    @admin.display(description=_("latest e-invoice status"), ordering="einvoice_code")
    def einvoice_status(self, obj):
        code = getattr(obj, "einvoice_code", None)
        if not code:
            return "-"
        return LifecycleCode(code).label if code in LifecycleCode.values else code
