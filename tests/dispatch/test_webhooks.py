"""E-invoicing status webhooks through the Django test client: HMAC, tolerance, replays."""

import datetime as dt
import hashlib
import hmac
import json
import time

import pytest
from django.urls import reverse

from debtors.models import SendMode
from dispatch.connectors import WebhookRejected, connector_for
from dispatch.integrations import integration_set_secrets
from dispatch.models import (
    Channel,
    Dispatch,
    DispatchStatus,
    Integration,
    LifecycleEvent,
    Provider,
    WebhookEvent,
)
from dispatch.webhooks import webhook_receive
from tests.factories import (
    DebtorAccountFactory,
    DispatchFactory,
    EstablishmentFactory,
    InvoiceFactory,
)

pytestmark = pytest.mark.django_db

SECRET = "whsec-0123456789abcdef"


@pytest.fixture(autouse=True)
def _tolerance(settings):
    settings.WEBHOOK_TOLERANCE_SECONDS = 300


@pytest.fixture
def integration() -> Integration:
    integration = Integration.objects.create(
        establishment=EstablishmentFactory(),
        provider=Provider.AFNOR,
        name="Plateforme agréée",
        active=True,
        endpoint="https://pa.example/api",
    )
    return integration_set_secrets(
        integration=integration,
        credentials={"client_id": "hotel", "client_secret": "s3cret"},
        webhook_secret=SECRET,
    )


@pytest.fixture
def dispatch(integration) -> Dispatch:
    debtor = DebtorAccountFactory(
        establishment=integration.establishment,
        send_mode=SendMode.EINVOICING,
        integration=integration,
        einvoicing_id="73282932000074",
    )
    invoice = InvoiceFactory(debtor=debtor)
    return DispatchFactory(
        debtor=debtor,
        channel=Channel.EINVOICE,
        integration=integration,
        idempotency_key=f"einvoice:{integration.pk}:{invoice.pk}",
        status=DispatchStatus.SENT,
        sent_at=dt.datetime(2026, 12, 4, 1, 0, tzinfo=dt.UTC),
        platform_ref="FLOW-42",
        tracking_id="trk-42",
        lifecycle_code="200",
    )


def event(**fields) -> dict:
    return {
        "eventId": "evt-1",
        "flowId": "FLOW-42",
        "trackingId": "trk-42",
        "status": "204",
        "occurredAt": "2026-12-04T09:15:00Z",
        "message": "Prise en charge par le destinataire",
        **fields,
    }


def signed_headers(body: bytes, *, secret: str = SECRET, timestamp: int | None = None) -> dict:
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {"X-Signature": f"sha256={digest.hexdigest()}", "X-Timestamp": str(timestamp)}


def post(client, integration_id: int, body: bytes, headers: dict):
    return client.post(
        reverse("einvoicing-webhook", kwargs={"integration_id": integration_id}),
        data=body,
        content_type="application/json",
        headers=headers,
    )


def test_good_signature_stores_the_status(client, integration, dispatch):
    body = json.dumps(event()).encode()

    response = post(client, integration.pk, body, signed_headers(body))

    assert response.status_code == 200
    assert response.json() == {"stored": 1, "ignored": 0, "unmatched": 0}
    stored = LifecycleEvent.objects.get(dispatch=dispatch)
    assert stored.code == "204"
    assert stored.source == LifecycleEvent.Source.WEBHOOK
    assert stored.occurred_at == dt.datetime(2026, 12, 4, 9, 15, tzinfo=dt.UTC)
    assert stored.message == "Prise en charge par le destinataire"
    dispatch.refresh_from_db()
    assert dispatch.lifecycle_code == "204"
    assert WebhookEvent.objects.get(integration=integration).event_id == "evt-1"


def test_a_list_of_events_with_status_names(client, integration, dispatch):
    body = json.dumps(
        [
            event(eventId="evt-1", status="Approved", occurredAt="2026-12-05T10:00:00Z"),
            # Matched by tracking id alone.
            event(eventId="evt-2", flowId=None, status="Encaissée"),
        ]
    ).encode()

    response = post(client, integration.pk, body, signed_headers(body))

    assert response.json() == {"stored": 2, "ignored": 0, "unmatched": 0}
    assert list(dispatch.lifecycle.values_list("code", flat=True)) == ["205", "212"]
    dispatch.refresh_from_db()
    assert dispatch.lifecycle_code == "212"


def test_rejection_status_marks_the_dispatch_rejected(client, integration, dispatch):
    body = json.dumps(event(status="Rejetée", message="Doublon de facture")).encode()
    assert post(client, integration.pk, body, signed_headers(body)).status_code == 200
    dispatch.refresh_from_db()
    assert dispatch.status == DispatchStatus.REJECTED
    assert dispatch.last_error == "Doublon de facture"


@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(lambda body: signed_headers(body, secret="not-the-secret"), id="wrong-key"),
        pytest.param(lambda body: signed_headers(body + b" "), id="other-body"),
        pytest.param(lambda body: {}, id="missing"),
        pytest.param(
            lambda body: {**signed_headers(body), "X-Timestamp": str(int(time.time()) + 1)},
            id="timestamp-changed",
        ),
        pytest.param(
            lambda body: {
                **signed_headers(body),
                "X-Signature": signed_headers(body)["X-Signature"].removeprefix("sha256="),
            },
            id="no-scheme",
        ),
        pytest.param(
            lambda body: {**signed_headers(body), "X-Timestamp": "yesterday"},
            id="timestamp-not-a-number",
        ),
    ],
)
def test_bad_signature_is_refused_and_nothing_is_stored(
    client, integration, dispatch, make_headers
):
    body = json.dumps(event()).encode()

    response = post(client, integration.pk, body, make_headers(body))

    assert response.status_code == 401
    assert response.json() == {"error": "invalid signature"}
    assert not LifecycleEvent.objects.exists()
    assert not WebhookEvent.objects.exists()
    dispatch.refresh_from_db()
    assert dispatch.lifecycle_code == "200"


@pytest.mark.parametrize("age", [301, -301, 86_400])
def test_stale_timestamp_is_refused(client, integration, dispatch, age):
    body = json.dumps(event()).encode()
    headers = signed_headers(body, timestamp=int(time.time()) - age)

    response = post(client, integration.pk, body, headers)

    assert response.status_code == 401
    assert response.json() == {"error": "stale timestamp"}
    assert not LifecycleEvent.objects.exists()
    assert not WebhookEvent.objects.exists()


def test_timestamp_within_tolerance_is_accepted(client, integration, dispatch):
    body = json.dumps(event()).encode()
    headers = signed_headers(body, timestamp=int(time.time()) - 290)
    assert post(client, integration.pk, body, headers).status_code == 200


def test_replayed_event_is_ignored(client, integration, dispatch):
    body = json.dumps(event()).encode()
    headers = signed_headers(body)
    assert post(client, integration.pk, body, headers).json()["stored"] == 1

    # The same request again, and the same event redelivered with a fresh signature.
    replay = post(client, integration.pk, body, headers)
    redelivery_body = json.dumps(event(message="again")).encode()
    redelivery = post(client, integration.pk, redelivery_body, signed_headers(redelivery_body))

    assert replay.status_code == 200 and redelivery.status_code == 200
    assert replay.json() == {"stored": 0, "ignored": 1, "unmatched": 0}
    assert redelivery.json() == {"stored": 0, "ignored": 1, "unmatched": 0}
    assert LifecycleEvent.objects.filter(dispatch=dispatch).count() == 1
    assert WebhookEvent.objects.count() == 1


def test_replayed_event_inside_one_delivery_is_stored_once(client, integration, dispatch):
    body = json.dumps([event(), event(), event(eventId="evt-2", status="205")]).encode()
    response = post(client, integration.pk, body, signed_headers(body))
    assert response.json() == {"stored": 2, "ignored": 1, "unmatched": 0}
    assert list(dispatch.lifecycle.values_list("code", flat=True)) == ["204", "205"]


def test_event_ids_are_per_integration(client, integration, dispatch):
    other = integration_set_secrets(
        integration=Integration.objects.create(
            establishment=integration.establishment,
            provider=Provider.AFNOR,
            name="Autre plateforme",
            active=True,
            endpoint="https://other.example/api",
        ),
        webhook_secret=SECRET,
    )
    body = json.dumps(event()).encode()
    assert post(client, integration.pk, body, signed_headers(body)).json()["stored"] == 1
    # The other integration has no such submission, but its event id is its own.
    response = post(client, other.pk, body, signed_headers(body))
    assert response.json() == {"stored": 0, "ignored": 0, "unmatched": 1}


def test_event_for_an_unknown_submission_can_be_redelivered(client, integration, dispatch):
    body = json.dumps(event(flowId="FLOW-NEW", trackingId="trk-new")).encode()

    first = post(client, integration.pk, body, signed_headers(body))

    assert first.json() == {"stored": 0, "ignored": 0, "unmatched": 1}
    assert not WebhookEvent.objects.exists()
    # The submission becomes known (its receipt was stored after the callback came in).
    dispatch.platform_ref, dispatch.tracking_id = "FLOW-NEW", "trk-new"
    dispatch.save()
    second = post(client, integration.pk, body, signed_headers(body))
    assert second.json() == {"stored": 1, "ignored": 0, "unmatched": 0}


def test_malformed_body_with_a_good_signature_is_a_bad_request(client, integration, dispatch):
    for body in (b"not json", b'{"status": "204"}', b"[1, 2]"):
        response = post(client, integration.pk, body, signed_headers(body))
        assert response.status_code == 400
        assert response.json() == {"error": "malformed payload"}
    assert not WebhookEvent.objects.exists()


def test_unknown_integration_is_not_found(client, integration):
    body = json.dumps(event()).encode()
    response = post(client, integration.pk + 1000, body, signed_headers(body))
    assert response.status_code == 404


def test_inactive_integration_is_not_found(client, integration, dispatch):
    integration.active = False
    integration.save()
    body = json.dumps(event()).encode()

    response = post(client, integration.pk, body, signed_headers(body))

    assert response.status_code == 404
    assert not LifecycleEvent.objects.exists()


def test_only_post_is_allowed(client, integration):
    url = reverse("einvoicing-webhook", kwargs={"integration_id": integration.pk})
    assert client.get(url).status_code == 405


def test_integration_without_webhook_secret_refuses_everything(client, integration, dispatch):
    integration.webhook_secret_encrypted = ""
    integration.save()
    body = json.dumps(event()).encode()
    # Signed with an empty key, as a naive implementation would accept.
    response = post(client, integration.pk, body, signed_headers(body, secret=""))
    assert response.status_code == 401
    assert not LifecycleEvent.objects.exists()


def test_webhook_receive_service(integration, dispatch):
    body = json.dumps(event(eventId="evt-svc")).encode()
    headers = {k.lower(): v for k, v in signed_headers(body).items()}

    assert webhook_receive(integration=integration, body=body, headers=headers) == {
        "stored": 1,
        "ignored": 0,
        "unmatched": 0,
    }
    assert webhook_receive(integration=integration, body=body, headers=headers)["ignored"] == 1
    with pytest.raises(WebhookRejected):
        webhook_receive(integration=integration, body=body + b"x", headers=headers)


def test_parse_webhook_gives_an_id_to_events_without_one(integration):
    payload = event()
    del payload["eventId"]
    body = json.dumps(payload).encode()
    connector = connector_for(integration)

    first = connector.parse_webhook(body=body, headers=signed_headers(body))
    again = connector.parse_webhook(body=body, headers=signed_headers(body))

    assert first[0].event_id.startswith("sha256:")
    assert first[0].event_id == again[0].event_id
    assert (first[0].code, first[0].platform_ref, first[0].tracking_id) == (
        "204",
        "FLOW-42",
        "trk-42",
    )
