"""The AFNOR flow API connector against a local server that speaks the protocol."""

import base64
import datetime as dt
import hashlib
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from werkzeug import Request, Response

from dispatch.connectors import (
    ConfigurationError,
    Document,
    OutcomeUnknown,
    RejectedError,
    TransientError,
    connector_for,
)
from dispatch.connectors.afnor import AfnorConfig, AfnorConnector, afnor_token_cache_clear
from dispatch.integrations import integration_set_secrets
from dispatch.models import DocumentFormat, HttpAttempt, Integration, Provider
from tests.factories import EstablishmentFactory

pytestmark = pytest.mark.django_db

PREFIX = "/afnor"
CLIENT_ID = "hotel-paris"
CLIENT_SECRET = "s3cret:with colon"
SCOPE = "flows.write flows.read"


@pytest.fixture(autouse=True)
def _fresh_tokens():
    afnor_token_cache_clear()
    yield
    afnor_token_cache_clear()


def json_response(data, status=200, headers=None) -> Response:
    return Response(
        json.dumps(data), status=status, content_type="application/json", headers=headers
    )


class FakeAfnor:
    """An AFNOR flow platform on a local server: OAuth2 token endpoint and /v1/flows.

    `answers` replaces the platform's answer to the next API requests (after the token
    check), to play failures; `post_delay` makes a submission answer late after storing it.
    """

    def __init__(self, httpserver) -> None:
        self.token_requests: list[dict] = []
        self.tokens_issued: list[str] = []
        self.valid_tokens: set[str] = set()
        self.token_answer: Response | None = None
        self.expires_in = 3600
        self.submissions: list[dict] = []
        self.flows: dict[str, dict] = {}
        self.api_requests: list[tuple[str, str, str]] = []
        self.answers: list[Response] = []
        self.post_delay = 0.0
        self.reported: list[dict] = []
        httpserver.expect_request(f"{PREFIX}/oauth/token", method="POST").respond_with_handler(
            self.token
        )
        httpserver.expect_request(re.compile(f"^{PREFIX}/v1/")).respond_with_handler(self.api)

    def token(self, request: Request) -> Response:
        self.token_requests.append(
            {
                "authorization": request.headers.get("Authorization", ""),
                "form": dict(request.form),
                "content_type": request.mimetype,
            }
        )
        if self.token_answer is not None:
            return self.token_answer
        value = f"tok-{len(self.tokens_issued) + 1}"
        self.tokens_issued.append(value)
        self.valid_tokens.add(value)
        return json_response(
            {"access_token": value, "token_type": "Bearer", "expires_in": self.expires_in}
        )

    def api(self, request: Request) -> Response:
        authorization = request.headers.get("Authorization", "")
        self.api_requests.append((request.method, request.path, authorization))
        if authorization.removeprefix("Bearer ") not in self.valid_tokens:
            return json_response({"error": "invalid_token"}, status=401)
        if self.answers:
            return self.answers.pop(0)
        path = request.path.removeprefix(PREFIX)
        if request.method == "POST" and path == "/v1/flows":
            return self.submit(request)
        if request.method == "GET" and path == "/v1/flows":
            tracking_id = request.args.get("trackingId")
            found = [
                f for f in self.flows.values() if not tracking_id or f["trackingId"] == tracking_id
            ]
            limit = int(request.args.get("limit", 50))
            return json_response({"results": found[:limit], "total": len(found)})
        if match := re.fullmatch(r"/v1/flows/([^/]+)/lifecycle", path):
            self.reported.append({"flowId": match[1], **json.loads(request.get_data())})
            return json_response({"accepted": True}, status=202)
        if match := re.fullmatch(r"/v1/flows/([^/]+)", path):
            flow = self.flows.get(match[1])
            if flow is None:
                return json_response({"message": "flow not found"}, status=404)
            return json_response(flow)
        return json_response({"message": "no such route"}, status=404)

    def submit(self, request: Request) -> Response:
        file = request.files["file"]
        content = file.read()
        info = json.loads(request.form["flowInfo"])
        self.submissions.append(
            {
                "content": content,
                "filename": file.filename,
                "media_type": file.mimetype,
                "info": info,
                "content_type": request.mimetype,
            }
        )
        flow_id = f"FLOW-{len(self.flows) + 1}"
        self.flows[flow_id] = {
            "flowId": flow_id,
            "trackingId": info["trackingId"],
            "status": "Deposited",
        }
        if self.post_delay:
            time.sleep(self.post_delay)
        return json_response({"flowId": flow_id, "status": "Deposited"}, status=201)

    def posts(self) -> int:
        return sum(
            1
            for method, path, _ in self.api_requests
            if (method, path) == ("POST", f"{PREFIX}/v1/flows")
        )


@pytest.fixture
def platform(httpserver) -> FakeAfnor:
    return FakeAfnor(httpserver)


@pytest.fixture
def integration(httpserver, platform) -> Integration:
    integration = Integration.objects.create(
        establishment=EstablishmentFactory(),
        provider=Provider.AFNOR,
        name="Plateforme agréée",
        active=True,
        endpoint=httpserver.url_for(PREFIX) + "/",
        options={"scope": SCOPE},
    )
    return integration_set_secrets(
        integration=integration,
        credentials={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        webhook_secret="whsec-test",
    )


def make_document(number: str = "F000123", tracking_id: str = "trk-0001") -> Document:
    content = b"%PDF-1.7\n% factur-x stand-in for " + number.encode() + bytes(range(256))
    return Document(
        invoice_number=number,
        filename=f"facture-{number}.pdf",
        content=content,
        media_type="application/pdf",
        sha256=hashlib.sha256(content).hexdigest(),
        tracking_id=tracking_id,
    )


def test_server_listens_on_loopback_address(httpserver):
    assert httpserver.host == "127.0.0.1"


def test_registry_gives_the_afnor_connector(integration):
    connector = connector_for(integration)
    assert isinstance(connector, AfnorConnector)
    assert connector.provider == "afnor" and connector.accepts_status_reports


def test_submit_sends_multipart_flow_and_caches_the_token(integration, platform):
    connector = connector_for(integration)
    first, second = make_document("F1", "trk-1"), make_document("F2", "trk-2")

    receipt1 = connector.submit(first, dispatch_id=None)
    # A new connector object (as each task builds one) still uses the cached token.
    receipt2 = connector_for(integration).submit(second)

    assert receipt1.platform_ref == "FLOW-1" and receipt1.code == "200"
    assert receipt2.platform_ref == "FLOW-2" and receipt2.code == "200"
    assert len(platform.token_requests) == 1
    token_request = platform.token_requests[0]
    expected_basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert token_request["authorization"] == f"Basic {expected_basic}"
    assert token_request["content_type"] == "application/x-www-form-urlencoded"
    assert token_request["form"] == {"grant_type": "client_credentials", "scope": SCOPE}
    assert [auth for _, _, auth in platform.api_requests] == ["Bearer tok-1", "Bearer tok-1"]

    sent = platform.submissions[0]
    assert sent["content_type"] == "multipart/form-data"
    assert sent["content"] == first.content
    assert sent["filename"] == "facture-F1.pdf"
    assert sent["media_type"] == "application/pdf"
    assert sent["info"] == {
        "trackingId": "trk-1",
        "name": "facture-F1.pdf",
        "flowSyntax": "Factur-X",
        "flowProfile": "EN16931",
        "sha256": first.sha256,
    }
    assert sent["info"]["sha256"] == hashlib.sha256(sent["content"]).hexdigest()
    assert platform.submissions[1]["info"]["trackingId"] == "trk-2"

    attempts = list(HttpAttempt.objects.filter(integration=integration).order_by("id"))
    assert [(a.operation, a.method, a.status_code, a.error) for a in attempts] == [
        ("token", "POST", 200, ""),
        ("submit", "POST", 201, ""),
        ("submit", "POST", 201, ""),
    ]
    # The secret never lands in what is stored about the requests.
    assert all(CLIENT_SECRET not in a.url + a.error for a in attempts)


@pytest.mark.parametrize(
    ("document_format", "syntax"),
    [(DocumentFormat.UBL, "UBL"), (DocumentFormat.CII, "CII")],
)
def test_flow_syntax_follows_the_document_format(integration, platform, document_format, syntax):
    integration.document_format = document_format
    integration.save()
    connector_for(integration).submit(make_document())
    assert platform.submissions[0]["info"]["flowSyntax"] == syntax


def test_4xx_is_a_rejection_with_the_platform_message(integration, platform):
    platform.answers.append(
        json_response(
            {"message": "Destinataire inconnu de l'annuaire", "errors": [{"message": "SIREN"}]},
            status=422,
        )
    )
    with pytest.raises(RejectedError) as excinfo:
        connector_for(integration).submit(make_document())
    assert excinfo.value.status_code == 422
    assert "Destinataire inconnu de l'annuaire" in str(excinfo.value)
    assert "SIREN" in str(excinfo.value)
    attempt = HttpAttempt.objects.get(operation="submit")
    assert attempt.status_code == 422 and "Destinataire inconnu" in attempt.error


def test_5xx_is_transient_and_the_retry_succeeds(integration, platform):
    platform.answers.append(Response("Bad gateway", status=502))
    connector = connector_for(integration)
    with pytest.raises(TransientError) as excinfo:
        connector.submit(make_document())
    assert not isinstance(excinfo.value, OutcomeUnknown)
    assert "HTTP 502" in str(excinfo.value)

    receipt = connector.submit(make_document())
    assert receipt.platform_ref == "FLOW-1"
    assert platform.posts() == 2
    assert len(platform.flows) == 1
    assert list(
        HttpAttempt.objects.filter(operation="submit").order_by("id").values_list("status_code")
    ) == [(502,), (201,)]


def test_429_is_transient_with_retry_after(integration, platform):
    platform.answers.append(
        json_response({"message": "slow down"}, status=429, headers={"Retry-After": "7"})
    )
    with pytest.raises(TransientError) as excinfo:
        connector_for(integration).submit(make_document())
    assert excinfo.value.retry_after == 7.0
    assert platform.flows == {}


def test_timeout_after_the_flow_arrived_is_found_by_tracking_id(integration, platform, settings):
    settings.EINVOICING_HTTP_TIMEOUT = (2.0, 0.3)
    platform.post_delay = 0.8
    document = make_document(tracking_id="trk-late")
    connector = connector_for(integration)

    with pytest.raises(OutcomeUnknown):
        connector.submit(document)

    settings.EINVOICING_HTTP_TIMEOUT = (2.0, 5.0)
    receipt = connector.find_submission(document)
    assert receipt is not None and receipt.platform_ref == "FLOW-1" and receipt.code == "200"
    assert platform.posts() == 1
    assert ("GET", f"{PREFIX}/v1/flows") in [(m, p) for m, p, _ in platform.api_requests]
    # Another document is not mistaken for this one.
    assert connector.find_submission(make_document(tracking_id="trk-other")) is None
    assert HttpAttempt.objects.get(operation="submit").error.startswith("read timeout")


def test_find_submission_ignores_flows_of_other_tracking_ids(integration, platform):
    # A platform that ignores the filter and lists everything.
    platform.answers.append(
        json_response([{"flowId": "FLOW-X", "trackingId": "someone-else", "status": "200"}])
    )
    assert connector_for(integration).find_submission(make_document()) is None


def test_garbage_answer_to_a_submission_is_an_unknown_outcome(integration, platform):
    platform.answers.append(Response("<html>proxy says hi</html>", status=201))
    with pytest.raises(OutcomeUnknown, match="without a readable flowId"):
        connector_for(integration).submit(make_document())


def test_garbage_answers_to_reads_are_transient(integration, platform):
    connector = connector_for(integration)
    platform.answers.append(Response("not json{", status=200))
    with pytest.raises(TransientError, match="unreadable answer"):
        connector.find_submission(make_document())
    platform.answers.append(json_response("just a string"))
    with pytest.raises(TransientError, match="unexpected answer"):
        connector.find_submission(make_document())
    platform.answers.append(Response(b"\x00\xff garbage", status=200))
    with pytest.raises(TransientError, match="unreadable answer"):
        connector.fetch_statuses(platform_refs=["FLOW-1"])


def test_garbage_token_answer_is_transient(integration, platform):
    platform.token_answer = Response("<html>maintenance</html>", status=200)
    with pytest.raises(TransientError, match="token: unreadable answer"):
        connector_for(integration).submit(make_document())
    platform.token_answer = json_response({"token_type": "Bearer"})
    with pytest.raises(TransientError, match="no access_token"):
        connector_for(integration).submit(make_document())
    assert platform.posts() == 0


def test_refused_credentials_are_a_configuration_error(integration, platform):
    platform.token_answer = json_response(
        {"error": "invalid_client", "error_description": "Client authentication failed"},
        status=401,
    )
    with pytest.raises(ConfigurationError, match="Client authentication failed"):
        connector_for(integration).submit(make_document())
    assert platform.posts() == 0


def test_401_drops_the_token_and_retries_once_with_a_fresh_one(integration, platform):
    connector = connector_for(integration)
    connector.submit(make_document("F1", "trk-1"))
    # The platform revokes the token before it expires.
    platform.valid_tokens.clear()

    receipt = connector.submit(make_document("F2", "trk-2"))

    assert receipt.platform_ref == "FLOW-2"
    assert len(platform.token_requests) == 2
    assert [auth for _, _, auth in platform.api_requests] == [
        "Bearer tok-1",
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    # The fresh token is the one kept for what follows.
    connector_for(integration).submit(make_document("F3", "trk-3"))
    assert len(platform.token_requests) == 2


def test_401_with_a_fresh_token_is_not_retried_in_a_loop(integration, platform):
    platform.answers += [json_response({"error": "invalid_token"}, status=401)] * 2
    with pytest.raises(ConfigurationError, match="HTTP 401"):
        connector_for(integration).submit(make_document())
    assert platform.posts() == 2
    assert len(platform.token_requests) == 2
    assert platform.flows == {}


def test_token_is_renewed_before_it_expires(integration, platform):
    platform.expires_in = 1  # Used for half its life: 0.5 s.
    connector = connector_for(integration)
    connector.submit(make_document("F1", "trk-1"))
    connector.submit(make_document("F2", "trk-2"))
    assert len(platform.token_requests) == 1
    time.sleep(0.6)
    connector.submit(make_document("F3", "trk-3"))
    assert len(platform.token_requests) == 2
    assert platform.api_requests[-1][2] == "Bearer tok-2"


def test_changed_credentials_do_not_reuse_the_old_token(integration, platform):
    connector_for(integration).submit(make_document("F1", "trk-1"))
    integration_set_secrets(
        integration=integration,
        credentials={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
    )
    integration.options = {"scope": "flows.read"}
    integration.save()
    connector_for(integration).test_connection()
    assert len(platform.token_requests) == 2
    assert platform.token_requests[1]["form"]["scope"] == "flows.read"


@pytest.mark.django_db(transaction=True)
def test_concurrent_threads_fetch_one_token(integration, platform):
    # Each thread has its own database connection, as in a threaded worker.
    def submit(n: int) -> str:
        try:
            return (
                connector_for(integration).submit(make_document(f"F{n}", f"trk-{n}")).platform_ref
            )
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        refs = list(pool.map(submit, range(6)))

    assert sorted(refs) == sorted(f"FLOW-{n}" for n in range(1, 7))
    assert len(platform.token_requests) == 1


def test_fetch_statuses_maps_codes_names_and_history(integration, platform):
    platform.flows["FLOW-7"] = {
        "flowId": "FLOW-7",
        "trackingId": "trk-7",
        "status": "Approved",
        "history": [
            {"status": "Deposited", "occurredAt": "2026-12-04T02:00:05Z"},
            {"status": "204", "occurredAt": "2026-12-04T08:30:00+01:00"},
            {"status": "Approuvée", "occurredAt": "2026-12-05T10:00:00Z", "message": "OK compta"},
        ],
    }
    platform.flows["FLOW-8"] = {"flowId": "FLOW-8", "trackingId": "trk-8", "status": "Encaissée"}
    platform.flows["FLOW-9"] = {
        "flowId": "FLOW-9",
        "trackingId": "trk-9",
        "status": "Rejected",
        "message": "Numéro de facture en double",
    }

    updates = connector_for(integration).fetch_statuses(
        platform_refs=["FLOW-7", "FLOW-8", "FLOW-404", "FLOW-9"]
    )

    assert [(u.platform_ref, u.code) for u in updates] == [
        ("FLOW-7", "200"),
        ("FLOW-7", "204"),
        ("FLOW-7", "205"),
        ("FLOW-8", "212"),
        ("FLOW-9", "213"),
    ]
    assert updates[0].tracking_id == "trk-7"
    assert updates[1].occurred_at == dt.datetime(2026, 12, 4, 7, 30, tzinfo=dt.UTC)
    assert updates[2].message == "OK compta"
    assert updates[4].message == "Numéro de facture en double"
    # Stable ids: polling twice gives the same events, so the poller can skip known ones.
    again = connector_for(integration).fetch_statuses(platform_refs=["FLOW-7"])
    assert [u.event_id for u in again] == [u.event_id for u in updates[:3]]
    assert len({u.event_id for u in updates}) == 5


def test_report_status_posts_the_lifecycle_of_the_flow(integration, platform):
    connector_for(integration).report_status(platform_ref="FLOW-3", tracking_id="trk-3", code="212")
    assert platform.reported == [{"flowId": "FLOW-3", "status": "212", "trackingId": "trk-3"}]
    assert HttpAttempt.objects.get(operation="report_status").status_code == 202


def test_test_connection_reports_the_answer(integration, platform):
    message = connector_for(integration).test_connection()
    assert "HTTP 200" in message and integration.endpoint.rstrip("/") in message
    assert ("GET", f"{PREFIX}/v1/flows") in [(m, p) for m, p, _ in platform.api_requests]


def test_test_connection_with_a_down_platform_raises(integration, platform):
    platform.token_answer = Response("down", status=503)
    with pytest.raises(TransientError, match="HTTP 503"):
        connector_for(integration).test_connection()


@pytest.mark.parametrize(
    ("endpoint", "credentials", "options", "message"),
    [
        ("", {"client_id": "a", "client_secret": "b"}, {}, "endpoint"),
        ("ftp://127.0.0.1/x", {"client_id": "a", "client_secret": "b"}, {}, "endpoint"),
        ("https://pa.example/api", {"client_id": "a"}, {}, "client_secret"),
        ("https://pa.example/api", {}, {}, "client_id, client_secret"),
        (
            "https://pa.example/api",
            {"client_id": "a", "client_secret": "b"},
            {"token_url": "/oauth"},
            "token_url",
        ),
    ],
)
def test_incomplete_configuration_fails_loudly(endpoint, credentials, options, message):
    integration = integration_set_secrets(
        integration=Integration(
            establishment=EstablishmentFactory(),
            provider=Provider.AFNOR,
            name="PA",
            endpoint=endpoint,
            options=options,
        ),
        credentials=credentials,
    )
    with pytest.raises(ConfigurationError, match=message):
        connector_for(integration).submit(make_document())


def test_configuration_defaults():
    integration = integration_set_secrets(
        integration=Integration(
            establishment=EstablishmentFactory(),
            provider=Provider.AFNOR,
            name="PA",
            endpoint="https://pa.example/api/",
        ),
        credentials={"client_id": "a", "client_secret": "b"},
    )
    config = AfnorConfig.from_integration(integration)
    assert config.base_url == "https://pa.example/api"
    assert config.token_url == "https://pa.example/api/oauth/token"
    assert config.scope == ""
