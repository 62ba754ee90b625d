import datetime as dt
import hashlib
import json
import logging
import re
import threading
import time
import zoneinfo

import pytest
from django.utils import translation
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from dispatch.connectors import (
    ConfigurationError,
    Document,
    OutcomeUnknown,
    RejectedError,
    StatusUpdate,
    TransientError,
    WebhookRejected,
    connector_for,
)
from dispatch.connectors.bavel import BavelConfig, BavelConnector, bavel_filename
from dispatch.einvoicing import lifecycle_record
from dispatch.integrations import integration_set_secrets
from dispatch.models import (
    Channel,
    DispatchStatus,
    HttpAttempt,
    Integration,
    LifecycleEvent,
    Provider,
)
from tests.factories import DebtorAccountFactory, DispatchFactory, EstablishmentFactory

pytestmark = pytest.mark.django_db

USERNAME = "hotel-paris"
PASSWORD = "s3cret:with colon"
HOTEL_CODE = "PAR01"
PREFIX = "/bavel"
TRACKING_ID = "3f2a9c71e4d84b0f9a1b2c3d4e5f6a7b"


class FakeBavel:
    """The Voxel file protocol on a local server: Basic auth, an Outbox and an Inbox folder.

    `answers` replaces the protocol's answer to the next requests (after the auth check),
    to play failures; `put_delay` makes an upload answer late, after storing the file.
    """

    def __init__(self, httpserver) -> None:
        self.outbox: dict[str, bytes] = {}
        self.inbox: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str]] = []
        self.answers: list[Response] = []
        self.listing_format = "json"
        self.put_delay = 0.0
        self.put_done = threading.Event()
        httpserver.expect_request(re.compile(f"^{PREFIX}/")).respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        self.requests.append((request.method, request.path, request.headers.get("Content-Type")))
        auth = request.authorization
        if (
            not auth
            or auth.type != "basic"
            or (auth.username, auth.password)
            != (
                USERNAME,
                PASSWORD,
            )
        ):
            return Response("Unauthorized", status=401)
        if self.answers:
            return self.answers.pop(0)
        folder, _, name = request.path.removeprefix(PREFIX + "/").partition("/")
        store = {"Outbox": self.outbox, "Inbox": self.inbox}.get(folder)
        if store is None:
            return Response("no such folder", status=404)
        if not name:
            if request.method != "GET":
                return Response(status=405)
            return self.listing(store)
        if request.method == "PUT" and folder == "Outbox":
            if not request.headers.get("Content-Type"):
                return Response("Content-Type required", status=415)
            store[name] = request.get_data()
            if self.put_delay:
                time.sleep(self.put_delay)
                self.put_done.set()
            return Response(status=201)
        if name not in store:
            return Response("not found", status=404)
        if request.method == "GET":
            return Response(store[name], content_type="application/octet-stream")
        if request.method == "DELETE":
            del store[name]
            return Response(status=204)
        return Response(status=405)

    def listing(self, store: dict[str, bytes]) -> Response:
        if self.listing_format == "text":
            return Response("".join(f"{name}\r\n" for name in store), content_type="text/plain")
        return Response(json.dumps(list(store)), content_type="application/json")

    def count(self, method: str, folder: str) -> int:
        return sum(1 for m, path, _ in self.requests if m == method and f"/{folder}/" in path)


@pytest.fixture(scope="module")
def loopback_server():
    # Loopback by address, not "localhost" (the plugin's default), which may also mean ::1.
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def httpserver(loopback_server):
    loopback_server.clear()
    yield loopback_server
    assert not loopback_server.handler_errors, loopback_server.handler_errors


@pytest.fixture
def bavel(httpserver):
    return FakeBavel(httpserver)


@pytest.fixture
def integration(httpserver):
    integration = Integration.objects.create(
        establishment=EstablishmentFactory(time_zone="Europe/Madrid"),
        provider=Provider.BAVEL,
        name="Bavel",
        active=True,
        endpoint=httpserver.url_for(PREFIX) + "/",
        options={"hotel_code": HOTEL_CODE},
    )
    return integration_set_secrets(
        integration=integration, credentials={"username": USERNAME, "password": PASSWORD}
    )


@pytest.fixture
def connector(integration) -> BavelConnector:
    connector = connector_for(integration)
    assert isinstance(connector, BavelConnector)
    return connector


def make_document(number: str = "FA-2026-0042", tracking_id: str = TRACKING_ID) -> Document:
    content = b"%PDF-1.7\n" + number.encode() + b"\n%%EOF\n"
    return Document(
        invoice_number=number,
        filename=f"{number}.pdf",
        content=content,
        media_type="application/pdf",
        sha256=hashlib.sha256(content).hexdigest(),
        tracking_id=tracking_id,
    )


def status_file(file: str, status: str, **extra) -> bytes:
    return json.dumps({"file": file, "status": status, **extra}).encode()


def einvoice_dispatch(integration, *, platform_ref: str):
    debtor = DebtorAccountFactory(establishment=integration.establishment)
    return DispatchFactory(
        debtor=debtor,
        channel=Channel.EINVOICE,
        integration=integration,
        idempotency_key=f"einvoice:{integration.pk}:{debtor.pk}",
        status=DispatchStatus.SENT,
        sent_at=dt.datetime(2026, 12, 3, 2, 0, tzinfo=dt.UTC),
        tracking_id=TRACKING_ID,
        platform_ref=platform_ref,
    )


# Configuration and file names


def test_config_names_everything_missing():
    integration = Integration.objects.create(
        establishment=EstablishmentFactory(), provider=Provider.BAVEL, name="Bavel"
    )
    with pytest.raises(ConfigurationError) as excinfo:
        BavelConfig.from_integration(integration)
    message = str(excinfo.value)
    for missing in ("endpoint", "username", "password", "hotel_code"):
        assert missing in message

    integration.endpoint = "https://bavel.example/files"
    integration.options = {"hotel_code": "PAR01"}
    integration_set_secrets(integration=integration, credentials={"username": "u"})
    with pytest.raises(ConfigurationError, match="password") as excinfo:
        connector_for(integration)
    assert "username" not in str(excinfo.value)


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("http://bavel.example/files", "https"),
        ("ftp://127.0.0.1/files", "https"),
        ("https://user:pw@bavel.example/files", "credentials"),
    ],
)
def test_config_refuses_unsafe_endpoints(endpoint, problem):
    integration = Integration.objects.create(
        establishment=EstablishmentFactory(),
        provider=Provider.BAVEL,
        name="Bavel",
        endpoint=endpoint,
        options={"hotel_code": "PAR01"},
    )
    integration_set_secrets(integration=integration, credentials={"username": "u", "password": "p"})
    # The messages are matched in English, the source language; French is the default.
    with translation.override("en"), pytest.raises(ConfigurationError, match=problem):
        BavelConfig.from_integration(integration)


def test_config_reads_https_and_loopback_http(integration):
    config = BavelConfig.from_integration(integration)
    assert config.base_url.startswith("http://127.0.0.1:") and config.base_url.endswith(PREFIX)
    assert (config.username, config.password, config.hotel_code) == (USERNAME, PASSWORD, "PAR01")

    integration.endpoint = "https://bavel.example/files/"
    assert BavelConfig.from_integration(integration).base_url == "https://bavel.example/files"


def test_filename_is_url_safe_unique_per_submission_and_stable():
    document = make_document("FA 2026/0042 é#1")
    name = bavel_filename(hotel_code="PAR 01", document=document)
    assert name == "PAR-01_FA-2026-0042-1_3f2a9c71.pdf"
    assert bavel_filename(hotel_code="PAR 01", document=document) == name
    other = make_document("FA 2026/0042 é#1", tracking_id="ffff0000aaaa")
    assert (
        bavel_filename(hotel_code="PAR 01", document=other) == "PAR-01_FA-2026-0042-1_ffff0000.pdf"
    )

    xml = Document(
        invoice_number="7",
        filename="",
        content=b"<x/>",
        media_type="application/xml",
        sha256="",
        tracking_id="",
    )
    assert bavel_filename(hotel_code="H", document=xml) == "H_7.xml"
    with pytest.raises(ConfigurationError):
        bavel_filename(hotel_code="H", document=make_document("///"))


# Submitting


def test_submit_puts_the_document_with_basic_auth(bavel, integration, connector):
    document = make_document()
    dispatch = einvoice_dispatch(integration, platform_ref="")

    receipt = connector.submit(document, dispatch_id=dispatch.pk)

    name = f"{HOTEL_CODE}_FA-2026-0042_3f2a9c71.pdf"
    assert receipt.platform_ref == name
    assert receipt.code == "200"
    assert bavel.outbox == {name: document.content}
    assert bavel.requests == [("PUT", f"{PREFIX}/Outbox/{name}", "application/pdf")]
    attempt = HttpAttempt.objects.get()
    assert (attempt.operation, attempt.method, attempt.status_code, attempt.error) == (
        "submit",
        "PUT",
        201,
        "",
    )
    assert attempt.dispatch_id == dispatch.pk
    assert attempt.url.endswith(f"{PREFIX}/Outbox/{name}")
    assert PASSWORD not in attempt.url


def test_wrong_password_is_a_configuration_error_not_a_rejected_invoice(
    bavel, integration, connector
):
    integration_set_secrets(
        integration=integration, credentials={"username": USERNAME, "password": "wrong"}
    )
    with translation.override("en"), pytest.raises(ConfigurationError, match="credentials"):
        connector_for(integration).submit(make_document())
    assert bavel.outbox == {}
    assert HttpAttempt.objects.get().status_code == 401


def test_4xx_is_a_rejection_with_the_platform_message(bavel, connector):
    bavel.answers.append(Response("Invalid invoice: buyer VAT number missing", status=422))

    with pytest.raises(RejectedError) as excinfo:
        connector.submit(make_document())

    assert excinfo.value.status_code == 422
    assert "buyer VAT number missing" in str(excinfo.value)
    attempt = HttpAttempt.objects.get()
    assert attempt.status_code == 422
    assert "buyer VAT number missing" in attempt.error


def test_5xx_is_transient_then_the_next_try_succeeds(bavel, connector):
    bavel.answers.append(Response("maintenance", status=503))
    document = make_document()

    with pytest.raises(TransientError) as excinfo:
        connector.submit(document)
    assert not isinstance(excinfo.value, OutcomeUnknown)
    assert bavel.outbox == {}

    receipt = connector.submit(document)

    assert bavel.outbox == {receipt.platform_ref: document.content}
    assert bavel.count("PUT", "Outbox") == 2
    assert list(HttpAttempt.objects.order_by("id").values_list("status_code", flat=True)) == [
        503,
        201,
    ]
    assert "maintenance" in HttpAttempt.objects.order_by("id").first().error


def test_429_is_transient_with_retry_after(bavel, connector):
    bavel.answers.append(Response("slow down", status=429, headers={"Retry-After": "17"}))

    with pytest.raises(TransientError) as excinfo:
        connector.submit(make_document())

    assert excinfo.value.retry_after == 17
    assert HttpAttempt.objects.get().status_code == 429


def test_unexpected_2xx_is_an_unknown_outcome(bavel, connector):
    bavel.answers.append(Response("queued", status=202))
    with pytest.raises(OutcomeUnknown):
        connector.submit(make_document())


def test_timeout_after_the_upload_arrived_is_found_without_a_second_put(bavel, connector, settings):
    settings.EINVOICING_HTTP_TIMEOUT = (1, 0.5)
    bavel.put_delay = 1.5
    document = make_document()

    started = time.monotonic()
    with pytest.raises(OutcomeUnknown):
        connector.submit(document)
    assert time.monotonic() - started < 1.4
    # The one-thread server answers the next request once the upload handler is done.
    assert bavel.put_done.wait(5)

    receipt = connector.find_submission(document)

    assert receipt is not None
    assert receipt.platform_ref == f"{HOTEL_CODE}_FA-2026-0042_3f2a9c71.pdf"
    assert bavel.count("PUT", "Outbox") == 1
    assert list(bavel.outbox.values()) == [document.content]
    timeout, listing = HttpAttempt.objects.order_by("id")
    assert timeout.status_code is None and "read timeout" in timeout.error
    assert (listing.operation, listing.method, listing.status_code) == (
        "find_submission",
        "GET",
        200,
    )


def test_find_submission_looks_in_the_inbox_when_the_outbox_was_emptied(bavel, connector):
    document = make_document()
    name = connector.filename(document)
    assert connector.find_submission(document) is None

    # The platform took the file away and answered about it: it did arrive.
    bavel.inbox["R1.json"] = status_file(name, "ACCEPTED")
    receipt = connector.find_submission(document)

    assert receipt is not None and receipt.platform_ref == name
    assert "R1.json" in bavel.inbox, "left for the status poll to record and acknowledge"
    assert bavel.count("PUT", "Outbox") == 0


# Statuses


def test_fetch_statuses_reads_json_and_xml_and_skips_garbage(bavel, connector, caplog):
    ours = connector.filename(make_document())
    bavel.inbox.update(
        {
            "R1.json": status_file(
                ours, "213", message="Numéro de TVA invalide", date="2026-12-03T09:15:00+01:00"
            ),
            "R2.xml": (
                "<?xml version='1.0' encoding='utf-8'?><response><file>"
                + ours
                + "</file><status>Delivered</status><message>Mis à disposition</message>"
                "<date>2026-12-04T10:00:00</date></response>"
            ).encode(),
            "R3.json": b"\x89PNG\r\n\x1a\n\x00\x00garbage",
            "R4.json": b'{"file": "x.pdf", "status": ',
            "R5.json": status_file(ours, "LOST_IN_SPACE"),
            "R6.json": b'{"status": "200"}',
            "R7.json": b'["not", "an", "object"]',
            "R8.xml": b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><s><file>&e;</file>'
            b"<status>200</status></s>",
        }
    )

    with caplog.at_level(logging.WARNING, logger="dispatch.connectors.bavel"):
        updates = connector.fetch_statuses(platform_refs=[ours])

    assert updates == [
        StatusUpdate(
            code="213",
            platform_ref=ours,
            occurred_at=dt.datetime(2026, 12, 3, 8, 15, tzinfo=dt.UTC),
            message="Numéro de TVA invalide",
            event_id="R1.json",
            ack_token="R1.json",
        ),
        StatusUpdate(
            code="203",
            platform_ref=ours,
            # No offset: the establishment's time zone.
            occurred_at=dt.datetime(2026, 12, 4, 10, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Madrid")),
            message="Mis à disposition",
            event_id="R2.xml",
            ack_token="R2.xml",
        ),
    ]
    skipped = {name for name in ("R3", "R4", "R5", "R6", "R7", "R8") if name in caplog.text}
    assert skipped == {"R3", "R4", "R5", "R6", "R7", "R8"}
    assert len(bavel.inbox) == 8, "reading acknowledges nothing"
    assert bavel.count("DELETE", "Inbox") == 0
    assert HttpAttempt.objects.filter(operation="fetch_statuses", status_code=200).count() == 9


def test_fetch_statuses_goes_on_when_one_file_cannot_be_fetched(bavel, connector, caplog):
    ours = connector.filename(make_document())
    bavel.listing_format = "text"
    bavel.inbox.update({"A.json": status_file(ours, "200"), "B.json": status_file(ours, "205")})
    bavel.answers.append(Response(json.dumps(["A.json", "B.json"]), content_type="text/plain"))
    bavel.answers.append(Response("disk error", status=500))

    with caplog.at_level(logging.WARNING, logger="dispatch.connectors.bavel"):
        updates = connector.fetch_statuses(platform_refs=[])

    assert [(u.code, u.ack_token) for u in updates] == [("205", "B.json")]
    assert "A.json" in caplog.text
    assert HttpAttempt.objects.filter(status_code=500).count() == 1


def test_plain_text_inbox_listing(bavel, connector):
    ours = connector.filename(make_document())
    bavel.listing_format = "text"
    bavel.inbox.update(
        {"A.json": status_file(ours, "APPROVED"), "B.json": status_file(ours, "PAID")}
    )

    updates = connector.fetch_statuses(platform_refs=[])

    assert [(u.code, u.event_id) for u in updates] == [("205", "A.json"), ("212", "B.json")]


def test_poll_records_statuses_and_acknowledges_only_what_was_stored(bavel, integration, connector):
    document = make_document()
    ours = connector.filename(document)
    dispatch = einvoice_dispatch(integration, platform_ref=ours)
    bavel.inbox.update(
        {
            "R1.json": status_file(ours, "DELIVERED", date="2026-12-03T09:00:00Z"),
            "R2.json": status_file(ours, "REJECTED", message="Duplicate invoice number"),
            "R3.json": status_file("someone-else.pdf", "200"),
            "R4.json": b"garbage",
        }
    )

    updates = connector.fetch_statuses(platform_refs=[ours])
    recorded = lifecycle_record(integration=integration, updates=updates, source="bavel-inbox")
    for update in recorded.handled:
        connector.acknowledge(update)

    assert sorted(bavel.inbox) == ["R3.json", "R4.json"]
    assert bavel.count("DELETE", "Inbox") == 2
    dispatch.refresh_from_db()
    assert dispatch.lifecycle_code == "213"
    assert dispatch.status == DispatchStatus.REJECTED
    assert dispatch.last_error == "Duplicate invoice number"
    assert list(
        LifecycleEvent.objects.filter(dispatch=dispatch)
        .order_by("id")
        .values_list("code", flat=True)
    ) == ["203", "213"]
    acks = HttpAttempt.objects.filter(operation="acknowledge")
    assert [(a.method, a.status_code) for a in acks] == [("DELETE", 204), ("DELETE", 204)]

    # The next poll finds only what nobody could store.
    assert {u.event_id for u in connector.fetch_statuses(platform_refs=[ours])} == {"R3.json"}


def test_acknowledging_a_file_already_gone_is_fine(bavel, connector):
    connector.acknowledge(StatusUpdate(code="200", ack_token="gone.json"))
    assert HttpAttempt.objects.get().status_code == 404

    bavel.answers.append(Response("busy", status=503))
    with pytest.raises(TransientError):
        connector.acknowledge(StatusUpdate(code="200", ack_token="R1.json"))


# The rest of the interface


def test_no_webhooks(connector):
    with pytest.raises(WebhookRejected):
        connector.parse_webhook(body=b"{}", headers={})


def test_test_connection_counts_waiting_files(bavel, connector):
    bavel.inbox.update({"A.json": b"{}", "B.json": b"{}", "C.json": b"{}"})
    with translation.override("en"):
        assert connector.test_connection() == "Connected: 3 files waiting in the inbox."
        bavel.inbox.clear()
        bavel.inbox["A.json"] = b"{}"
        assert connector.test_connection() == "Connected: 1 file waiting in the inbox."
    attempt = HttpAttempt.objects.filter(operation="test_connection").first()
    assert (attempt.method, attempt.status_code) == ("GET", 200)


def test_test_connection_with_a_wrong_password_says_so(bavel, integration):
    integration_set_secrets(
        integration=integration, credentials={"username": USERNAME, "password": "nope"}
    )
    with translation.override("en"), pytest.raises(ConfigurationError, match="credentials"):
        connector_for(integration).test_connection()
