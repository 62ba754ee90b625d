import datetime as dt
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Count
from django.utils import timezone, translation

from debtors.models import DebtorAccount, SendMode
from establishments.models import Establishment
from invoicing.demo import demo_data
from invoicing.models import Invoice, InvoiceLine, InvoiceStatus, Payment

pytestmark = pytest.mark.django_db

MODELS = (Establishment, DebtorAccount, Invoice, InvoiceLine, Payment)


def seed() -> str:
    with translation.override("en"):
        out = StringIO()
        call_command("seed_demo", stdout=out)
    return out.getvalue()


def snapshot() -> dict:
    return {
        model.__name__: sorted(
            tuple(sorted((k, str(v)) for k, v in row.items())) for row in model.objects.values()
        )
        for model in MODELS
    }


def test_demo_data_is_deterministic():
    anchor = dt.date(2026, 12, 4)
    assert demo_data(anchor=anchor) == demo_data(anchor=anchor)


def test_seed_demo_creates_the_demo():
    out = seed()
    today = timezone.now().date()

    paris = Establishment.objects.get(code="paris-lumiere")
    cancun = Establishment.objects.get(code="cancun-mar")
    assert (paris.name, paris.time_zone, paris.language, paris.currency) == (
        "Hôtel Lumière Paris",
        "Europe/Paris",
        "fr",
        "EUR",
    )
    assert (cancun.name, cancun.time_zone, cancun.language, cancun.currency) == (
        "Hotel Mar Azul Cancún",
        "America/Cancun",
        "es",
        "MXN",
    )
    for establishment in (paris, cancun):
        assert establishment.auto_send_pending_invoices
        assert establishment.send_hour == 0
        assert establishment.debtors.count() >= 30
        assert establishment.debtors.filter(language="en").exists()
        assert set(establishment.invoices.values_list("currency", flat=True)) == {
            establishment.currency
        }
    assert paris.minimum_amount == Decimal("50.00")

    assert 250 <= Invoice.objects.count() <= 400
    assert all(
        email.endswith(".example")
        for email in DebtorAccount.objects.exclude(contact_email="").values_list(
            "contact_email", flat=True
        )
    )

    invoices = Invoice.objects.with_amounts()
    by_status = dict(invoices.values_list("status").annotate(n=Count("id")).order_by())
    assert by_status[InvoiceStatus.REVIEW] >= 5
    assert by_status[InvoiceStatus.PAID] >= 20
    assert invoices.filter(disputed=True).count() >= 3
    partially_paid = invoices.filter(status=InvoiceStatus.OPEN, amount_paid__gt=0)
    assert partially_paid.count() >= 20
    for invoice in invoices.filter(status=InvoiceStatus.PAID):
        assert invoice.amount_due == 0
    pending = Invoice.objects.pending()
    overdue_days = [(today - i.due_date).days for i in pending if i.due_date < today]
    assert overdue_days and min(overdue_days) >= 1 and max(overdue_days) <= 120
    assert pending.filter(due_date__gte=today).exists()

    # One misconfigured account of each kind, each with something pending to be skipped for.
    pending_debtors = DebtorAccount.objects.filter(invoices__in=Invoice.objects.pending())
    assert pending_debtors.filter(send_mode=SendMode.NONE).exists()
    assert pending_debtors.filter(send_mode=SendMode.EMAIL, contact_email="").exists()
    assert pending_debtors.filter(contact_email__contains="@@").exists()
    assert pending_debtors.filter(paused_until__gt=today).exclude(pause_reason="").exists()
    below = [
        d
        for d in pending_debtors.filter(establishment=paris).distinct()
        if sum(i.amount_due for i in Invoice.objects.pending().filter(debtor=d))
        < paris.minimum_amount
    ]
    assert below

    user = get_user_model().objects.get(username="demo")
    assert user.is_superuser and user.check_password("demo-billing-2026")
    assert f"Demo data (dates relative to {today}):" in out
    assert "Admin login: user demo, password demo-billing-2026" in out


def test_seed_demo_twice_duplicates_nothing():
    seed()
    before = snapshot()

    out = seed()

    assert snapshot() == before
    assert "establishments: 0 created, 0 updated, 2 unchanged" in out
    assert "debtors:        0 created, 0 updated, 64 unchanged" in out
    assert "invoices and payments were left as they are" in out
    assert get_user_model().objects.filter(username="demo").count() == 1


def test_seed_demo_keeps_the_first_anchor():
    seed()
    paris = Establishment.objects.get(code="paris-lumiere")
    first_seeded = timezone.now() - dt.timedelta(days=3)
    Establishment.objects.filter(pk=paris.pk).update(created_at=first_seeded)
    invoices_before = snapshot()["Invoice"]

    out = seed()

    assert f"dates relative to {first_seeded.date()}" in out
    assert snapshot()["Invoice"] == invoices_before


@pytest.mark.django_db
def test_seed_creates_the_accountants_of_the_pages(django_user_model):

    from establishments.selectors import establishment_list_for_user

    call_command("seed_demo", stdout=StringIO())
    call_command("seed_demo", stdout=StringIO())
    accountant = django_user_model.objects.get(username="comptable")
    assert accountant.check_password("demo-billing-2026")
    assert accountant.has_perm("debtors.change_debtoraccount")
    assert [e.code for e in establishment_list_for_user(user=accountant)] == ["paris-lumiere"]
    direction = django_user_model.objects.get(username="direction")
    assert not direction.has_perm("debtors.change_debtoraccount")
    assert establishment_list_for_user(user=direction).count() == 2
