"""The one small interface every e-invoicing connector implements.

Errors tell the sender what to do: `TransientError` (timeouts, HTTP 429 and 5xx) is retried
with backoff, `OutcomeUnknown` (a timeout after the document left) makes the sender ask
the platform before sending again, `RejectedError` (HTTP 4xx, a refusal) is final and
keeps the platform's message, `ConfigurationError` means the integration is incomplete.
"""

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from dispatch.models import Integration


class ConnectorError(Exception):
    """Base class of connector failures."""


class TransientError(ConnectorError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        # Seconds the platform asked us to wait (HTTP Retry-After), if any.
        self.retry_after = retry_after


class OutcomeUnknown(TransientError):
    """The request may have been processed: check with the platform before resending."""


class RejectedError(ConnectorError):
    """The platform refused the request for good (HTTP 4xx or a rejection status)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ConfigurationError(ConnectorError):
    """The integration lacks something the platform needs (URL, credentials, code)."""


class WebhookRejected(ConnectorError):
    """A callback that is not authentic, too old, or malformed."""


@dataclass(frozen=True)
class Document:
    """An e-invoice ready to send: built and validated before any connector sees it."""

    invoice_number: str
    filename: str
    content: bytes
    media_type: str
    sha256: str
    # Ours, unique per submission; platforms that take one echo it back.
    tracking_id: str


@dataclass(frozen=True)
class SubmitReceipt:
    platform_ref: str
    # The first lifecycle code the platform gives (usually "200"), if it gives one.
    code: str = ""
    message: str = ""


@dataclass(frozen=True)
class StatusUpdate:
    """A lifecycle status reported by the platform for one submission."""

    code: str
    platform_ref: str = ""
    tracking_id: str = ""
    occurred_at: dt.datetime | None = None
    message: str = ""
    # The platform's id of this event, to ignore replays.
    event_id: str = ""
    # Connector-specific handle to acknowledge the update once stored (Bavel inbox file).
    ack_token: str = ""


class Connector(ABC):
    provider: str
    # Whether the platform accepts statuses from us (212 cashed when an invoice is paid).
    accepts_status_reports: bool = False

    def __init__(self, integration: Integration) -> None:
        self.integration = integration

    @abstractmethod
    def submit(self, document: Document, *, dispatch_id: int | None = None) -> SubmitReceipt:
        """Send a document once; raise TransientError, OutcomeUnknown or RejectedError."""

    @abstractmethod
    def find_submission(
        self, document: Document, *, dispatch_id: int | None = None
    ) -> SubmitReceipt | None:
        """After an unknown outcome: the platform's record of this document, or None."""

    @abstractmethod
    def fetch_statuses(self, *, platform_refs: list[str]) -> list[StatusUpdate]:
        """Lifecycle statuses the platform has for these submissions (or its inbox)."""

    def acknowledge(self, update: StatusUpdate) -> None:  # noqa: B027  optional step
        """Tell the platform a status was stored (no-op where the protocol has no ack)."""

    @abstractmethod
    def parse_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> list[StatusUpdate]:
        """Authenticate and read a callback; raise WebhookRejected."""

    def report_status(self, *, platform_ref: str, tracking_id: str, code: str) -> None:
        """Report a status we know to the platform (212 cashed when paid)."""
        raise ConfigurationError(f"{self.provider} does not accept status reports.")

    @abstractmethod
    def test_connection(self) -> str:
        """Call the platform and return a human-readable answer; raise ConnectorError."""
