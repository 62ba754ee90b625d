import datetime as dt
from decimal import Decimal

import factory

from debtors.models import DebtorAccount, SendMode
from dispatch.models import Channel, Dispatch, DispatchItem, DispatchStatus
from establishments.models import Establishment
from invoicing.models import Invoice, InvoiceLine, InvoiceStatus, Payment


class EstablishmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Establishment
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"hotel-{n}")
    name = factory.Sequence(lambda n: f"Hôtel {n}")
    legal_name = factory.LazyAttribute(lambda o: f"{o.name} SAS")
    address_line1 = "12 rue de la Paix"
    postal_code = "75002"
    city = "Paris"
    country = "FR"
    siret = "73282932000074"
    vat_number = "FR44732829320"
    finance_email = "compta@hotel.example"
    phone = "+33 1 23 45 67 89"
    iban = "FR7630006000011234567890189"
    bic = "AGRIFRPP"
    time_zone = "Europe/Paris"
    language = "fr"
    currency = "EUR"
    auto_send_pending_invoices = True
    send_hour = 2


class DebtorAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DebtorAccount

    establishment = factory.SubFactory(EstablishmentFactory)
    account_number = factory.Sequence(lambda n: f"D{n:05d}")
    name = factory.Sequence(lambda n: f"Agence {n}")
    contact_email = factory.Sequence(lambda n: f"ap{n}@agency.example")
    send_mode = SendMode.EMAIL
    language = ""


class InvoiceFactory(factory.django.DjangoModelFactory):
    """An invoice of one line; `gross` sets its gross total (net + 10% VAT when divisible)."""

    class Meta:
        model = Invoice
        skip_postgeneration_save = True

    class Params:
        gross = Decimal("110.00")

    debtor = factory.SubFactory(DebtorAccountFactory)
    establishment = factory.LazyAttribute(lambda o: o.debtor.establishment)
    number = factory.Sequence(lambda n: f"F{n:06d}")
    issue_date = dt.date(2026, 11, 1)
    due_date = factory.LazyAttribute(lambda o: o.issue_date + dt.timedelta(days=30))
    currency = "EUR"
    status = InvoiceStatus.OPEN
    net_total = factory.LazyAttribute(lambda o: o.gross)
    vat_total = Decimal("0.00")
    gross_total = factory.LazyAttribute(lambda o: o.gross)

    @factory.post_generation
    def with_line(obj, create, extracted, **kwargs):
        if not create or extracted is False:
            return
        InvoiceLine.objects.create(
            invoice=obj,
            position=1,
            description="Hébergement",
            quantity=Decimal("1"),
            unit_price=obj.net_total,
            vat_rate=Decimal("0"),
            net_amount=obj.net_total,
            vat_amount=obj.vat_total,
        )


class PaymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Payment

    invoice = factory.SubFactory(InvoiceFactory)
    reference = factory.Sequence(lambda n: f"PAY{n:06d}")
    date = dt.date(2026, 11, 15)
    amount = Decimal("10.00")


class DispatchFactory(factory.django.DjangoModelFactory):
    """A planned letter. Its idempotency key follows the planner's scheme, so two dispatches
    for the same debtor need two business dates, as in production."""

    class Meta:
        model = Dispatch

    debtor = factory.SubFactory(DebtorAccountFactory)
    establishment = factory.LazyAttribute(lambda o: o.debtor.establishment)
    channel = Channel.EMAIL
    business_date = dt.date(2026, 12, 3)
    idempotency_key = factory.LazyAttribute(
        lambda o: f"letter:{o.debtor.pk}:{o.business_date.isoformat()}"
    )
    status = DispatchStatus.PENDING
    recipient = factory.LazyAttribute(lambda o: o.debtor.contact_email)
    language = factory.LazyAttribute(lambda o: o.debtor.effective_language)
    currency = factory.LazyAttribute(lambda o: o.establishment.currency)
    total_due = Decimal("110.00")


class DispatchItemFactory(factory.django.DjangoModelFactory):
    """An invoice covered by a dispatch; by default its whole gross total is due and its
    days overdue are counted from the dispatch's business date."""

    class Meta:
        model = DispatchItem

    dispatch = factory.SubFactory(DispatchFactory)
    invoice = factory.SubFactory(InvoiceFactory, debtor=factory.SelfAttribute("..dispatch.debtor"))
    amount_due = factory.LazyAttribute(lambda o: o.invoice.gross_total)
    days_overdue = factory.LazyAttribute(
        lambda o: max(0, (o.dispatch.business_date - o.invoice.due_date).days)
    )
