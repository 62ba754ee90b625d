"""One HTTP client for every platform: mandatory timeouts, every attempt stored.

There is no hidden retry loop here: each request is one attempt, recorded as an
`HttpAttempt` with its status and error. Retrying is the sender's explicit policy (bounded
exponential backoff on the dispatch, honouring Retry-After), so every try is visible.
"""

import time
from functools import cache
from typing import Any

import requests
import urllib3
from django.conf import settings

from dispatch.models import HttpAttempt, Integration

from .base import OutcomeUnknown, RejectedError, TransientError

USER_AGENT = "hotel-billing/0.1 (+e-invoicing)"
# Bodies of error answers kept in messages and attempts, for reading, not storage.
ERROR_BODY_CHARS = 500


@cache
def _session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    # No adapter-level retries: see the module docstring.
    adapter = requests.adapters.HTTPAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when the TCP connection was never made, so nothing can have been received."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    return None


def http_request(
    method: str,
    url: str,
    *,
    integration: Integration,
    operation: str,
    dispatch_id: int | None = None,
    sends_document: bool = False,
    timeout: tuple[float, float] | None = None,
    **kwargs: Any,
) -> requests.Response:
    """Make one request and record it; raise on anything but a 2xx answer.

    `sends_document`: a read timeout then means the platform may have the document, so it
    raises OutcomeUnknown instead of TransientError.
    """
    timeout = timeout or settings.EINVOICING_HTTP_TIMEOUT
    started = time.monotonic()
    attempt = HttpAttempt(
        integration=integration,
        dispatch_id=dispatch_id,
        operation=operation,
        method=method.upper(),
        url=url[:1000],
    )
    try:
        response = _session().request(method, url, timeout=timeout, **kwargs)
    except requests.ConnectTimeout as exc:
        attempt.error = f"connect timeout: {exc}"[:2000]
        raise TransientError(attempt.error) from exc
    except requests.ReadTimeout as exc:
        attempt.error = f"read timeout: {exc}"[:2000]
        if sends_document:
            raise OutcomeUnknown(attempt.error) from exc
        raise TransientError(attempt.error) from exc
    except requests.ConnectionError as exc:
        attempt.error = f"connection error: {exc}"[:2000]
        if sends_document and not _never_connected(exc):
            # The connection broke after the request may have left.
            raise OutcomeUnknown(attempt.error) from exc
        raise TransientError(attempt.error) from exc
    except requests.RequestException as exc:
        attempt.error = f"{type(exc).__name__}: {exc}"[:2000]
        raise TransientError(attempt.error) from exc
    finally:
        attempt.duration_ms = int((time.monotonic() - started) * 1000)
        if attempt.error:
            attempt.save()

    attempt.status_code = response.status_code
    if response.status_code >= 400:
        body = response.text[:ERROR_BODY_CHARS]
        attempt.error = f"HTTP {response.status_code}: {body}"
    attempt.save()
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientError(attempt.error, retry_after=_retry_after(response))
    if response.status_code >= 400:
        raise RejectedError(attempt.error, status_code=response.status_code)
    return response
