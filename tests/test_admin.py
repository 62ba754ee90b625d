"""The admin of every model, driven through the real admin views as a superuser."""

import datetime as dt
from decimal import Decimal

import factory
import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.messages import constants as message_levels
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from debtors.models import DebtorAccount
from dispatch.models import (
    SENDABLE_STATUSES,
    Dispatch,
    DispatchEvent,
    DispatchStatus,
    EventKind,
    Run,
    RunTrigger,
    SkippedDebtor,
    SkipReason,
)
from establishments.models import Establishment
from invoicing.models import Invoice, InvoiceLine, InvoiceStatus, Payment
from tests.factories import (
    DebtorAccountFactory,
    DispatchFactory,
    DispatchItemFactory,
    EstablishmentFactory,
    InvoiceFactory,
    PaymentFactory,
)

pytestmark = pytest.mark.django_db


class _RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Run

    establishment = factory.SubFactory(EstablishmentFactory)
    business_date = dt.date(2026, 12, 3)
    trigger = RunTrigger.SCHEDULE
    finished_at = factory.LazyFunction(timezone.now)
    planned_count = 1
    sent_count = 1
    skipped_count = 1
    skipped_by_reason = factory.LazyFunction(lambda: {SkipReason.MISSING_EMAIL: 1})


class _SkippedDebtorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SkippedDebtor

    run = factory.SubFactory(_RunFactory)
    debtor = factory.SubFactory(
        DebtorAccountFactory, establishment=factory.SelfAttribute("..run.establishment")
    )
    reason = SkipReason.MISSING_EMAIL
    invoice_count = 1
    amount_due = Decimal("110.00")


class _DispatchEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DispatchEvent

    dispatch = factory.SubFactory(DispatchFactory)
    kind = EventKind.PLANNED
    message = "planned by the nightly run"


# Every model with a ModelAdmin of its own; inline-only models (lines, items) are covered
# through their parents' change forms.
REGISTERED = [
    Establishment,
    DebtorAccount,
    Invoice,
    Payment,
    Run,
    Dispatch,
    SkippedDebtor,
    DispatchEvent,
]
ADDABLE = {Establishment, DebtorAccount, Invoice, Payment}


def _populate(count: int) -> Establishment:
    """`count` debtors of one establishment, each with a row of every model."""
    establishment = EstablishmentFactory()
    for _ in range(count):
        invoice = InvoiceFactory(debtor__establishment=establishment)
        PaymentFactory(invoice=invoice)
        run = _RunFactory(establishment=establishment)
        dispatch = DispatchFactory(debtor=invoice.debtor, run=run)
        DispatchItemFactory(dispatch=dispatch, invoice=invoice)
        _DispatchEventFactory(dispatch=dispatch)
        _SkippedDebtorFactory(run=run, debtor=invoice.debtor)
    return establishment


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def _form_data(response) -> dict:
    """The POST data a browser would send back unchanged from an admin add/change page."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms.append(inline.formset.management_form)
        forms.extend(inline.formset.forms)
    data = {}
    for form in forms:
        for bound in form:
            value = bound.value()
            if value is None or value is False:
                continue
            if value is True:
                data[bound.html_name] = "on"
            elif isinstance(value, list | tuple):
                data[bound.html_name] = [str(v) for v in value]
            else:
                data[bound.html_name] = str(value)
    return data


def _messages(response) -> list[tuple[int, str]]:
    return [(m.level, str(m)) for m in get_messages(response.wsgi_request)]


# --- every model ------------------------------------------------------------------------


def test_every_model_of_the_apps_is_registered():
    for model in REGISTERED:
        assert admin.site.is_registered(model), model


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m._meta.model_name)
def test_changelist_lists_the_rows(admin_client, model):
    for _ in range(3):
        _populate(1)

    response = admin_client.get(_url(model, "changelist"))

    assert response.status_code == 200
    changelist = response.context["cl"]
    assert changelist.result_count == model.objects.count() >= 3
    assert len(changelist.result_list) == changelist.result_count


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m._meta.model_name)
def test_change_form_opens(admin_client, model):
    _populate(2)
    obj = model.objects.first()

    response = admin_client.get(_url(model, "change", obj.pk))

    assert response.status_code == 200
    assert response.context["original"].pk == obj.pk


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m._meta.model_name)
def test_add_form_opens_only_where_adding_is_allowed(admin_client, model):
    response = admin_client.get(_url(model, "add"))

    assert response.status_code == (200 if model in ADDABLE else 403)


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m._meta.model_name)
def test_changelist_queries_do_not_grow_with_rows(admin_client, model):
    url = _url(model, "changelist")
    for _ in range(2):
        _populate(1)
    admin_client.get(url)  # session, content types and permissions cached from here on
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(url).status_code == 200

    for _ in range(15):
        _populate(1)
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(url)
    assert response.context["cl"].result_count >= 17

    assert len(many.captured_queries) == len(few.captured_queries)


SEARCHES = [
    (Establishment, lambda: EstablishmentFactory(code="grand-lyon", name="Grand Lyon"), "lyon"),
    (DebtorAccount, lambda: DebtorAccountFactory(name="Voyages Soleil"), "soleil"),
    (DebtorAccount, lambda: DebtorAccountFactory(account_number="ACME-42"), "acme-42"),
    (DebtorAccount, lambda: DebtorAccountFactory(contact_email="ap@acme.example"), "acme.ex"),
    (Invoice, lambda: InvoiceFactory(number="FA-2026-0077"), "2026-0077"),
    (Invoice, lambda: InvoiceFactory(debtor__name="Voyages Soleil"), "soleil"),
    (Invoice, lambda: InvoiceFactory(debtor__account_number="ACME-42"), "ACME-42"),
    (Payment, lambda: PaymentFactory(reference="VIR-998877"), "998877"),
    (Payment, lambda: PaymentFactory(invoice__number="FA-2026-0077"), "FA-2026-0077"),
    (Run, lambda: _RunFactory(establishment__code="grand-lyon"), "grand-lyon"),
    (Dispatch, lambda: DispatchFactory(debtor__name="Voyages Soleil"), "soleil"),
    (Dispatch, lambda: DispatchFactory(business_date=dt.date(2026, 7, 14)), "2026-07-14"),
    (SkippedDebtor, lambda: _SkippedDebtorFactory(debtor__name="Voyages Soleil"), "soleil"),
    (
        DispatchEvent,
        lambda: _DispatchEventFactory(dispatch__debtor__name="Voyages Soleil"),
        "soleil",
    ),
]


@pytest.mark.parametrize(
    ("model", "make", "query"),
    SEARCHES,
    ids=[f"{m._meta.model_name}-{q}" for m, _, q in SEARCHES],
)
def test_search_finds_the_row_and_only_it(admin_client, model, make, query):
    _populate(3)
    wanted = make()

    response = admin_client.get(_url(model, "changelist"), {"q": query})

    assert response.status_code == 200
    assert [obj.pk for obj in response.context["cl"].result_list] == [wanted.pk]


# --- establishments ---------------------------------------------------------------------


def test_preferences_fieldset_holds_the_switch(admin_client):
    establishment = EstablishmentFactory()

    response = admin_client.get(
        _url(Establishment, "change", establishment.pk), headers={"accept-language": "en"}
    )

    fieldsets = {str(fs.name): fs for fs in response.context["adminform"]}
    preferences = fieldsets["Preferences › Financial information"]
    assert "nightly run" in str(preferences.description)
    assert list(preferences.fields) == [
        "auto_send_pending_invoices",
        "review_mode",
        "reminder_interval_days",
        "minimum_amount",
        "send_hour",
    ]
    assert "Automatic sending of pending invoices" in response.text


@pytest.mark.parametrize("initial", [False, True])
def test_preference_toggle_is_saved_from_the_change_form(admin_client, initial):
    establishment = EstablishmentFactory(auto_send_pending_invoices=initial)
    url = _url(Establishment, "change", establishment.pk)
    data = _form_data(admin_client.get(url))
    if initial:
        data.pop("auto_send_pending_invoices")
    else:
        data["auto_send_pending_invoices"] = "on"
    data["send_hour"] = "4"

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    establishment.refresh_from_db()
    assert establishment.auto_send_pending_invoices is (not initial)
    assert establishment.send_hour == 4
    # Everything else came back unchanged.
    assert establishment.minimum_amount == Decimal("0.01")
    assert establishment.time_zone == "Europe/Paris"
    entry = LogEntry.objects.get(object_id=str(establishment.pk))
    assert "auto_send_pending_invoices" not in entry.get_change_message()  # labels, not names


def test_changelist_shows_and_filters_the_switch(admin_client):
    on = EstablishmentFactory(auto_send_pending_invoices=True)
    EstablishmentFactory(auto_send_pending_invoices=False)
    url = _url(Establishment, "changelist")

    response = admin_client.get(url, {"auto_send_pending_invoices__exact": "1"})

    assert [e.pk for e in response.context["cl"].result_list] == [on.pk]
    assert "icon-yes.svg" in response.text


@pytest.mark.parametrize(
    ("action", "enabled", "text"),
    [
        ("enable_auto_send", True, "Automatic sending enabled for 2 establishments."),
        ("disable_auto_send", False, "Automatic sending disabled for 2 establishments."),
    ],
)
def test_switch_actions(admin_client, action, enabled, text):
    targets = [EstablishmentFactory(auto_send_pending_invoices=not enabled) for _ in range(2)]
    already = EstablishmentFactory(auto_send_pending_invoices=enabled)
    untouched = EstablishmentFactory(auto_send_pending_invoices=not enabled)

    response = admin_client.post(
        _url(Establishment, "changelist"),
        {
            "action": action,
            "_selected_action": [e.pk for e in [*targets, already]],
            "index": "0",
        },
        headers={"accept-language": "en"},
    )

    assert response.status_code == 302
    assert _messages(response) == [(message_levels.SUCCESS, text)]
    for establishment in targets:
        establishment.refresh_from_db()
        assert establishment.auto_send_pending_invoices is enabled
        assert LogEntry.objects.filter(object_id=str(establishment.pk)).count() == 1
    untouched.refresh_from_db()
    assert untouched.auto_send_pending_invoices is not enabled
    # Only real changes are logged.
    assert not LogEntry.objects.filter(object_id=str(already.pk)).exists()


# --- debtors ----------------------------------------------------------------------------


def _debtor_change(admin_client, debtor, **changes):
    url = _url(DebtorAccount, "change", debtor.pk)
    data = _form_data(admin_client.get(url))
    data.update(changes)
    return admin_client.post(url, data)


def test_debtor_form_rejects_an_invalid_email(admin_client):
    debtor = DebtorAccountFactory(contact_email="ap@agency.example")

    response = _debtor_change(admin_client, debtor, contact_email="ap at agency")

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["contact_email"]
    debtor.refresh_from_db()
    assert debtor.contact_email == "ap@agency.example"


def test_debtor_form_accepts_a_valid_email(admin_client):
    debtor = DebtorAccountFactory(contact_email="ap@agency.example")

    response = _debtor_change(admin_client, debtor, contact_email="billing@agency.example")

    assert response.status_code == 302
    debtor.refresh_from_db()
    assert debtor.contact_email == "billing@agency.example"


def test_debtor_with_an_imported_bad_email_must_be_fixed_to_save(admin_client):
    # Imports may store a bad address (reported by the run as invalid_email).
    debtor = DebtorAccountFactory(contact_email="not an address")

    response = _debtor_change(admin_client, debtor, name="Renamed")

    assert response.status_code == 200
    assert "contact_email" in response.context["adminform"].form.errors


def test_email_send_mode_needs_an_email(admin_client):
    debtor = DebtorAccountFactory(send_mode="email")

    response = _debtor_change(admin_client, debtor, contact_email="")

    assert response.status_code == 200
    assert "contact_email" in response.context["adminform"].form.errors


def test_pause_needs_a_reason(admin_client):
    debtor = DebtorAccountFactory()

    refused = _debtor_change(admin_client, debtor, paused_until="2026-12-31", pause_reason=" ")
    saved = _debtor_change(
        admin_client, debtor, paused_until="2026-12-31", pause_reason="Litigation"
    )

    assert refused.status_code == 200
    assert list(refused.context["adminform"].form.errors) == ["pause_reason"]
    assert saved.status_code == 302
    debtor.refresh_from_db()
    assert (debtor.paused_until, debtor.pause_reason) == (dt.date(2026, 12, 31), "Litigation")


def test_paused_filter(admin_client):
    today = timezone.localdate()
    paused = DebtorAccountFactory(paused_until=today, pause_reason="Litigation")
    ended = DebtorAccountFactory(paused_until=today - dt.timedelta(days=1), pause_reason="Old")
    never = DebtorAccountFactory()
    url = _url(DebtorAccount, "changelist")

    yes = admin_client.get(url, {"paused": "yes"}).context["cl"].result_list
    no = admin_client.get(url, {"paused": "no"}).context["cl"].result_list

    assert [d.pk for d in yes] == [paused.pk]
    assert {d.pk for d in no} == {ended.pk, never.pk}


def test_debtor_add_form_creates_an_account(admin_client):
    establishment = EstablishmentFactory()

    response = admin_client.post(
        _url(DebtorAccount, "add"),
        {
            "establishment": establishment.pk,
            "account_number": "C-100",
            "name": "Agence Nouvelle",
            "send_mode": "email",
            "contact_email": "compta@nouvelle.example",
            "country": "FR",
        },
    )

    assert response.status_code == 302
    debtor = DebtorAccount.objects.get(account_number="C-100")
    assert (debtor.establishment, debtor.contact_email) == (
        establishment,
        "compta@nouvelle.example",
    )


# --- invoicing --------------------------------------------------------------------------


def _invoice_with_line() -> Invoice:
    invoice = InvoiceFactory(
        with_line=False,
        net_total=Decimal("200.00"),
        vat_total=Decimal("20.00"),
        gross_total=Decimal("220.00"),
    )
    InvoiceLine.objects.create(
        invoice=invoice,
        position=1,
        description="Chambre double",
        quantity=Decimal("2"),
        unit_price=Decimal("100.00"),
        vat_rate=Decimal("10.00"),
        net_amount=Decimal("200.00"),
        vat_amount=Decimal("20.00"),
    )
    return invoice


def test_invoice_changelist_shows_the_amount_due(admin_client):
    invoice = InvoiceFactory(gross=Decimal("110.00"))
    PaymentFactory(invoice=invoice, amount=Decimal("40.00"))

    response = admin_client.get(_url(Invoice, "changelist"))

    [row] = response.context["cl"].result_list
    assert row.amount_due == Decimal("70.00")
    assert "70,00" in response.text  # French number format


def test_invoice_totals_are_read_only(admin_client):
    invoice = _invoice_with_line()

    response = admin_client.get(_url(Invoice, "change", invoice.pk))

    form = response.context["adminform"].form
    for name in ["net_total", "vat_total", "gross_total"]:
        assert name not in form.fields
    assert "220,00" in response.text


def test_invoice_saved_with_an_edited_line_is_recalculated(admin_client):
    invoice = _invoice_with_line()
    url = _url(Invoice, "change", invoice.pk)
    data = _form_data(admin_client.get(url))
    assert data["lines-0-quantity"] == "2.000"
    data["lines-0-quantity"] = "3"

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    line = invoice.lines.get()
    assert (line.net_amount, line.vat_amount) == (Decimal("300.00"), Decimal("30.00"))
    invoice.refresh_from_db()
    assert (invoice.net_total, invoice.vat_total, invoice.gross_total) == (
        Decimal("300.00"),
        Decimal("30.00"),
        Decimal("330.00"),
    )


def test_invoice_paid_through_the_payment_inline_becomes_paid(admin_client):
    invoice = _invoice_with_line()
    url = _url(Invoice, "change", invoice.pk)
    data = _form_data(admin_client.get(url))
    data.update(
        {
            "payments-TOTAL_FORMS": "1",
            "payments-0-reference": "VIR-1",
            "payments-0-date": "2026-11-20",
            "payments-0-amount": "220.00",
        }
    )

    response = admin_client.post(url, data)

    assert response.status_code == 302
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert Invoice.objects.with_amounts().get(pk=invoice.pk).amount_due == Decimal("0.00")


def test_invoice_add_form_with_lines(admin_client):
    debtor = DebtorAccountFactory()

    response = admin_client.post(
        _url(Invoice, "add"),
        {
            "establishment": debtor.establishment.pk,
            "debtor": debtor.pk,
            "number": "FA-NEW-1",
            "issue_date": "2026-11-01",
            "due_date": "2026-12-01",
            "currency": "EUR",
            "status": "open",
            "lines-TOTAL_FORMS": "2",
            "lines-INITIAL_FORMS": "0",
            "lines-0-position": "1",
            "lines-0-description": "Chambre",
            "lines-0-quantity": "1",
            "lines-0-unit_price": "90.00",
            "lines-0-vat_rate": "10",
            "lines-1-position": "2",
            "lines-1-description": "Petit-déjeuner",
            "lines-1-quantity": "2",
            "lines-1-unit_price": "15.00",
            "lines-1-vat_rate": "10",
            "payments-TOTAL_FORMS": "0",
            "payments-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    invoice = Invoice.objects.get(number="FA-NEW-1")
    assert (invoice.net_total, invoice.vat_total, invoice.gross_total) == (
        Decimal("120.00"),
        Decimal("12.00"),
        Decimal("132.00"),
    )


def test_invoice_form_refuses_a_debtor_of_another_establishment(admin_client):
    debtor = DebtorAccountFactory()
    other = EstablishmentFactory()

    response = admin_client.post(
        _url(Invoice, "add"),
        {
            "establishment": other.pk,
            "debtor": debtor.pk,
            "number": "FA-X",
            "issue_date": "2026-11-01",
            "due_date": "2026-12-01",
            "currency": "EUR",
            "status": "open",
            "disputed": "on",
            "lines-TOTAL_FORMS": "0",
            "lines-INITIAL_FORMS": "0",
            "payments-TOTAL_FORMS": "0",
            "payments-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 200
    assert set(response.context["adminform"].form.errors) == {"debtor", "dispute_reason"}
    assert not Invoice.objects.filter(number="FA-X").exists()


def test_payment_admin_recalculates_the_invoice(admin_client):
    invoice = InvoiceFactory(gross=Decimal("110.00"))

    response = admin_client.post(
        _url(Payment, "add"),
        {"invoice": invoice.pk, "reference": "VIR-2", "date": "2026-11-20", "amount": "110.00"},
    )

    assert response.status_code == 302
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID


# --- dispatch ---------------------------------------------------------------------------


def test_outbox_is_read_only(admin_client):
    dispatch = DispatchFactory()

    response = admin_client.get(_url(Dispatch, "change", dispatch.pk))

    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    assert admin_client.post(_url(Dispatch, "delete", dispatch.pk)).status_code == 403
    assert "delete_selected" not in admin.site._registry[Dispatch].get_actions(
        response.wsgi_request
    )


def test_dispatch_change_form_shows_items_and_events(admin_client):
    item = DispatchItemFactory()
    _DispatchEventFactory(dispatch=item.dispatch, message="claimed by worker-7")

    response = admin_client.get(_url(Dispatch, "change", item.dispatch.pk))

    assert item.invoice.number in response.text
    assert "claimed by worker-7" in response.text


def test_run_shows_its_skips(admin_client):
    skip = _SkippedDebtorFactory(debtor__name="Agence Sans Email")

    response = admin_client.get(_url(Run, "change", skip.run.pk))

    assert "Agence Sans Email" in response.text


def test_retry_now_requeues_failed_dispatches_and_reports_the_others(admin_client):
    failed = DispatchFactory(status=DispatchStatus.FAILED, last_error="550 mailbox unavailable")
    sent = DispatchFactory(status=DispatchStatus.SENT, sent_at=timezone.now())

    response = admin_client.post(
        _url(Dispatch, "changelist"),
        {"action": "retry_now", "_selected_action": [failed.pk, sent.pk], "index": "0"},
        headers={"accept-language": "en"},
    )

    assert response.status_code == 302
    failed.refresh_from_db()
    sent.refresh_from_db()
    assert failed.status in SENDABLE_STATUSES
    assert sent.status == DispatchStatus.SENT
    (error_level, error_text), (success_level, success_text) = _messages(response)
    assert error_level == message_levels.ERROR
    assert error_text.startswith(f"{sent.idempotency_key} was not retried:")
    assert (success_level, success_text) == (
        message_levels.SUCCESS,
        "1 dispatch queued for a new attempt.",
    )


def _new_invoice_post(debtor, number):
    return {
        "establishment": debtor.establishment.pk,
        "debtor": debtor.pk,
        "number": number,
        "issue_date": "2026-11-01",
        "due_date": "2026-12-01",
        "currency": "EUR",
        "lines-TOTAL_FORMS": "1",
        "lines-INITIAL_FORMS": "0",
        "lines-0-position": "1",
        "lines-0-description": "Chambre",
        "lines-0-quantity": "1",
        "lines-0-unit_price": "90.00",
        "lines-0-vat_rate": "10",
        "payments-TOTAL_FORMS": "0",
        "payments-INITIAL_FORMS": "0",
    }


@pytest.mark.parametrize(("review_mode", "expected"), [(True, "review"), (False, "open")])
def test_a_new_invoice_follows_the_review_mode(admin_client, review_mode, expected):
    debtor = DebtorAccountFactory(establishment__review_mode=review_mode)
    add_page = admin_client.get(_url(Invoice, "add"))
    assert 'name="status"' not in add_page.content.decode()
    response = admin_client.post(_url(Invoice, "add"), _new_invoice_post(debtor, "FA-R-1"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Invoice.objects.get(number="FA-R-1").status == expected


def test_the_approve_action_releases_invoices_from_review(admin_client):
    in_review = InvoiceFactory(status=InvoiceStatus.REVIEW)
    already_open = InvoiceFactory(status=InvoiceStatus.OPEN)
    response = admin_client.post(
        _url(Invoice, "changelist"),
        {
            "action": "approve_invoices",
            "_selected_action": [in_review.pk, already_open.pk],
        },
        follow=True,
    )
    in_review.refresh_from_db()
    assert in_review.status == InvoiceStatus.OPEN
    texts = [str(m) for m in response.context["messages"]]
    assert any(already_open.number in t for t in texts)
    assert len(texts) == 2


def test_skipped_debtors_list_accounts_to_fix_first_and_filters_them(admin_client):
    run = _RunFactory()
    cadence = _SkippedDebtorFactory(
        run=run, reason=SkipReason.INTERVAL_NOT_REACHED, debtor__name="Aaa Cadence"
    )
    to_fix = _SkippedDebtorFactory(
        run=run, reason=SkipReason.INVALID_EMAIL, debtor__name="Zzz Bad Address"
    )

    page = admin_client.get(_url(SkippedDebtor, "changelist")).text
    assert page.index("Zzz Bad Address") < page.index("Aaa Cadence")
    fix_url = reverse("admin:debtors_debtoraccount_change", args=[to_fix.debtor_id])
    assert fix_url in page

    only_fix = admin_client.get(_url(SkippedDebtor, "changelist"), {"needs_fixing": "yes"}).text
    assert "Zzz Bad Address" in only_fix and "Aaa Cadence" not in only_fix
    no_fix = admin_client.get(_url(SkippedDebtor, "changelist"), {"needs_fixing": "no"}).text
    assert cadence.debtor.name in no_fix and "Zzz Bad Address" not in no_fix
