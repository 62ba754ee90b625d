"""Connector for French e-invoicing platforms speaking the AFNOR flow API (XP Z12-013).

OAuth2 client credentials, `POST /v1/flows` (multipart: the file and a `flowInfo` JSON with
our tracking id and the file's SHA-256), `GET /v1/flows/{id}` for statuses, signed webhooks.

Error policy, on top of `http_request` (429/5xx/timeouts transient, 4xx rejected):
- a 2xx answer to a submission whose body cannot be read raises OutcomeUnknown: the platform
  may hold the flow, so the sender must search by tracking id before sending again;
- a 2xx answer to a read (token, search, status) whose body cannot be read raises
  TransientError: reading again is harmless and a broken proxy page is usually short-lived;
- a refused token (HTTP 4xx on the token endpoint) or an API that keeps answering 401 with
  a fresh token raises ConfigurationError: the credentials are wrong, not the document.
"""

import datetime as dt
import hashlib
import hmac
import json
import logging
import threading
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import quote

import requests
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext

from dispatch.integrations import integration_credentials, integration_webhook_secret
from dispatch.models import DocumentFormat, Integration, LifecycleCode

from .base import (
    ConfigurationError,
    Connector,
    Document,
    OutcomeUnknown,
    RejectedError,
    StatusUpdate,
    SubmitReceipt,
    TransientError,
    WebhookRejected,
)
from .http import http_request

logger = logging.getLogger(__name__)

FLOW_SYNTAX = {
    DocumentFormat.FACTURX_EN16931: "Factur-X",
    DocumentFormat.UBL: "UBL",
    DocumentFormat.CII: "CII",
}
FLOW_PROFILE = "EN16931"

# A token is renewed this long before the platform says it expires, so a request never
# leaves with a token that dies in flight.
TOKEN_EXPIRY_MARGIN_SECONDS = 60
# Lifetime assumed when the token answer gives none (RFC 6749 makes expires_in optional).
TOKEN_DEFAULT_LIFETIME_SECONDS = 300

# Messages of WebhookRejected: safe to show to whoever called the webhook.
WEBHOOK_INVALID_SIGNATURE = "invalid signature"
WEBHOOK_STALE_TIMESTAMP = "stale timestamp"
WEBHOOK_MALFORMED = "malformed body"


def _normalise(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if c.isalnum() and not unicodedata.combining(c)).lower()


# Status names platforms use instead of the CDAR code, in English and French.
_STATUS_NAMES = {
    "200": ["deposited", "submitted", "déposée", "deposee"],
    "201": ["issued", "émise", "emise", "émise par la plateforme"],
    "202": ["received", "reçue", "recue", "reçue par la plateforme"],
    "203": ["made available", "available", "mise à disposition"],
    "204": ["taken over", "in hand", "prise en charge"],
    "205": ["approved", "approuvée"],
    "206": ["partially approved", "approuvée partiellement", "partiellement approuvée"],
    "207": ["disputed", "in dispute", "en litige"],
    "208": ["suspended", "suspendue"],
    "209": ["completed", "complétée"],
    "210": ["refused", "refusée"],
    "211": ["payment sent", "payment transmitted", "paiement transmis"],
    "212": ["cashed", "collected", "paid", "encaissée"],
    "213": ["rejected", "rejetée"],
}
STATUS_CODES = {_normalise(name): code for code, names in _STATUS_NAMES.items() for name in names}


def status_code(value: Any) -> str:
    """The CDAR code of a status given as a code ("205", 205) or a name ("Approved");
    an unknown value is returned as text, so the caller logs what the platform said."""
    if value is None:
        return ""
    text = str(value).strip()
    if text in LifecycleCode.values:
        return text
    return STATUS_CODES.get(_normalise(text), text)


def _parse_datetime(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


@dataclass(frozen=True)
class AfnorConfig:
    base_url: str
    client_id: str
    client_secret: str
    token_url: str
    scope: str

    @classmethod
    def from_integration(cls, integration: Integration) -> "AfnorConfig":
        base_url = integration.endpoint.strip().rstrip("/")
        if not base_url.startswith(("https://", "http://")):
            raise ConfigurationError(
                f"Integration {integration.name!r}: the endpoint must be the platform's "
                "API URL (https://...)."
            )
        credentials = integration_credentials(integration=integration)
        missing = [k for k in ("client_id", "client_secret") if not credentials.get(k)]
        if missing:
            raise ConfigurationError(
                f"Integration {integration.name!r}: missing credentials {', '.join(missing)}."
            )
        options = integration.options or {}
        token_url = str(options.get("token_url") or f"{base_url}/oauth/token").strip()
        if not token_url.startswith(("https://", "http://")):
            raise ConfigurationError(
                f"Integration {integration.name!r}: option token_url must be an https URL."
            )
        return cls(
            base_url=base_url,
            client_id=str(credentials["client_id"]),
            client_secret=str(credentials["client_secret"]),
            token_url=token_url,
            scope=str(options.get("scope") or ""),
        )

    @property
    def fingerprint(self) -> str:
        """Changes whenever anything that identifies the token does, without holding secrets."""
        material = "\0".join((self.token_url, self.client_id, self.client_secret, self.scope))
        return hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True)
class _Token:
    value: str
    # time.monotonic() after which the token must not be used.
    expires_at: float


class _TokenCache:
    """Tokens per (integration id, credentials fingerprint), shared by a worker's threads.

    One lock per key, so only one thread fetches a token for an integration while the
    others wait for it, and integrations do not wait for each other.
    """

    def __init__(self) -> None:
        self._tokens: dict[tuple[int, str], _Token] = {}
        self._locks: dict[tuple[int, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, key: tuple[int, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, key: tuple[int, str]) -> str | None:
        with self._guard:
            token = self._tokens.get(key)
            if token is None or token.expires_at <= time.monotonic():
                return None
            return token.value

    def put(self, key: tuple[int, str], token: _Token) -> None:
        with self._guard:
            self._tokens[key] = token

    def drop(self, key: tuple[int, str], value: str) -> None:
        with self._guard:
            # Another thread may already have replaced it with a fresh one: keep that.
            if (token := self._tokens.get(key)) is not None and token.value == value:
                del self._tokens[key]

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()


_tokens = _TokenCache()


def afnor_token_cache_clear() -> None:
    """Forget every cached token (tests, or after credentials were changed by hand)."""
    _tokens.clear()


def _json(response: requests.Response, *, what: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise TransientError(
            f"{what}: unreadable answer (HTTP {response.status_code}, "
            f"{response.headers.get('Content-Type', 'no content type')}): "
            f"{response.text[:200]!r}"
        ) from exc


def _platform_message(exc: RejectedError) -> RejectedError:
    """The rejection with the platform's own words when its error body is JSON."""
    text = str(exc)
    prefix, _, body = text.partition(": ")
    try:
        data = json.loads(body)
    except ValueError:
        return exc
    if not isinstance(data, dict):
        return exc
    parts = [
        str(data[key])
        for key in ("message", "detail", "error_description", "error", "title")
        if data.get(key)
    ]
    errors = data.get("errors")
    if isinstance(errors, list):
        parts += [str(e.get("message") or e) if isinstance(e, dict) else str(e) for e in errors[:5]]
    if not parts:
        return exc
    return RejectedError(
        f"{prefix}: {'; '.join(dict.fromkeys(parts))}", status_code=exc.status_code
    )


class AfnorConnector(Connector):
    provider = "afnor"
    accepts_status_reports = True

    # Read on first use, so webhooks (which need only the webhook secret) do not depend on
    # the API credentials being complete; API calls still fail loudly without them.
    @cached_property
    def config(self) -> AfnorConfig:
        return AfnorConfig.from_integration(self.integration)

    @cached_property
    def _key(self) -> tuple[int, str]:
        return (self.integration.pk, self.config.fingerprint)

    # --- OAuth2 ---------------------------------------------------------------------

    def _fetch_token(self, *, dispatch_id: int | None) -> _Token:
        form = {"grant_type": "client_credentials"}
        if self.config.scope:
            form["scope"] = self.config.scope
        try:
            response = http_request(
                "POST",
                self.config.token_url,
                integration=self.integration,
                operation="token",
                dispatch_id=dispatch_id,
                data=form,
                auth=(self.config.client_id, self.config.client_secret),
                headers={"Accept": "application/json"},
            )
        except RejectedError as exc:
            raise ConfigurationError(
                f"The platform refused our client credentials: {_platform_message(exc)}"
            ) from exc
        data = _json(response, what="token")
        value = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            raise TransientError("token: the answer has no access_token.")
        try:
            lifetime = float(data.get("expires_in") or TOKEN_DEFAULT_LIFETIME_SECONDS)
        except (TypeError, ValueError):
            lifetime = TOKEN_DEFAULT_LIFETIME_SECONDS
        # Short-lived tokens still get half their life rather than none.
        usable = max(lifetime - TOKEN_EXPIRY_MARGIN_SECONDS, lifetime / 2)
        return _Token(value=value, expires_at=time.monotonic() + usable)

    def _token(self, *, dispatch_id: int | None) -> str:
        if (value := _tokens.get(self._key)) is not None:
            return value
        with _tokens.lock(self._key):
            # Another thread may have fetched it while this one waited for the lock.
            if (value := _tokens.get(self._key)) is not None:
                return value
            token = self._fetch_token(dispatch_id=dispatch_id)
            _tokens.put(self._key, token)
            return token.value

    def _api(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        dispatch_id: int | None = None,
        sends_document: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """One API call with a bearer token; a 401 renews the token and tries once more.

        Resending after a 401 is safe even for a submission: the platform refused the
        request before looking at it.
        """
        url = f"{self.config.base_url}{path}"
        extra_headers = kwargs.pop("headers", {})
        for attempt in (1, 2):
            token = self._token(dispatch_id=dispatch_id)
            headers = {**extra_headers, "Authorization": f"Bearer {token}"}
            try:
                return http_request(
                    method,
                    url,
                    integration=self.integration,
                    operation=operation,
                    dispatch_id=dispatch_id,
                    sends_document=sends_document,
                    headers=headers,
                    **kwargs,
                )
            except RejectedError as exc:
                if exc.status_code != 401:
                    raise _platform_message(exc) from exc
                _tokens.drop(self._key, token)
                if attempt == 2:
                    raise ConfigurationError(
                        "The platform refuses our access token (HTTP 401) even fresh: "
                        "check the integration's credentials and scope."
                    ) from exc
        raise AssertionError("unreachable")

    # --- flows ----------------------------------------------------------------------

    def _flow_info(self, document: Document) -> dict[str, str]:
        return {
            "trackingId": document.tracking_id,
            "name": document.filename,
            "flowSyntax": FLOW_SYNTAX[DocumentFormat(self.integration.document_format)],
            "flowProfile": FLOW_PROFILE,
            "sha256": document.sha256,
        }

    def _receipt(self, flow: dict[str, Any]) -> SubmitReceipt:
        code = status_code(flow.get("status"))
        return SubmitReceipt(
            platform_ref=str(flow["flowId"]),
            # The deposit itself is 200 when the platform gives no usable status yet.
            code=code if code in LifecycleCode.values else LifecycleCode.DEPOSITED.value,
            message=str(flow.get("message") or ""),
        )

    def submit(self, document: Document, *, dispatch_id: int | None = None) -> SubmitReceipt:
        response = self._api(
            "POST",
            "/v1/flows",
            operation="submit",
            dispatch_id=dispatch_id,
            sends_document=True,
            files={
                "file": (document.filename, document.content, document.media_type),
                "flowInfo": (None, json.dumps(self._flow_info(document)), "application/json"),
            },
            headers={"Accept": "application/json"},
        )
        try:
            flow = response.json()
            if not isinstance(flow, dict) or not flow.get("flowId"):
                raise ValueError("no flowId")
        except ValueError as exc:
            # Accepted (2xx) but unreadable: the flow may exist, so the sender must search
            # for it by tracking id instead of sending it again.
            raise OutcomeUnknown(
                f"submit: HTTP {response.status_code} without a readable flowId: "
                f"{response.text[:200]!r}"
            ) from exc
        return self._receipt(flow)

    def find_submission(
        self, document: Document, *, dispatch_id: int | None = None
    ) -> SubmitReceipt | None:
        response = self._api(
            "GET",
            "/v1/flows",
            operation="find_submission",
            dispatch_id=dispatch_id,
            params={"trackingId": document.tracking_id},
            headers={"Accept": "application/json"},
        )
        data = _json(response, what="find_submission")
        if isinstance(data, dict):
            data = next((data[k] for k in ("results", "flows", "items", "data") if k in data), None)
        if not isinstance(data, list):
            raise TransientError(f"find_submission: unexpected answer {response.text[:200]!r}")
        for flow in data:
            # Only a flow that carries our tracking id is ours: a platform that ignored the
            # filter must not make us believe a different flow is this document.
            if (
                isinstance(flow, dict)
                and flow.get("flowId")
                and flow.get("trackingId") == document.tracking_id
            ):
                return self._receipt(flow)
        return None

    def _flow_updates(self, flow: dict[str, Any], platform_ref: str) -> list[StatusUpdate]:
        flow_id = str(flow.get("flowId") or platform_ref)
        tracking_id = str(flow.get("trackingId") or "")
        history = flow.get("history")
        entries = history if isinstance(history, list) and history else [flow]
        updates = []
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            code = status_code(entry.get("status"))
            if not code:
                continue
            occurred = entry.get("occurredAt") or entry.get("updatedAt") or entry.get("date")
            updates.append(
                StatusUpdate(
                    code=code,
                    platform_ref=flow_id,
                    tracking_id=tracking_id,
                    occurred_at=_parse_datetime(occurred),
                    message=str(entry.get("message") or entry.get("reason") or ""),
                    # Stable across polls, so the poller can skip what it already stored.
                    event_id=str(entry.get("eventId") or f"{flow_id}:{code}:{occurred or ''}"),
                )
            )
        return updates

    def fetch_statuses(self, *, platform_refs: list[str]) -> list[StatusUpdate]:
        """The history of each flow (or its current status); a flow the platform does not
        know (HTTP 404) is logged and left out rather than stopping the others."""
        updates: list[StatusUpdate] = []
        for ref in platform_refs:
            try:
                response = self._api(
                    "GET",
                    f"/v1/flows/{quote(ref, safe='')}",
                    operation="fetch_status",
                    headers={"Accept": "application/json"},
                )
            except RejectedError as exc:
                if exc.status_code != 404:
                    raise
                logger.warning("integration %s: flow %s unknown: %s", self.integration.pk, ref, exc)
                continue
            flow = _json(response, what="fetch_status")
            if not isinstance(flow, dict):
                raise TransientError(f"fetch_status: unexpected answer {response.text[:200]!r}")
            updates += self._flow_updates(flow, ref)
        return updates

    def report_status(self, *, platform_ref: str, tracking_id: str, code: str) -> None:
        """`POST /v1/flows/{flowId}/lifecycle`: the flow API has no separate lifecycle
        resource in this brief, so the status is attached to the flow it concerns."""
        self._api(
            "POST",
            f"/v1/flows/{quote(platform_ref, safe='')}/lifecycle",
            operation="report_status",
            json={"status": code, "trackingId": tracking_id},
            headers={"Accept": "application/json"},
        )

    def test_connection(self) -> str:
        response = self._api(
            "GET",
            "/v1/flows",
            operation="test_connection",
            params={"limit": 1},
            headers={"Accept": "application/json"},
        )
        return gettext(
            "Connected to %(url)s: access token obtained, flow search answered HTTP %(status)s."
        ) % {"url": self.config.base_url, "status": response.status_code}

    # --- webhooks -------------------------------------------------------------------

    def _authenticate(self, *, body: bytes, headers: Mapping[str, str]) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        signature = lowered.get("x-signature", "").strip()
        timestamp = lowered.get("x-timestamp", "").strip()
        secret = integration_webhook_secret(integration=self.integration)
        if not secret:
            logger.error(
                "integration %s: webhook received but no secret is set", self.integration.pk
            )
            raise WebhookRejected(WEBHOOK_INVALID_SIGNATURE)
        if not signature.startswith("sha256=") or not timestamp.isdigit():
            raise WebhookRejected(WEBHOOK_INVALID_SIGNATURE)
        expected = hmac.new(
            secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, signature.removeprefix("sha256=").lower()):
            raise WebhookRejected(WEBHOOK_INVALID_SIGNATURE)
        # Checked after the signature, so an unauthenticated caller learns nothing of it.
        if abs(time.time() - int(timestamp)) > settings.WEBHOOK_TOLERANCE_SECONDS:
            raise WebhookRejected(WEBHOOK_STALE_TIMESTAMP)

    def parse_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> list[StatusUpdate]:
        """Events `{"eventId", "flowId", "trackingId", "status", "occurredAt", "message"}`,
        one or a list. An event without an eventId gets one from its content, so an exact
        replay of it is still recognised."""
        self._authenticate(body=body, headers=headers)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise WebhookRejected(WEBHOOK_MALFORMED) from exc
        events = data if isinstance(data, list) else [data]
        updates = []
        for event in events:
            if not isinstance(event, dict) or not (event.get("flowId") or event.get("trackingId")):
                raise WebhookRejected(WEBHOOK_MALFORMED)
            event_id = (
                event.get("eventId")
                or "sha256:"
                + hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()
            )
            updates.append(
                StatusUpdate(
                    code=status_code(event.get("status")),
                    platform_ref=str(event.get("flowId") or ""),
                    tracking_id=str(event.get("trackingId") or ""),
                    occurred_at=_parse_datetime(event.get("occurredAt")),
                    message=str(event.get("message") or ""),
                    event_id=str(event_id),
                )
            )
        return updates
