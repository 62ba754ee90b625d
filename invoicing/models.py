from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import DecimalField, ExpressionWrapper, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Round
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from establishments.models import currency_validator

MONEY = {"max_digits": 12, "decimal_places": 2}
ZERO = Decimal("0.00")


def cents(value: Decimal) -> Decimal:
    """Round a computed amount to cents (exact on PostgreSQL, needed on SQLite)."""
    return Decimal(value).quantize(Decimal("0.01"))


class InvoiceStatus(models.TextChoices):
    REVIEW = "review", _("In review")
    OPEN = "open", _("Open")
    PAID = "paid", _("Paid")


class InvoiceQuerySet(models.QuerySet):
    def with_amounts(self):
        """Annotate `amount_paid` and `amount_due` (gross total minus payments) in SQL."""
        paid = (
            Payment.objects.filter(invoice=OuterRef("pk"))
            .order_by()
            .values("invoice")
            .annotate(total=Sum("amount"))
            .values("total")
        )
        money = DecimalField(**MONEY)
        # SQLite computes this in floating point and Django gives it back as a 15-digit
        # Decimal: readers quantize with `cents()` before using it.
        return self.annotate(
            amount_paid=Coalesce(
                Subquery(paid, output_field=money), Value(ZERO), output_field=money
            )
        ).annotate(
            amount_due=ExpressionWrapper(F("gross_total") - F("amount_paid"), output_field=money)
        )

    def pending(self):
        """Open, not disputed, with something left to pay (DESIGN.md, Rules of selection)."""
        return (
            self.with_amounts()
            .filter(status=InvoiceStatus.OPEN, disputed=False)
            .filter(amount_due__gt=0)
        )


class Invoice(models.Model):
    establishment = models.ForeignKey(
        "establishments.Establishment",
        on_delete=models.PROTECT,
        related_name="invoices",
        verbose_name=_("establishment"),
    )
    debtor = models.ForeignKey(
        "debtors.DebtorAccount",
        on_delete=models.PROTECT,
        related_name="invoices",
        verbose_name=_("debtor"),
    )
    series = models.CharField(_("series"), max_length=20, blank=True)
    number = models.CharField(_("number"), max_length=40)
    issue_date = models.DateField(_("issue date"))
    due_date = models.DateField(_("due date"))
    currency = models.CharField(
        _("currency"), max_length=3, default="EUR", validators=[currency_validator]
    )
    net_total = models.DecimalField(_("net total"), default=ZERO, **MONEY)
    vat_total = models.DecimalField(_("VAT total"), default=ZERO, **MONEY)
    gross_total = models.DecimalField(_("gross total"), default=ZERO, **MONEY)
    status = models.CharField(
        _("status"), max_length=10, choices=InvoiceStatus.choices, default=InvoiceStatus.OPEN
    )
    disputed = models.BooleanField(_("disputed"), default=False)
    dispute_reason = models.CharField(_("dispute reason"), max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = InvoiceQuerySet.as_manager()
    # Status and dispute changes, shown with the debtor's history.
    history = HistoricalRecords(excluded_fields=["created_at", "updated_at"])

    class Meta:
        verbose_name = _("invoice")
        verbose_name_plural = _("invoices")
        ordering = ["establishment", "issue_date", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["establishment", "number"], name="invoice_unique_number"
            ),
            models.CheckConstraint(condition=Q(net_total__gte=0), name="invoice_net_gte_0"),
            models.CheckConstraint(condition=Q(vat_total__gte=0), name="invoice_vat_gte_0"),
            models.CheckConstraint(
                # Rounded because SQLite (the demo database) adds decimals as binary floats:
                # 1646.40 + 203.40 is not 1849.80 there. Exact on PostgreSQL either way.
                condition=Q(gross_total=Round(F("net_total") + F("vat_total"), 2)),
                name="invoice_gross_is_net_plus_vat",
            ),
            models.CheckConstraint(
                condition=Q(due_date__gte=F("issue_date")), name="invoice_due_after_issue"
            ),
            models.CheckConstraint(
                condition=Q(disputed=False) | ~Q(dispute_reason=""),
                name="invoice_dispute_has_reason",
            ),
        ]
        indexes = [models.Index(fields=["establishment", "status", "debtor"])]

    def __str__(self) -> str:
        return self.number


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(
        Invoice, on_delete=models.CASCADE, related_name="lines", verbose_name=_("invoice")
    )
    position = models.PositiveIntegerField(_("position"), default=0)
    description = models.CharField(_("description"), max_length=255)
    quantity = models.DecimalField(_("quantity"), max_digits=12, decimal_places=3)
    unit_price = models.DecimalField(_("unit price"), max_digits=12, decimal_places=4)
    vat_rate = models.DecimalField(
        _("VAT rate (%)"),
        max_digits=5,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
    )
    net_amount = models.DecimalField(_("net amount"), **MONEY)
    vat_amount = models.DecimalField(_("VAT amount"), **MONEY)

    class Meta:
        verbose_name = _("invoice line")
        verbose_name_plural = _("invoice lines")
        ordering = ["invoice", "position", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="line_quantity_gt_0"),
            models.CheckConstraint(condition=Q(unit_price__gte=0), name="line_unit_price_gte_0"),
            models.CheckConstraint(
                condition=Q(vat_rate__gte=0, vat_rate__lte=100), name="line_vat_rate_0_100"
            ),
            models.CheckConstraint(condition=Q(net_amount__gte=0), name="line_net_gte_0"),
            models.CheckConstraint(condition=Q(vat_amount__gte=0), name="line_vat_gte_0"),
        ]

    def __str__(self) -> str:
        return self.description


class Payment(models.Model):
    invoice = models.ForeignKey(
        Invoice, on_delete=models.PROTECT, related_name="payments", verbose_name=_("invoice")
    )
    reference = models.CharField(
        _("reference"), max_length=60, help_text=_("Unique per invoice; imports upsert on it.")
    )
    date = models.DateField(_("date"))
    amount = models.DecimalField(_("amount"), **MONEY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("payment")
        verbose_name_plural = _("payments")
        ordering = ["invoice", "date", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice", "reference"], name="payment_unique_reference"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_gt_0"),
        ]

    def __str__(self) -> str:
        return f"{self.reference} ({self.amount})"
