import zoneinfo
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _


class Language(models.TextChoices):
    FRENCH = "fr", _("French")
    ENGLISH = "en", _("English")
    SPANISH = "es", _("Spanish")


TIME_ZONE_CHOICES = [(name, name) for name in sorted(zoneinfo.available_timezones())]

currency_validator = RegexValidator(r"^[A-Z]{3}$", _("Use a three-letter ISO 4217 code."))


class Establishment(models.Model):
    """A hotel: its identity, the sender details of its letters and its preferences."""

    code = models.SlugField(
        _("code"), max_length=32, unique=True, help_text=_("Unique code used by imports.")
    )
    name = models.CharField(_("name"), max_length=200)
    legal_name = models.CharField(_("legal name"), max_length=200, blank=True)
    address_line1 = models.CharField(_("address"), max_length=200, blank=True)
    address_line2 = models.CharField(_("address (continued)"), max_length=200, blank=True)
    postal_code = models.CharField(_("postal code"), max_length=20, blank=True)
    city = models.CharField(_("city"), max_length=100, blank=True)
    country = models.CharField(_("country"), max_length=2, default="FR", help_text="ISO 3166-1")
    siret = models.CharField(_("SIRET"), max_length=14, blank=True)
    vat_number = models.CharField(_("VAT number"), max_length=20, blank=True)
    finance_email = models.EmailField(
        _("finance email"), blank=True, help_text=_("Reply-To address of remittance letters.")
    )
    phone = models.CharField(_("phone"), max_length=40, blank=True)
    iban = models.CharField(_("IBAN"), max_length=34, blank=True)
    bic = models.CharField(_("BIC"), max_length=11, blank=True)
    time_zone = models.CharField(
        _("time zone"), max_length=64, choices=TIME_ZONE_CHOICES, default="Europe/Paris"
    )
    language = models.CharField(
        _("default language"), max_length=2, choices=Language.choices, default=Language.FRENCH
    )
    currency = models.CharField(
        _("currency"), max_length=3, default="EUR", validators=[currency_validator]
    )

    # Préférences > Informations financières
    auto_send_pending_invoices = models.BooleanField(
        _("automatic sending of pending invoices"),
        default=False,
        help_text=_("Every night, send each debtor what it owes through its send mode."),
    )
    review_mode = models.BooleanField(
        _("review mode"),
        default=False,
        help_text=_("New invoices start in review and are not sent until approved."),
    )
    reminder_interval_days = models.PositiveSmallIntegerField(
        _("reminder interval (days)"),
        default=7,
        validators=[MinValueValidator(1), MaxValueValidator(365)],
        help_text=_("Minimum days between two letters about overdue invoices."),
    )
    minimum_amount = models.DecimalField(
        _("minimum total to send"),
        max_digits=12,
        decimal_places=2,
        default=Decimal("0.01"),
        validators=[MinValueValidator(Decimal("0"))],
    )
    send_hour = models.PositiveSmallIntegerField(
        _("local send hour"),
        default=2,
        validators=[MaxValueValidator(23)],
        help_text=_("The nightly run processes this establishment at or after this local hour."),
    )

    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("staff members"),
        related_name="establishments",
        blank=True,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("establishment")
        verbose_name_plural = _("establishments")
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(minimum_amount__gte=0), name="establishment_minimum_gte_0"
            ),
            models.CheckConstraint(
                condition=models.Q(send_hour__gte=0, send_hour__lte=23),
                name="establishment_send_hour_0_23",
            ),
            models.CheckConstraint(
                condition=models.Q(reminder_interval_days__gte=1),
                name="establishment_interval_gte_1",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)
