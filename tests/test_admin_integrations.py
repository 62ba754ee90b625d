"""The admin of e-invoicing integrations: write-only secrets, provider rules, test connection."""

import datetime as dt
import re
import socket
from decimal import Decimal

import pytest
from django.contrib.messages import constants as message_levels
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation

from dispatch.integrations import (
    integration_credentials,
    integration_set_secrets,
    integration_webhook_secret,
)
from dispatch.models import (
    Channel,
    DispatchStatus,
    HttpAttempt,
    Integration,
    LifecycleEvent,
    Provider,
    WebhookEvent,
)
from tests.factories import DispatchFactory, DispatchItemFactory, EstablishmentFactory

pytestmark = pytest.mark.django_db

PASSWORD = "s3cret-Passw0rd!"
CLIENT_SECRET = "afnor-client-Secret-42"
WEBHOOK_SECRET = "whsec-Very-Private-77"


@pytest.fixture(autouse=True)
def _english():
    # Messages are checked in their English source text, whatever catalogues are compiled.
    with translation.override("en"):
        yield


@pytest.fixture
def admin_client(admin_client):
    # The admin's requests take their language from LocaleMiddleware (French by default),
    # not from the override above: ask for English as a browser would.
    admin_client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return admin_client


def _integration(**fields) -> Integration:
    values = {
        "establishment": fields.pop("establishment", None) or EstablishmentFactory(),
        "provider": Provider.SANDBOX,
        "name": "Sandbox",
        "active": True,
    }
    return Integration.objects.create(**{**values, **fields})


def _bavel(endpoint="https://bavel.example/hotel", **fields) -> Integration:
    integration = _integration(
        provider=Provider.BAVEL,
        name="Bavel",
        endpoint=endpoint,
        options={"hotel_code": "PAR01"},
        **fields,
    )
    return integration_set_secrets(
        integration=integration,
        credentials={"username": "hotel-paris", "password": PASSWORD},
        webhook_secret=WEBHOOK_SECRET,
    )


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def _form_data(response) -> dict:
    form = response.context["adminform"].form
    data = {}
    for bound in form:
        value = bound.value()
        if value is None or value is False:
            continue
        data[bound.html_name] = "on" if value is True else str(value)
    return data


def _change(admin_client, integration, **changes):
    url = _url(Integration, "change", integration.pk)
    data = _form_data(admin_client.get(url))
    data.update(changes)
    return admin_client.post(url, data)


def _add(admin_client, **data):
    values = {"document_format": "facturx_en16931", "options": "{}", "active": "on"}
    return admin_client.post(_url(Integration, "add"), {**values, **data})


def _errors(response) -> dict:
    return {
        name: list(errors) for name, errors in response.context["adminform"].form.errors.items()
    }


def _messages(response) -> list[tuple[int, str]]:
    return [(m.level, str(m)) for m in get_messages(response.wsgi_request)]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- list -------------------------------------------------------------------------------


def test_changelist_lists_filters_and_searches(admin_client):
    paris = EstablishmentFactory(name="Paris Opéra")
    bavel = _bavel(establishment=paris)
    sandbox = _integration(name="Demo sandbox", active=False)
    url = _url(Integration, "changelist")

    response = admin_client.get(url)
    active = admin_client.get(url, {"active__exact": "1"}).context["cl"].result_list
    by_provider = admin_client.get(url, {"provider__exact": "sandbox"}).context["cl"].result_list
    found = admin_client.get(url, {"q": "opéra"}).context["cl"].result_list

    assert response.status_code == 200
    assert {i.pk for i in response.context["cl"].result_list} == {bavel.pk, sandbox.pk}
    assert [i.pk for i in active] == [bavel.pk]
    assert [i.pk for i in by_provider] == [sandbox.pk]
    assert [i.pk for i in found] == [bavel.pk]
    html = response.content.decode()
    assert "https://bavel.example/hotel" in html
    assert PASSWORD not in html


def test_changelist_queries_do_not_grow_with_rows(admin_client):
    url = _url(Integration, "changelist")
    _bavel()
    admin_client.get(url)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(url)
    for n in range(10):
        _integration(name=f"Sandbox {n}")
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(url).context["cl"].result_count == 11
    assert len(many.captured_queries) == len(few.captured_queries)


# --- secrets ----------------------------------------------------------------------------


def test_change_page_never_shows_a_secret_back(admin_client):
    integration = _bavel()
    token = Integration.objects.get(pk=integration.pk).credentials_encrypted
    webhook_token = Integration.objects.get(pk=integration.pk).webhook_secret_encrypted

    response = admin_client.get(_url(Integration, "change", integration.pk))

    assert response.status_code == 200
    html = response.content.decode()
    for secret in (PASSWORD, WEBHOOK_SECRET, token, webhook_token):
        assert secret not in html
    assert "credentials_encrypted" not in html
    assert "webhook_secret_encrypted" not in html
    form = response.context["adminform"].form
    assert "credentials_encrypted" not in form.fields
    assert "webhook_secret_encrypted" not in form.fields
    # The secret inputs are rendered empty.
    for name in ("username", "password", "client_id", "client_secret", "webhook_secret"):
        [tag] = re.findall(rf'<input[^>]*name="{name}"[^>]*>', html)
        assert 'type="password"' in tag
        assert "value=" not in tag
    # Which secrets are stored, without their values.
    assert "user name (Bavel): stored" in html
    assert "password (Bavel): stored" in html
    assert "webhook secret: stored" in html


def test_stored_indicator_says_not_stored(admin_client):
    integration = _integration(provider=Provider.SANDBOX)

    html = admin_client.get(_url(Integration, "change", integration.pk)).content.decode()

    assert "webhook secret: not stored" in html


def test_blank_secret_fields_keep_the_stored_values(admin_client):
    integration = _bavel()

    response = _change(admin_client, integration, name="Bavel Paris")

    assert response.status_code == 302, _errors(response)
    integration.refresh_from_db()
    assert integration.name == "Bavel Paris"
    assert integration_credentials(integration=integration) == {
        "username": "hotel-paris",
        "password": PASSWORD,
    }
    assert integration_webhook_secret(integration=integration) == WEBHOOK_SECRET


def test_a_typed_secret_replaces_only_that_secret(admin_client):
    integration = _bavel()

    response = _change(admin_client, integration, password="new-Passw0rd", webhook_secret="wh2")

    assert response.status_code == 302, _errors(response)
    integration.refresh_from_db()
    assert integration_credentials(integration=integration) == {
        "username": "hotel-paris",
        "password": "new-Passw0rd",
    }
    assert integration_webhook_secret(integration=integration) == "wh2"
    assert "new-Passw0rd" not in integration.credentials_encrypted


def test_a_new_bavel_integration_stores_its_secrets_encrypted(admin_client):
    establishment = EstablishmentFactory()

    response = _add(
        admin_client,
        establishment=establishment.pk,
        provider="bavel",
        name="Bavel",
        endpoint="https://bavel.example/hotel",
        options='{"hotel_code": "PAR01"}',
        username="hotel-paris",
        password=PASSWORD,
        webhook_secret=WEBHOOK_SECRET,
    )

    assert response.status_code == 302, _errors(response)
    integration = Integration.objects.get(establishment=establishment)
    assert (integration.provider, integration.active, integration.options) == (
        "bavel",
        True,
        {"hotel_code": "PAR01"},
    )
    assert PASSWORD not in integration.credentials_encrypted
    assert integration_credentials(integration=integration) == {
        "username": "hotel-paris",
        "password": PASSWORD,
    }
    assert integration_webhook_secret(integration=integration) == WEBHOOK_SECRET


def test_changing_the_provider_drops_the_other_provider_s_credentials(admin_client):
    integration = _bavel()

    response = _change(admin_client, integration, provider="sandbox", endpoint="")

    assert response.status_code == 302, _errors(response)
    integration.refresh_from_db()
    assert integration_credentials(integration=integration) == {}
    # The webhook secret does not belong to a provider's credentials.
    assert integration_webhook_secret(integration=integration) == WEBHOOK_SECRET


# --- provider rules ---------------------------------------------------------------------


def test_bavel_needs_url_hotel_code_and_credentials(admin_client):
    response = _add(
        admin_client, establishment=EstablishmentFactory().pk, provider="bavel", name="Bavel"
    )

    assert response.status_code == 200
    errors = _errors(response)
    assert set(errors) == {"endpoint", "options", "username", "password"}
    assert errors["endpoint"] == ["Bavel needs the platform's base URL."]
    assert "hotel code" in errors["options"][0]
    assert errors["password"] == ["Required: nothing is stored yet."]
    assert not Integration.objects.exists()


def test_afnor_needs_url_and_client_credentials_when_none_are_stored(admin_client):
    response = _add(
        admin_client,
        establishment=EstablishmentFactory().pk,
        provider="afnor",
        name="PDP",
        client_id="client-1",
    )

    errors = _errors(response)
    assert set(errors) == {"endpoint", "client_secret"}


def test_afnor_with_stored_credentials_needs_none_typed(admin_client):
    integration = _integration(
        provider=Provider.AFNOR, name="PDP", endpoint="https://pdp.example/api"
    )
    integration_set_secrets(
        integration=integration,
        credentials={"client_id": "client-1", "client_secret": CLIENT_SECRET},
    )

    response = _change(admin_client, integration, active="")

    assert response.status_code == 302, _errors(response)
    integration.refresh_from_db()
    assert integration.active is False
    assert integration_credentials(integration=integration)["client_secret"] == CLIENT_SECRET


def test_sandbox_needs_nothing(admin_client):
    response = _add(
        admin_client, establishment=EstablishmentFactory().pk, provider="sandbox", name="Demo"
    )

    assert response.status_code == 302, _errors(response)
    assert Integration.objects.get().credentials_encrypted == ""


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("not a url", "Enter a URL starting with https://."),
        ("http://bavel.example/hotel", "Use https://"),
        ("https://user:pw@bavel.example/hotel", "Put no credentials in the URL"),
    ],
)
def test_platform_urls_are_checked(admin_client, endpoint, message):
    integration = _bavel()

    response = _change(admin_client, integration, endpoint=endpoint)

    assert list(_errors(response)) == ["endpoint"]
    assert _errors(response)["endpoint"][0].startswith(message)


def test_plain_http_is_allowed_to_this_machine(admin_client):
    integration = _bavel()

    response = _change(admin_client, integration, endpoint="http://127.0.0.1:8123/bavel")

    assert response.status_code == 302, _errors(response)


def test_options_must_be_an_object(admin_client):
    integration = _integration()

    response = _change(admin_client, integration, options="[1, 2]")

    assert list(_errors(response)) == ["options"]


# --- test connection --------------------------------------------------------------------


def _test_connection(admin_client, *integrations):
    return admin_client.post(
        _url(Integration, "changelist"),
        {"action": "test_connection", "_selected_action": [i.pk for i in integrations]},
        follow=True,
    )


def test_test_connection_of_a_sandbox_reports_success(admin_client, tmp_path):
    integration = _integration(name="Demo sandbox", endpoint=str(tmp_path / "box"))

    response = _test_connection(admin_client, integration)

    [(level, text)] = _messages(response)
    assert level == message_levels.SUCCESS
    assert text.startswith("Demo sandbox (")
    assert str(tmp_path / "box") in text
    assert (tmp_path / "box").is_dir()


def test_test_connection_to_a_closed_port_reports_the_error_without_secrets(admin_client, tmp_path):
    port = _closed_port()
    bavel = _bavel(endpoint=f"http://127.0.0.1:{port}/bavel")
    sandbox = _integration(name="Demo sandbox", endpoint=str(tmp_path))

    response = _test_connection(admin_client, bavel, sandbox)

    messages = _messages(response)
    assert [level for level, _text in messages] == [
        message_levels.ERROR,
        message_levels.SUCCESS,
    ]
    error = messages[0][1]
    assert error.startswith("Bavel (")
    assert "connection failed" in error
    assert "Connection refused" in error
    for secret in (PASSWORD, WEBHOOK_SECRET, "hotel-paris"):
        assert all(secret not in text for _level, text in messages)
    attempt = HttpAttempt.objects.get(integration=bavel)
    assert (attempt.operation, attempt.status_code) == ("test_connection", None)
    assert attempt.error.startswith("connection error")


def test_test_connection_of_an_incomplete_integration_says_what_is_missing(admin_client):
    integration = _integration(provider=Provider.BAVEL, name="Bavel", endpoint="")

    response = _test_connection(admin_client, integration)

    [(level, text)] = _messages(response)
    assert level == message_levels.ERROR
    assert "missing" in text


# --- platform records -------------------------------------------------------------------


def _einvoice_dispatch(integration, **fields):
    return DispatchFactory(
        debtor__establishment=integration.establishment,
        channel=Channel.EINVOICE,
        integration=integration,
        idempotency_key=f"einvoice:{integration.pk}:{fields.pop('n', 1)}",
        status=DispatchStatus.SENT,
        sent_at=timezone.now(),
        **fields,
    )


def test_http_attempts_are_listed_read_only_and_filtered(admin_client):
    bavel = _bavel()
    other = _integration(name="Other")
    ok = HttpAttempt.objects.create(
        integration=bavel,
        operation="submit",
        method="PUT",
        url="https://b/Outbox/x.pdf",
        status_code=201,
    )
    failed = HttpAttempt.objects.create(
        integration=bavel,
        operation="poll",
        method="GET",
        url="https://b/Inbox/",
        status_code=503,
        error="HTTP 503: busy",
    )
    HttpAttempt.objects.create(
        integration=other, operation="poll", method="GET", url="https://o/", error="timeout"
    )
    url = _url(HttpAttempt, "changelist")

    listed = admin_client.get(url)
    by_integration = admin_client.get(url, {"integration__id__exact": bavel.pk})
    by_operation = admin_client.get(url, {"operation": "submit"})
    by_status = admin_client.get(url, {"status_code": "503"})
    searched = admin_client.get(url, {"q": "busy"})

    assert listed.status_code == 200
    assert listed.context["cl"].result_count == 3
    assert {a.pk for a in by_integration.context["cl"].result_list} == {ok.pk, failed.pk}
    assert [a.pk for a in by_operation.context["cl"].result_list] == [ok.pk]
    assert [a.pk for a in by_status.context["cl"].result_list] == [failed.pk]
    assert [a.pk for a in searched.context["cl"].result_list] == [failed.pk]
    assert admin_client.get(_url(HttpAttempt, "change", failed.pk)).status_code == 200
    assert admin_client.get(_url(HttpAttempt, "add")).status_code == 403


def test_webhook_events_are_listed_read_only(admin_client):
    event = WebhookEvent.objects.create(
        integration=_bavel(), event_id="evt-123", payload={"status": "205"}
    )

    listed = admin_client.get(_url(WebhookEvent, "changelist"), {"q": "evt-123"})
    change = admin_client.get(_url(WebhookEvent, "change", event.pk))

    assert [e.pk for e in listed.context["cl"].result_list] == [event.pk]
    assert change.status_code == 200
    assert admin_client.get(_url(WebhookEvent, "add")).status_code == 403


def test_dispatch_page_shows_the_lifecycle_history(admin_client):
    integration = _integration()
    dispatch = _einvoice_dispatch(integration, platform_ref="PAR01_F1.pdf", lifecycle_code="205")
    LifecycleEvent.objects.create(dispatch=dispatch, code="200", source="submission")
    LifecycleEvent.objects.create(
        dispatch=dispatch, code="205", source="poll", message="Approuvée par le client"
    )

    response = admin_client.get(_url(type(dispatch), "change", dispatch.pk))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Approuvée par le client" in html
    assert "205 Approved" in html
    assert "PAR01_F1.pdf" in html


def test_invoice_and_debtor_lists_show_the_latest_e_invoice_status(admin_client):
    from debtors.models import DebtorAccount
    from invoicing.models import Invoice

    integration = _integration()
    first = _einvoice_dispatch(integration, n=1, lifecycle_code="200")
    item = DispatchItemFactory(dispatch=first)
    later = _einvoice_dispatch(integration, n=2, debtor=first.debtor, lifecycle_code="207")
    DispatchItemFactory(dispatch=later, invoice__debtor=first.debtor)
    # A newer submission of the same invoice after a change of integration wins.
    resent = _einvoice_dispatch(
        _integration(establishment=integration.establishment, name="Second"),
        n=3,
        debtor=first.debtor,
        lifecycle_code="205",
        business_date=dt.date(2026, 12, 4),
        total_due=Decimal("110.00"),
    )
    DispatchItemFactory(dispatch=resent, invoice=item.invoice)

    invoices = admin_client.get(_url(Invoice, "changelist"))
    debtors = admin_client.get(_url(DebtorAccount, "changelist"))
    invoice_page = admin_client.get(_url(Invoice, "change", item.invoice.pk))

    statuses = {i.pk: i.einvoice_code for i in invoices.context["cl"].result_list}
    assert statuses[item.invoice.pk] == "205"
    assert sorted(statuses.values(), key=str) == ["205", "207"]
    [debtor] = debtors.context["cl"].result_list
    assert debtor.einvoice_code == "205"
    assert "205 Approved" in debtors.content.decode()
    assert "205 Approved" in invoice_page.content.decode()


@pytest.mark.parametrize("model_name", ["invoice", "debtoraccount"])
def test_e_invoice_status_columns_make_no_query_per_row(admin_client, model_name):
    url = reverse(
        "admin:invoicing_invoice_changelist"
        if model_name == "invoice"
        else "admin:debtors_debtoraccount_changelist"
    )
    integration = _integration()

    def add_rows(start, count):
        for n in range(start, start + count):
            dispatch = _einvoice_dispatch(integration, n=n, lifecycle_code="204")
            DispatchItemFactory(dispatch=dispatch)

    add_rows(1, 2)
    admin_client.get(url)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(url)
    add_rows(10, 12)
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(url).context["cl"].result_count == 14
    assert len(many.captured_queries) == len(few.captured_queries)
