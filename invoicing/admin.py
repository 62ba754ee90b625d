from django import forms
from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from dispatch.models import LifecycleCode
from invoicing.models import ZERO, Invoice, InvoiceLine, Payment, cents
from invoicing.selectors import invoice_einvoice_status_subquery


def _recalculate(invoice: Invoice) -> None:
    # Imported here: invoicing.services may import this app's models, and the admin must
    # load even where the service module is not importable yet.
    from invoicing.services import invoice_recalculate

    invoice_recalculate(invoice=invoice)


class InvoiceAdminForm(forms.ModelForm):
    class Meta:
        model = Invoice
        fields = [
            "establishment",
            "debtor",
            "series",
            "number",
            "issue_date",
            "due_date",
            "currency",
            "status",
            "disputed",
            "dispute_reason",
        ]

    def clean(self):
        cleaned = super().clean()
        # The database refuses these too; here they become field errors instead of a 500.
        if cleaned.get("disputed") and not cleaned.get("dispute_reason", "").strip():
            self.add_error("dispute_reason", _("Give a reason when the invoice is disputed."))
        issue_date, due_date = cleaned.get("issue_date"), cleaned.get("due_date")
        if issue_date and due_date and due_date < issue_date:
            self.add_error("due_date", _("The due date cannot be before the issue date."))
        establishment, debtor = cleaned.get("establishment"), cleaned.get("debtor")
        if establishment and debtor and debtor.establishment_id != establishment.pk:
            self.add_error("debtor", _("This debtor account belongs to another establishment."))
        return cleaned


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    fields = [
        "position",
        "description",
        "quantity",
        "unit_price",
        "vat_rate",
        "net_amount",
        "vat_amount",
    ]
    readonly_fields = ["net_amount", "vat_amount"]


class PaymentInline(admin.TabularInline):
    model = Payment
    extra = 0
    fields = ["reference", "date", "amount"]


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    form = InvoiceAdminForm
    inlines = [InvoiceLineInline, PaymentInline]
    list_display = [
        "number",
        "debtor",
        "establishment",
        "issue_date",
        "due_date",
        "gross_total",
        "amount_due",
        "status",
        "disputed",
        "einvoice_status",
    ]
    list_filter = ["establishment", "status", "disputed"]
    list_select_related = ["debtor", "establishment"]
    search_fields = ["number", "debtor__name", "debtor__account_number"]
    date_hierarchy = "issue_date"
    autocomplete_fields = ["establishment", "debtor"]
    readonly_fields = [
        "net_total",
        "vat_total",
        "gross_total",
        "amount_paid",
        "amount_due",
        "einvoice_status",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["establishment", "debtor", ("series", "number")]}),
        (_("Dates"), {"fields": [("issue_date", "due_date")]}),
        (
            _("Totals"),
            {
                "description": _("Computed from the lines and payments when the invoice is saved."),
                "fields": [
                    "currency",
                    ("net_total", "vat_total", "gross_total"),
                    ("amount_paid", "amount_due"),
                ],
            },
        ),
        (_("Status"), {"fields": ["status", "disputed", "dispute_reason", "einvoice_status"]}),
        (_("History"), {"classes": ["collapse"], "fields": ["created_at", "updated_at"]}),
    ]

    actions = ["approve_invoices"]

    def get_fieldsets(self, request, obj=None):
        if obj is not None:
            return self.fieldsets
        # A new invoice's status follows the establishment's review mode.
        return [
            (name, {**opts, "fields": [f for f in opts["fields"] if f != "status"]})
            for name, opts in self.fieldsets
        ]

    def save_model(self, request, obj, form, change):
        if not change:
            from invoicing.services import invoice_initial_status

            obj.status = invoice_initial_status(establishment=obj.establishment)
        super().save_model(request, obj, form, change)

    @admin.action(description=_("Approve selected invoices (in review → open)"))
    def approve_invoices(self, request, queryset):
        from invoicing.services import InvoicingError, invoice_approve

        approved = 0
        for invoice in queryset:
            try:
                invoice_approve(invoice=invoice)
            except InvoicingError as exc:
                self.message_user(request, f"{invoice.number}: {exc}", messages.ERROR)
            else:
                approved += 1
        if approved:
            self.message_user(
                request,
                ngettext("%(count)d invoice approved.", "%(count)d invoices approved.", approved)
                % {"count": approved},
                messages.SUCCESS,
            )

    def get_queryset(self, request):
        # Amounts and the e-invoice status are annotated in SQL so that the changelist makes
        # no query per row.
        return (
            super()
            .get_queryset(request)
            .with_amounts()
            .annotate(einvoice_code=invoice_einvoice_status_subquery())
        )

    @admin.display(description=_("e-invoice status"), ordering="einvoice_code")
    def einvoice_status(self, obj):
        code = getattr(obj, "einvoice_code", None)
        if not code:
            return "-"
        return LifecycleCode(code).label if code in LifecycleCode.values else code

    @admin.display(description=_("amount paid"), ordering="amount_paid")
    def amount_paid(self, obj):
        value = getattr(obj, "amount_paid", None)
        return None if value is None else cents(value)

    @admin.display(description=_("amount due"), ordering="amount_due")
    def amount_due(self, obj):
        value = getattr(obj, "amount_due", None)
        return None if value is None else cents(value)

    def save_formset(self, request, form, formset, change):
        if formset.model is not InvoiceLine:
            return super().save_formset(request, form, formset, change)
        instances = formset.save(commit=False)
        for line in instances:
            # Placeholders so the row can be written; invoice_recalculate sets the real
            # amounts in save_related, within the same transaction.
            if line.net_amount is None:
                line.net_amount = ZERO
            if line.vat_amount is None:
                line.vat_amount = ZERO
            line.save()
        for line in formset.deleted_objects:
            line.delete()
        formset.save_m2m()

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        _recalculate(form.instance)


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ["reference", "invoice", "debtor", "establishment", "date", "amount"]
    list_filter = ["invoice__establishment", "date"]
    list_select_related = ["invoice__debtor", "invoice__establishment"]
    search_fields = [
        "reference",
        "invoice__number",
        "invoice__debtor__name",
        "invoice__debtor__account_number",
    ]
    date_hierarchy = "date"
    autocomplete_fields = ["invoice"]
    readonly_fields = ["created_at"]
    fields = ["invoice", "reference", "date", "amount", "created_at"]

    @admin.display(description=_("debtor"), ordering="invoice__debtor__name")
    def debtor(self, obj):
        return obj.invoice.debtor

    @admin.display(description=_("establishment"), ordering="invoice__establishment__name")
    def establishment(self, obj):
        return obj.invoice.establishment

    # A payment changes what the invoice still owes and may make it paid.
    def save_model(self, request, obj, form, change):
        previous_invoice_id = None
        if change and "invoice" in form.changed_data:
            previous_invoice_id = form.initial.get("invoice")
        super().save_model(request, obj, form, change)
        _recalculate(obj.invoice)
        if previous_invoice_id:
            _recalculate(Invoice.objects.get(pk=previous_invoice_id))

    def delete_model(self, request, obj):
        invoice = obj.invoice
        super().delete_model(request, obj)
        _recalculate(invoice)

    def delete_queryset(self, request, queryset):
        invoice_ids = set(queryset.values_list("invoice_id", flat=True))
        super().delete_queryset(request, queryset)
        for invoice in Invoice.objects.filter(pk__in=invoice_ids):
            _recalculate(invoice)
