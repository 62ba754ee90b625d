"""E-invoicing platform connectors: one module per platform behind `base.Connector`."""

from .base import (
    ConfigurationError,
    Connector,
    ConnectorError,
    Document,
    OutcomeUnknown,
    RejectedError,
    StatusUpdate,
    SubmitReceipt,
    TransientError,
    WebhookRejected,
)
from .registry import connector_for

__all__ = [
    "ConfigurationError",
    "Connector",
    "ConnectorError",
    "Document",
    "OutcomeUnknown",
    "RejectedError",
    "StatusUpdate",
    "SubmitReceipt",
    "TransientError",
    "WebhookRejected",
    "connector_for",
]
