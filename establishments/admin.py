from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
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
        "to_fix_tonight",
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

    def get_changelist_instance(self, request):
        """Count the debtors to fix for the page's establishments in one pass.

        Here rather than in the column, which the admin calls row by row: two queries for
        the whole page, whatever its number of establishments and debtors.
        """
        from dispatch.selectors import configuration_to_fix_counts

        changelist = super().get_changelist_instance(request)
        # Iterating fills the page queryset's cache: the rows rendered are these objects.
        rows = list(changelist.result_list)
        counts = configuration_to_fix_counts(establishments=rows, now=timezone.now())
        for establishment in rows:
            establishment.to_fix_tonight_count = counts.get(establishment.pk)
        return changelist

    @admin.display(description=_("to fix tonight"))
    def to_fix_tonight(self, obj):
        """Debtors the next run skips for a configuration reason (the /billing/checks/ count)."""
        count = getattr(obj, "to_fix_tonight_count", None)
        if count is None:
            # Auto-send off: no run, so nothing to fix for tonight.
            return "—"
        url = reverse("billing:checks") + f"?establishment={obj.pk}"
        if count:
            return format_html(
                '<a href="{}" style="color:#ba2121;font-weight:bold">{}</a>', url, count
            )
        return format_html('<a href="{}">{}</a>', url, count)

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
