from django import forms
from django.contrib import admin
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from debtors.models import DebtorAccount, SendMode


class DebtorAccountAdminForm(forms.ModelForm):
    # The model keeps a CharField so that imports can store a bad address and the run can
    # report it as `invalid_email`; people editing the account must type a valid one.
    contact_email = forms.EmailField(
        label=DebtorAccount._meta.get_field("contact_email").verbose_name,
        max_length=254,
        required=False,
    )

    class Meta:
        model = DebtorAccount
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
        if (
            cleaned.get("send_mode") == SendMode.EMAIL
            and "contact_email" in cleaned
            and not cleaned["contact_email"]
        ):
            self.add_error("contact_email", _("The send mode Email needs a contact email address."))
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
        "send_mode",
        "language",
        "paused_until",
    ]
    list_display_links = ["account_number", "name"]
    list_filter = ["establishment", "send_mode", "language", PausedListFilter]
    list_select_related = ["establishment"]
    search_fields = ["name", "account_number", "contact_email"]
    autocomplete_fields = ["establishment"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["establishment", "account_number", "name"]}),
        (
            _("Sending"),
            {
                "description": _(
                    "How this debtor is told what it owes. Accounts that cannot be served are "
                    "skipped by the nightly run with a reason, shown in the runs."
                ),
                "fields": ["send_mode", "contact_email", "language", "einvoicing_id"],
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
