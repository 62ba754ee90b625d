from django.contrib import admin, messages
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from establishments.models import Establishment


@admin.register(Establishment)
class EstablishmentAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "code",
        "city",
        "auto_send_pending_invoices",
        "review_mode",
        "time_zone",
        "send_hour",
    ]
    list_filter = ["auto_send_pending_invoices", "review_mode", "language"]
    search_fields = ["code", "name", "legal_name"]
    filter_horizontal = ["members"]
    readonly_fields = ["created_at", "updated_at"]
    actions = ["enable_auto_send", "disable_auto_send"]
    fieldsets = [
        (
            _("Identity"),
            {
                "fields": [
                    "code",
                    "name",
                    "legal_name",
                    "address_line1",
                    "address_line2",
                    ("postal_code", "city"),
                    "country",
                ]
            },
        ),
        (_("Legal data"), {"fields": ["siret", "vat_number"]}),
        (
            _("Sender details"),
            {
                "description": _(
                    "Shown on remittance letters; replies to the letters go to the finance email."
                ),
                "fields": ["finance_email", "phone", "iban", "bic"],
            },
        ),
        (_("Locale"), {"fields": ["time_zone", "language", "currency"]}),
        (
            _("Preferences › Financial information"),
            {
                "description": _(
                    "The nightly run sends each debtor of this establishment what it owes, "
                    "through the send mode of its account, at or after the local send hour."
                ),
                "fields": [
                    "auto_send_pending_invoices",
                    "review_mode",
                    "reminder_interval_days",
                    "minimum_amount",
                    "send_hour",
                ],
            },
        ),
        (_("Staff"), {"fields": ["members"]}),
        (_("History"), {"classes": ["collapse"], "fields": ["created_at", "updated_at"]}),
    ]

    @admin.action(description=_("Enable automatic sending"), permissions=["change"])
    def enable_auto_send(self, request, queryset):
        self._set_auto_send(request, queryset, enabled=True)

    @admin.action(description=_("Disable automatic sending"), permissions=["change"])
    def disable_auto_send(self, request, queryset):
        self._set_auto_send(request, queryset, enabled=False)

    def _set_auto_send(self, request, queryset, *, enabled: bool) -> None:
        changed = list(queryset.exclude(auto_send_pending_invoices=enabled))
        # update() skips auto_now, and the change history must show who flipped the switch.
        Establishment.objects.filter(pk__in=[e.pk for e in changed]).update(
            auto_send_pending_invoices=enabled, updated_at=timezone.now()
        )
        field_label = Establishment._meta.get_field("auto_send_pending_invoices").verbose_name
        for establishment in changed:
            self.log_change(request, establishment, [{"changed": {"fields": [str(field_label)]}}])
        if enabled:
            text = ngettext(
                "Automatic sending enabled for %(count)d establishment.",
                "Automatic sending enabled for %(count)d establishments.",
                len(changed),
            )
        else:
            text = ngettext(
                "Automatic sending disabled for %(count)d establishment.",
                "Automatic sending disabled for %(count)d establishments.",
                len(changed),
            )
        self.message_user(request, text % {"count": len(changed)}, messages.SUCCESS)
