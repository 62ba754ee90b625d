"""The accountants' debtor pages: list, detail, actions, access and history."""

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation
from pypdf import PdfReader

from debtors.models import DebtorAccount, SendMode
from debtors.selectors import debtor_aging, debtor_list_annotated
from dispatch.models import Channel, Dispatch, DispatchStatus, Integration, Provider
from invoicing.models import Invoice
from tests.factories import (
    DebtorAccountFactory,
    EstablishmentFactory,
    InvoiceFactory,
    PaymentFactory,
)

pytestmark = pytest.mark.django_db

TODAY = timezone.now().astimezone(dt.UTC).date()


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


def _user(username: str, group: str, *establishments) -> User:
    user = User.objects.create_user(username, password="pw")
    user.groups.add(Group.objects.get(name=group))
    for establishment in establishments:
        establishment.members.add(user)
    return user


def _client(client, user):
    client.force_login(user)
    # LocaleMiddleware picks the language per request; English source texts are checked.
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


@pytest.fixture
def hotel():
    # UTC so that the test's date is the establishment's business date.
    return EstablishmentFactory(time_zone="UTC", minimum_amount=Decimal("0"))


@pytest.fixture
def other_hotel():
    return EstablishmentFactory(time_zone="UTC")


@pytest.fixture
def accountant(hotel):
    return _user("compta", "Comptables", hotel)


@pytest.fixture
def director(hotel):
    return _user("direction", "Direction", hotel)


@pytest.fixture
def client_(client, accountant):
    return _client(client, accountant)


@pytest.fixture
def debtor(hotel):
    return DebtorAccountFactory(
        establishment=hotel,
        name="Agence Soleil",
        account_number="411SOL",
        contact_email="ap@soleil.example",
        send_mode=SendMode.EMAIL,
    )


def _invoice(debtor, *, days_overdue: int, gross="110.00", **kwargs):
    due = TODAY - dt.timedelta(days=days_overdue)
    return InvoiceFactory(
        debtor=debtor,
        issue_date=due - dt.timedelta(days=30),
        due_date=due,
        gross=Decimal(gross),
        **kwargs,
    )


def _detail(debtor) -> str:
    return reverse("billing:debtor_detail", args=[debtor.pk])


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- list --------------------------------------------------------------------------------


def test_list_searches_name_account_and_email(client_, hotel, debtor):
    DebtorAccountFactory(establishment=hotel, name="Voyages Lune", contact_email="x@lune.example")
    url = reverse("billing:debtor_list")

    for q in ("soleil", "411sol", "AP@SOLEIL"):
        response = client_.get(url, {"q": q})
        assert [d.name for d in response.context["page"].object_list] == ["Agence Soleil"], q
    assert response.context["count"] == 1


def test_list_shows_only_the_users_establishments(client_, debtor, other_hotel):
    DebtorAccountFactory(establishment=other_hotel, name="Elsewhere")

    response = client_.get(reverse("billing:debtor_list"))

    names = [d.name for d in response.context["page"].object_list]
    assert names == ["Agence Soleil"]
    assert "Elsewhere" not in response.content.decode()


def test_list_amounts_sort_and_filters(client_, hotel, debtor):
    _invoice(debtor, days_overdue=10, gross="100.00")
    paid_in_part = _invoice(debtor, days_overdue=40, gross="200.00")
    PaymentFactory(invoice=paid_in_part, amount=Decimal("50.00"))
    _invoice(debtor, days_overdue=5, gross="999.00", disputed=True, dispute_reason="wrong rate")
    big = DebtorAccountFactory(establishment=hotel, name="Big Corp", send_mode=SendMode.NONE)
    _invoice(big, days_overdue=-5, gross="500.00")
    DebtorAccountFactory(establishment=hotel, name="Zero Ltd", contact_email="not-an-email")
    paused = DebtorAccountFactory(
        establishment=hotel,
        name="Paused SA",
        paused_until=TODAY + dt.timedelta(days=3),
        pause_reason="negotiating",
    )
    url = reverse("billing:debtor_list")

    response = client_.get(url, {"sort": "-total_due"})
    rows = {d.name: d for d in response.context["page"].object_list}
    assert [d.name for d in response.context["page"].object_list][:2] == [
        "Big Corp",
        "Agence Soleil",
    ]
    assert rows["Agence Soleil"].total_due == Decimal("250.00")
    assert rows["Agence Soleil"].pending_count == 2
    assert rows["Agence Soleil"].oldest_due_date == TODAY - dt.timedelta(days=40)
    assert rows["Zero Ltd"].total_due == Decimal("0.00")
    assert response.context["totals"] == [{"currency": "EUR", "due": Decimal("750.00")}]
    assert response.context["count"] == 4

    response = client_.get(url, {"sort": "oldest_due"})
    names = [d.name for d in response.context["page"].object_list]
    # Oldest due date first, debtors with nothing pending last.
    assert names[:2] == ["Agence Soleil", "Big Corp"]

    def names_for(**params):
        response = client_.get(url, params)
        return sorted(d.name for d in response.context["page"].object_list)

    assert names_for(pending="on") == ["Agence Soleil", "Big Corp"]
    assert names_for(misconfigured="on") == ["Big Corp", "Paused SA", "Zero Ltd"]
    assert names_for(paused="on") == ["Paused SA"]
    assert names_for(send_mode="none") == ["Big Corp"]
    assert names_for(send_mode="email", misconfigured="on") == ["Paused SA", "Zero Ltd"]
    assert paused.pk


def test_list_filters_by_integration_and_establishment(client, hotel, other_hotel):
    user = _user("both", "Comptables", hotel, other_hotel)
    _client(client, user)
    bavel = Integration.objects.create(
        establishment=hotel, provider=Provider.BAVEL, name="Bavel", active=True
    )
    DebtorAccountFactory(
        establishment=hotel,
        name="Via Bavel",
        send_mode=SendMode.EINVOICING,
        integration=bavel,
        einvoicing_id="732829320",
    )
    DebtorAccountFactory(establishment=other_hotel, name="Other hotel's")
    url = reverse("billing:debtor_list")

    response = client.get(url, {"send_mode": f"einvoicing:{bavel.pk}"})
    assert [d.name for d in response.context["page"].object_list] == ["Via Bavel"]
    assert "Bavel" in response.content.decode()
    response = client.get(url, {"establishment": other_hotel.pk})
    assert [d.name for d in response.context["page"].object_list] == ["Other hotel's"]


def test_misconfig_reason_mirrors_the_run(hotel, other_hotel):
    active = Integration.objects.create(
        establishment=hotel, provider=Provider.SANDBOX, name="Sandbox", active=True
    )
    inactive = Integration.objects.create(
        establishment=hotel, provider=Provider.BAVEL, name="Bavel", active=False
    )
    expected = {
        DebtorAccountFactory(establishment=hotel, contact_email="ok@x.example").pk: "",
        DebtorAccountFactory(establishment=hotel, contact_email="  ").pk: "missing_email",
        DebtorAccountFactory(establishment=hotel, contact_email="a@b").pk: "invalid_email",
        DebtorAccountFactory(establishment=hotel, contact_email="a b@c.fr").pk: "invalid_email",
        DebtorAccountFactory(establishment=hotel, send_mode=SendMode.NONE).pk: "no_send_mode",
        DebtorAccountFactory(
            establishment=hotel, paused_until=TODAY, pause_reason="call first"
        ).pk: "paused",
        # A pause that ended yesterday no longer holds letters back.
        DebtorAccountFactory(
            establishment=hotel, paused_until=TODAY - dt.timedelta(days=1), pause_reason="x"
        ).pk: "",
        DebtorAccountFactory(
            establishment=hotel,
            send_mode=SendMode.EINVOICING,
            integration=inactive,
            einvoicing_id="1",
        ).pk: "integration_inactive",
        DebtorAccountFactory(
            establishment=hotel, send_mode=SendMode.EINVOICING, integration=active, einvoicing_id=""
        ).pk: "missing_einvoicing_id",
        DebtorAccountFactory(
            establishment=hotel,
            send_mode=SendMode.EINVOICING,
            integration=active,
            einvoicing_id="1",
            contact_email="",
        ).pk: "",
    }

    got = dict(
        debtor_list_annotated(establishments=[hotel], on=TODAY).values_list(
            "pk", "misconfig_reason"
        )
    )

    assert got == expected


def test_list_query_count_does_not_grow_with_the_page(client_, hotel):
    def queries_for(rows: int) -> int:
        DebtorAccount.objects.filter(establishment=hotel).delete()
        for n in range(rows):
            debtor = DebtorAccountFactory(establishment=hotel)
            _invoice(debtor, days_overdue=n % 50)
        with CaptureQueriesContext(connection) as queries:
            response = client_.get(reverse("billing:debtor_list"), {"size": 100})
        assert len(response.context["page"].object_list) == rows
        return len(queries)

    Invoice.objects.all().delete()
    small = queries_for(10)
    Invoice.objects.all().delete()
    large = queries_for(60)

    assert small == large
    assert large <= 10


def test_list_paginates_with_a_chosen_size(client_, hotel):
    for _n in range(30):
        DebtorAccountFactory(establishment=hotel)
    url = reverse("billing:debtor_list")

    response = client_.get(url, {"size": 25, "page": 2})
    assert len(response.context["page"].object_list) == 5
    assert response.context["count"] == 30
    # An unknown size falls back to the default.
    response = client_.get(url, {"size": 7})
    assert len(response.context["page"].object_list) == 30


# --- detail ------------------------------------------------------------------------------


def test_detail_shows_pending_invoices_aging_and_totals(client_, debtor):
    late = _invoice(debtor, days_overdue=45, gross="200.00")
    PaymentFactory(invoice=late, amount=Decimal("20.00"))
    _invoice(debtor, days_overdue=-3, gross="100.00")
    _invoice(debtor, days_overdue=120, gross="50.00")

    response = client_.get(_detail(debtor))

    assert response.status_code == 200
    page = response.content.decode()
    assert late.number in page and 'class="overdue"' in page
    lines = response.context["lines"]
    assert [line.days_overdue for line in lines] == [120, 45, 0]
    assert response.context["totals"]["due"] == Decimal("330.00")
    aging = {b.key: b.amount for b in response.context["aging"].buckets}
    assert aging == {
        "current": Decimal("100.00"),
        "1_30": Decimal("0.00"),
        "31_60": Decimal("180.00"),
        "61_90": Decimal("0.00"),
        "over_90": Decimal("50.00"),
    }


def test_aging_bucket_edges(debtor):
    for days in (0, 1, 30, 31, 60, 61, 90, 91):
        _invoice(debtor, days_overdue=days, gross="10.00")

    aging = debtor_aging(debtor=debtor, on=TODAY)

    assert [(b.key, b.count) for b in aging.buckets] == [
        ("current", 1),
        ("1_30", 2),
        ("31_60", 2),
        ("61_90", 2),
        ("over_90", 1),
    ]
    assert aging.total == Decimal("80.00")


def test_settings_form_saves_through_the_service(client_, debtor):
    response = client_.post(
        _detail(debtor),
        {"send_mode": "email", "contact_email": "new@soleil.example", "einvoicing_id": ""},
        follow=True,
    )

    assert response.redirect_chain[-1][0] == _detail(debtor)
    assert "The account's settings were saved." in _messages(response)
    debtor.refresh_from_db()
    assert debtor.contact_email == "new@soleil.example"


def test_settings_form_refuses_an_invalid_email(client_, debtor):
    response = client_.post(
        _detail(debtor), {"send_mode": "email", "contact_email": "nope@", "einvoicing_id": ""}
    )

    assert response.status_code == 200
    assert response.context["form"].errors["contact_email"] == ["Enter a valid email address."]
    assert "Enter a valid email address." in response.content.decode()
    debtor.refresh_from_db()
    assert debtor.contact_email == "ap@soleil.example"


def test_settings_form_refuses_an_inactive_integration(client_, debtor):
    inactive = Integration.objects.create(
        establishment=debtor.establishment, provider=Provider.BAVEL, name="Bavel", active=False
    )

    response = client_.post(
        _detail(debtor),
        {
            "send_mode": f"einvoicing:{inactive.pk}",
            "contact_email": "ap@soleil.example",
            "einvoicing_id": "732829320",
        },
    )

    assert response.status_code == 200
    assert response.context["form"].errors["send_mode"] == ["This integration is not active."]
    debtor.refresh_from_db()
    assert debtor.send_mode == SendMode.EMAIL


def test_settings_form_needs_the_recipient_id(client_, debtor):
    bavel = Integration.objects.create(
        establishment=debtor.establishment, provider=Provider.BAVEL, name="Bavel", active=True
    )

    response = client_.post(
        _detail(debtor),
        {"send_mode": f"einvoicing:{bavel.pk}", "contact_email": "", "einvoicing_id": ""},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["einvoicing_id"] == [
        "Bavel needs the recipient's identifier (SIREN/SIRET, Peppol id or client code)."
    ]

    response = client_.post(
        _detail(debtor),
        {"send_mode": f"einvoicing:{bavel.pk}", "contact_email": "", "einvoicing_id": "73282"},
    )
    assert response.status_code == 302
    debtor.refresh_from_db()
    assert (debtor.send_mode, debtor.integration, debtor.einvoicing_id) == (
        "einvoicing",
        bavel,
        "73282",
    )


def test_history_shows_who_changed_the_contact_email(client_, accountant, debtor):
    client_.post(
        _detail(debtor),
        {"send_mode": "email", "contact_email": "new@soleil.example", "einvoicing_id": ""},
    )

    response = client_.get(_detail(debtor))

    entry = response.context["history"][0]
    assert entry.user == accountant
    assert [(c.field, c.old, c.new) for c in entry.changes] == [
        ("contact email", "ap@soleil.example", "new@soleil.example")
    ]
    page = response.content.decode()
    assert "compta" in page
    assert "<del>ap@soleil.example</del> → <ins>new@soleil.example</ins>" in page


def test_detail_shows_dispatches_with_events_and_errors(client_, debtor):
    invoice = _invoice(debtor, days_overdue=3)
    bavel = Integration.objects.create(
        establishment=debtor.establishment, provider=Provider.BAVEL, name="Bavel", active=True
    )
    dispatch = Dispatch.objects.create(
        establishment=debtor.establishment,
        debtor=debtor,
        channel=Channel.EINVOICE,
        integration=bavel,
        business_date=TODAY,
        idempotency_key=f"einvoice:{bavel.pk}:{invoice.pk}",
        status=DispatchStatus.REJECTED,
        recipient="732829320",
        language="fr",
        currency="EUR",
        total_due=invoice.gross_total,
        attempts=1,
        last_error="HTTP 400: unknown recipient",
        lifecycle_code="213",
    )
    dispatch.items.create(invoice=invoice, amount_due=invoice.gross_total)
    dispatch.events.create(kind="rejected", message="unknown recipient")
    dispatch.lifecycle.create(code="213", source="poll", message="Destinataire inconnu")

    response = client_.get(_detail(debtor))

    page = response.content.decode()
    assert "HTTP 400: unknown recipient" in page
    assert "Rejected by the platform" in page
    assert "213 Rejected" in page and "Destinataire inconnu" in page
    assert invoice.number in page


# --- actions -----------------------------------------------------------------------------


def test_preview_is_the_letter_as_an_inline_pdf(client_, debtor):
    first = _invoice(debtor, days_overdue=12)
    second = _invoice(debtor, days_overdue=-2)

    response = client_.get(reverse("billing:debtor_letter", args=[debtor.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"].startswith("inline;")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert first.number in text and second.number in text
    assert not Dispatch.objects.exists()


def test_preview_with_nothing_pending_is_404(client_, debtor):
    response = client_.get(reverse("billing:debtor_letter", args=[debtor.pk]))

    assert response.status_code == 404


def test_send_now_twice_the_same_day_sends_one_letter(
    client_, debtor, django_capture_on_commit_callbacks
):
    _invoice(debtor, days_overdue=5)
    url = reverse("billing:debtor_send_now", args=[debtor.pk])

    with django_capture_on_commit_callbacks(execute=True):
        response = client_.post(url, follow=True)
    assert "Queued for sending: a letter to ap@soleil.example." in _messages(response)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_.post(url, follow=True)

    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ap@soleil.example"]
    assert Dispatch.objects.filter(debtor=debtor, channel=Channel.EMAIL).count() == 1
    assert _messages(response) == ["Nothing new was queued: today's letter was already sent."]


def test_send_now_says_why_nothing_was_queued(client_, debtor):
    debtor.contact_email = "broken"
    debtor.save()
    _invoice(debtor, days_overdue=5)

    response = client_.post(reverse("billing:debtor_send_now", args=[debtor.pk]), follow=True)

    assert _messages(response) == ["Nothing new was queued: invalid contact email."]
    assert not Dispatch.objects.exists()


def test_pause_and_resume(client_, debtor):
    url = reverse("billing:debtor_pause", args=[debtor.pk])
    until = TODAY + dt.timedelta(days=10)

    response = client_.post(url, {"until": until.isoformat(), "reason": "Paying in March"})
    assert response.status_code == 302
    debtor.refresh_from_db()
    assert (debtor.paused_until, debtor.pause_reason) == (until, "Paying in March")
    page = client_.get(_detail(debtor)).content.decode()
    assert "Paying in March" in page and "Resume reminders" in page

    response = client_.post(reverse("billing:debtor_resume", args=[debtor.pk]), follow=True)
    assert "Reminders are resumed." in _messages(response)
    debtor.refresh_from_db()
    assert debtor.paused_until is None and debtor.pause_reason == ""


def test_pause_needs_a_future_date_and_a_reason(client_, debtor):
    url = reverse("billing:debtor_pause", args=[debtor.pk])

    response = client_.post(url, {"until": TODAY.isoformat(), "reason": "  "}, follow=True)

    assert response.redirect_chain[-1][0] == _detail(debtor)
    assert sorted(_messages(response)) == [
        "Pause reminders until: Choose a date in the future.",
        "Reason: This field is required.",
    ]
    debtor.refresh_from_db()
    assert debtor.paused_until is None


def test_resume_when_not_paused_says_so(client_, debtor):
    response = client_.post(reverse("billing:debtor_resume", args=[debtor.pk]), follow=True)

    assert _messages(response) == ["Reminders to this account are not paused."]


def test_dispute_and_undispute_move_the_invoice(client_, debtor):
    invoice = _invoice(debtor, days_overdue=5)

    response = client_.post(
        reverse("billing:invoice_dispute", args=[invoice.pk]), {"reason": "Room not booked"}
    )
    assert response.status_code == 302
    response = client_.get(_detail(debtor))
    assert response.context["lines"] == []
    assert [i.pk for i in response.context["disputed"]] == [invoice.pk]
    assert "Room not booked" in response.content.decode()

    response = client_.post(reverse("billing:invoice_undispute", args=[invoice.pk]), follow=True)
    assert [line.invoice.pk for line in response.context["lines"]] == [invoice.pk]
    assert response.context["disputed"] == []
    # The invoice's dispute shows in the debtor's history.
    changes = [(c.field, c.new) for e in response.context["history"] for c in e.changes]
    assert ("disputed", "yes") in changes and ("disputed", "no") in changes


def test_dispute_needs_a_reason(client_, debtor):
    invoice = _invoice(debtor, days_overdue=5)

    response = client_.post(
        reverse("billing:invoice_dispute", args=[invoice.pk]), {"reason": ""}, follow=True
    )

    assert _messages(response) == ["Reason: This field is required."]
    invoice.refresh_from_db()
    assert not invoice.disputed


# --- access ------------------------------------------------------------------------------


def _id_urls(debtor, invoice) -> list[tuple[str, str]]:
    return [
        ("get", reverse("billing:debtor_detail", args=[debtor.pk])),
        ("post", reverse("billing:debtor_detail", args=[debtor.pk])),
        ("get", reverse("billing:debtor_letter", args=[debtor.pk])),
        ("post", reverse("billing:debtor_send_now", args=[debtor.pk])),
        ("post", reverse("billing:debtor_pause", args=[debtor.pk])),
        ("post", reverse("billing:debtor_resume", args=[debtor.pk])),
        ("post", reverse("billing:invoice_dispute", args=[invoice.pk])),
        ("post", reverse("billing:invoice_undispute", args=[invoice.pk])),
    ]


def test_another_establishments_objects_answer_404(client_, other_hotel):
    theirs = DebtorAccountFactory(establishment=other_hotel)
    invoice = _invoice(theirs, days_overdue=5)

    for method, url in _id_urls(theirs, invoice):
        response = getattr(client_, method)(url, {"reason": "x", "until": "2099-01-01"})
        assert response.status_code == 404, (method, url)
    theirs.refresh_from_db()
    assert theirs.paused_until is None


def test_anonymous_users_are_sent_to_the_login_page(client, debtor):
    invoice = _invoice(debtor, days_overdue=5)
    login = reverse("billing:login")

    for method, url in [("get", reverse("billing:debtor_list")), *_id_urls(debtor, invoice)]:
        response = getattr(client, method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(f"{login}?next="), url


def test_direction_reads_but_cannot_change(client, director, debtor):
    _client(client, director)
    invoice = _invoice(debtor, days_overdue=5)

    response = client.get(_detail(debtor))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Send now" not in page and "Mark disputed" not in page
    assert client.get(reverse("billing:debtor_list")).status_code == 200

    for method, url in _id_urls(debtor, invoice):
        if method == "post":
            response = client.post(url, {"reason": "x", "send_mode": "none"})
            assert response.status_code == 403, url
    assert not Dispatch.objects.exists()
    debtor.refresh_from_db()
    assert debtor.send_mode == SendMode.EMAIL


def test_actions_refuse_get(client_, debtor):
    response = client_.get(reverse("billing:debtor_send_now", args=[debtor.pk]))

    assert response.status_code == 405
