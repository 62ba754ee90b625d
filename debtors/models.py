from decimal import Decimal

from django.db import models
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from establishments.models import Language


class SendMode(models.TextChoices):
    """How a debtor is told what it owes.

    E-invoicing modes are added as one value per provider, each tied to an integration of
    the debtor's establishment; the field is sized for those values already.
    """

    NONE = "none", _("None")
    EMAIL = "email", _("Email")
    # Paired with `DebtorAccount.integration`; forms show the integration's name instead.
    EINVOICING = "einvoicing", _("E-invoicing")


class DebtorAccountQuerySet(models.QuerySet):
    def for_establishment(self, establishment):
        return self.filter(establishment=establishment)


class DebtorAccount(models.Model):
    """A credit account: a company, travel agency or tour operator billed on account."""

    establishment = models.ForeignKey(
        "establishments.Establishment",
        on_delete=models.PROTECT,
        related_name="debtors",
        verbose_name=_("establishment"),
    )
    account_number = models.CharField(_("account number"), max_length=40)
    name = models.CharField(_("name"), max_length=200)
    contact_email = models.CharField(
        # Not an EmailField: imported data may hold a bad address, and the run must report
        # it as `invalid_email` rather than the import dropping it. Forms validate it.
        _("contact email"),
        max_length=254,
        blank=True,
    )
    send_mode = models.CharField(
        _("send mode"), max_length=40, choices=SendMode.choices, default=SendMode.NONE
    )
    integration = models.ForeignKey(
        "dispatch.Integration",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="debtors",
        verbose_name=_("e-invoicing integration"),
    )
    language = models.CharField(
        _("language"),
        max_length=2,
        choices=Language.choices,
        blank=True,
        help_text=_("Empty: the establishment's language."),
    )
    address_line1 = models.CharField(_("address"), max_length=200, blank=True)
    address_line2 = models.CharField(_("address (continued)"), max_length=200, blank=True)
    postal_code = models.CharField(_("postal code"), max_length=20, blank=True)
    city = models.CharField(_("city"), max_length=100, blank=True)
    country = models.CharField(_("country"), max_length=2, blank=True, help_text="ISO 3166-1")
    siret = models.CharField(_("SIRET / SIREN"), max_length=14, blank=True)
    vat_number = models.CharField(_("VAT number"), max_length=20, blank=True)
    einvoicing_id = models.CharField(
        _("e-invoicing recipient id"),
        max_length=100,
        blank=True,
        help_text=_("SIREN/SIRET, Peppol id or the platform's client code."),
    )
    credit_limit = models.DecimalField(
        _("credit limit"), max_digits=12, decimal_places=2, null=True, blank=True
    )
    paused_until = models.DateField(
        _("reminders paused until"),
        null=True,
        blank=True,
        help_text=_("No letter is sent up to and including this date."),
    )
    pause_reason = models.CharField(_("pause reason"), max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DebtorAccountQuerySet.as_manager()
    # Who changed what and when, shown on the accountants' detail page.
    history = HistoricalRecords(excluded_fields=["created_at", "updated_at"])

    class Meta:
        verbose_name = _("debtor account")
        verbose_name_plural = _("debtor accounts")
        ordering = ["establishment", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["establishment", "account_number"], name="debtor_unique_account_number"
            ),
            models.CheckConstraint(
                condition=models.Q(credit_limit__isnull=True)
                | models.Q(credit_limit__gte=Decimal("0")),
                name="debtor_credit_limit_gte_0",
            ),
            models.CheckConstraint(
                condition=models.Q(paused_until__isnull=True) | ~models.Q(pause_reason=""),
                name="debtor_pause_has_reason",
            ),
            models.CheckConstraint(
                condition=models.Q(send_mode="einvoicing", integration__isnull=False)
                | (~models.Q(send_mode="einvoicing") & models.Q(integration__isnull=True)),
                name="debtor_einvoicing_has_integration",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.account_number})"

    @property
    def effective_language(self) -> str:
        return self.language or self.establishment.language
