"""Bavel, the Voxel file connector: documents go to an Outbox folder, answers come back
as files in an Inbox folder, both over HTTPS with Basic auth.

Protocol, as this connector speaks it:

- Submit: `PUT {base_url}/Outbox/{filename}` with the document as body. The file name is
  built by `bavel_filename` (stable rule below), so a retry after an unknown outcome looks
  for, and if need be rewrites, the same file rather than a second one.
- After an unknown outcome: list `GET {base_url}/Outbox/`; if the platform already moved the
  file away, its status file in the Inbox proves it arrived.
- Statuses: list `GET {base_url}/Inbox/`, fetch each `GET {base_url}/Inbox/{name}`, and once
  stored delete it with `DELETE {base_url}/Inbox/{name}`.

Folder listings are accepted as a JSON array of names (or of objects with a `name`), a JSON
object `{"files": [...]}` of either, or plain text with one name per line.

An Inbox file describes one status of one of our files, as JSON::

    {"file": "<our Outbox file name>", "status": "213", "message": "...", "date": "ISO 8601"}

or as XML with the same element names under any root element::

    <status><file>...</file><status>REJECTED</status><message>...</message>
    <date>...</date></status>

`status` is a CDAR code (200 to 213) or a Voxel word from `VOXEL_STATUSES`. A date without
an offset is read in the establishment's time zone. A file that cannot be read is logged and
left in the Inbox (not acknowledged), never a reason to stop reading the others.
"""

import datetime as dt
import ipaddress
import json
import logging
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote, urlsplit

import requests
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from lxml import etree

from dispatch.integrations import integration_credentials
from dispatch.models import Integration, LifecycleCode, Provider

from .base import (
    ConfigurationError,
    Connector,
    ConnectorError,
    Document,
    OutcomeUnknown,
    RejectedError,
    StatusUpdate,
    SubmitReceipt,
    WebhookRejected,
)
from .http import http_request

logger = logging.getLogger(__name__)

# Voxel words for statuses, read from the platform's side: it accepts a file (the invoice
# is issued), delivers it, then the buyer approves, disputes, refuses or pays.
# REJECTED is the platform's refusal of the file (213), REFUSED the buyer's (210).
VOXEL_STATUSES = {
    "DEPOSITED": LifecycleCode.DEPOSITED,
    "UPLOADED": LifecycleCode.DEPOSITED,
    "ACCEPTED": LifecycleCode.ISSUED,
    "ISSUED": LifecycleCode.ISSUED,
    "SENT": LifecycleCode.ISSUED,
    "RECEIVED": LifecycleCode.RECEIVED,
    "DELIVERED": LifecycleCode.MADE_AVAILABLE,
    "AVAILABLE": LifecycleCode.MADE_AVAILABLE,
    "DOWNLOADED": LifecycleCode.TAKEN_OVER,
    "APPROVED": LifecycleCode.APPROVED,
    "PARTIALLY_APPROVED": LifecycleCode.PARTIALLY_APPROVED,
    "DISPUTED": LifecycleCode.DISPUTED,
    "SUSPENDED": LifecycleCode.SUSPENDED,
    "COMPLETED": LifecycleCode.COMPLETED,
    "REFUSED": LifecycleCode.REFUSED,
    "PAYMENT_SENT": LifecycleCode.PAYMENT_SENT,
    "PAID": LifecycleCode.CASHED,
    "CASHED": LifecycleCode.CASHED,
    "REJECTED": LifecycleCode.REJECTED,
    "ERROR": LifecycleCode.REJECTED,
}

SUBMIT_OK_STATUSES = {200, 201, 204}
# Parts of a file name are cut to these lengths so names stay well below the 255 bytes
# that file systems and the platform's folders allow.
HOTEL_CODE_CHARS = 40
INVOICE_NUMBER_CHARS = 80
TRACKING_CHARS = 8
# An Inbox file is a few hundred bytes; anything far bigger is not a status file.
MAX_STATUS_FILE_BYTES = 64 * 1024

_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_EXTENSIONS = {"application/pdf": "pdf", "application/xml": "xml", "text/xml": "xml"}


def _safe_part(value: str, limit: int) -> str:
    """Letters, digits and hyphens only: every other run of characters becomes one hyphen.

    Accents are not transliterated: the rule must stay stable whatever library is installed.
    """
    return _UNSAFE.sub("-", value).strip("-")[:limit].strip("-")


def _extension(document: Document) -> str:
    suffix = PurePosixPath(document.filename).suffix.lstrip(".").lower()
    if suffix and suffix.isalnum() and len(suffix) <= 5:
        return suffix
    media_type = document.media_type.split(";")[0].strip().lower()
    guessed = _EXTENSIONS.get(media_type) or (mimetypes.guess_extension(media_type) or "")
    return guessed.lstrip(".") or "bin"


def bavel_filename(*, hotel_code: str, document: Document) -> str:
    """`{hotel_code}_{invoice_number}_{tracking_id[:8]}.{ext}`, each part made safe.

    Each part keeps only ASCII letters, digits and hyphens (any other run of characters
    becomes one hyphen, edges trimmed, length capped), so the underscores only ever separate
    parts and the name needs no escaping in a URL or on a disk. The tracking id part makes
    the name unique per submission even if two invoice numbers differ only by punctuation;
    the extension comes from the document's file name, else its media type.
    """
    parts = [
        _safe_part(hotel_code, HOTEL_CODE_CHARS),
        _safe_part(document.invoice_number, INVOICE_NUMBER_CHARS),
        _safe_part(document.tracking_id, TRACKING_CHARS),
    ]
    if not parts[0] or not parts[1]:
        raise ConfigurationError(
            _(
                "Cannot name the Bavel file of invoice %(number)s: the hotel code and the "
                "invoice number need at least one letter or digit."
            )
            % {"number": document.invoice_number}
        )
    return "_".join(part for part in parts if part) + "." + _extension(document)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class BavelConfig:
    base_url: str
    username: str
    password: str
    hotel_code: str

    @classmethod
    def from_integration(cls, integration: Integration) -> "BavelConfig":
        """Read and check the integration; raise ConfigurationError naming every gap."""
        credentials = integration_credentials(integration=integration)
        options = integration.options or {}
        base_url = (integration.endpoint or "").strip().rstrip("/")
        username = str(credentials.get("username") or "").strip()
        password = str(credentials.get("password") or "")
        hotel_code = str(options.get("hotel_code") or "").strip()
        missing = [
            label
            for label, value in (
                ("endpoint (base URL)", base_url),
                ("credentials.username", username),
                ("credentials.password", password),
                ("options.hotel_code", hotel_code),
            )
            if not value
        ]
        if missing:
            raise ConfigurationError(
                _("Bavel integration %(name)s is incomplete: missing %(missing)s.")
                % {"name": integration.name, "missing": ", ".join(missing)}
            )
        parts = urlsplit(base_url)
        if parts.username or parts.password:
            # URLs are stored with every HTTP attempt: credentials have their own field.
            raise ConfigurationError(
                _(
                    "Bavel integration %(name)s: put the user and password in the credentials, "
                    "not in the endpoint URL."
                )
                % {"name": integration.name}
            )
        # Basic auth sends the password in clear: plain HTTP only to this machine (tests,
        # a local tunnel), HTTPS everywhere else.
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname))
        ):
            raise ConfigurationError(
                _("Bavel integration %(name)s: the endpoint must be an https:// URL, not %(url)s.")
                % {"name": integration.name, "url": base_url}
            )
        return cls(base_url=base_url, username=username, password=password, hotel_code=hotel_code)


def _listing_names(response: requests.Response) -> list[str]:
    """File names of a folder listing (formats in the module docstring); odd entries dropped."""
    text = response.text.lstrip("\ufeff").strip()
    is_json = "json" in response.headers.get("Content-Type", "") or text.startswith(("[", "{"))
    if is_json:
        try:
            data = json.loads(text or "[]")
        except ValueError as exc:
            raise ConnectorError(f"Bavel folder listing is not valid JSON: {exc}") from exc
        if isinstance(data, dict):
            data = data.get("files", [])
        if not isinstance(data, list):
            raise ConnectorError("Bavel folder listing is neither a list nor {'files': [...]}.")
        entries = [item.get("name") if isinstance(item, dict) else item for item in data]
    else:
        entries = text.splitlines()
    names = []
    for entry in entries:
        name = entry.strip() if isinstance(entry, str) else ""
        if isinstance(entry, str) and not name:
            continue
        # Folder entries, HTML and anything with a path in it are not files we can fetch.
        if _SAFE_NAME.match(name) and name not in {".", ".."}:
            names.append(name)
        else:
            logger.warning("Bavel folder listing: ignored entry %r", str(entry)[:100])
    return names


class StatusFileError(ValueError):
    """An Inbox file that is not a status file we can read."""


def _status_fields(content: bytes) -> dict[str, str]:
    if len(content) > MAX_STATUS_FILE_BYTES:
        raise StatusFileError(f"{len(content)} bytes, too big for a status file")
    text = content.decode("utf-8-sig", errors="strict").strip()
    if text.startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise StatusFileError("JSON is not an object")
        return {
            key: "" if data.get(key) is None else str(data[key])
            for key in ("file", "status", "message", "date")
        }
    if text.startswith("<"):
        # No entities, no network: the file comes from outside.
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        root = etree.fromstring(text.encode(), parser=parser)
        return {key: (root.findtext(key) or "") for key in ("file", "status", "message", "date")}
    raise StatusFileError("neither JSON nor XML")


def _status_code(value: str) -> str:
    value = value.strip()
    if value in LifecycleCode.values:
        return value
    code = VOXEL_STATUSES.get(value.upper().replace(" ", "_").replace("-", "_"))
    if code is None:
        raise StatusFileError(f"unknown status {value[:50]!r}")
    return str(code.value)


def _occurred_at(value: str, tzinfo: dt.tzinfo) -> dt.datetime | None:
    if not value.strip():
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        # The status matters more than its time: keep it, without a date.
        logger.warning("Bavel status file: unreadable date %r", value[:50])
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tzinfo)
    return moment


def parse_status_file(*, name: str, content: bytes, tzinfo: dt.tzinfo) -> StatusUpdate:
    """Read one Inbox file; raise StatusFileError when it is not a readable status."""
    try:
        fields = _status_fields(content)
    except (UnicodeDecodeError, ValueError, etree.XMLSyntaxError) as exc:
        raise StatusFileError(str(exc)[:200]) from exc
    if not fields["file"].strip():
        raise StatusFileError("no 'file'")
    if not fields["status"].strip():
        raise StatusFileError("no 'status'")
    return StatusUpdate(
        code=_status_code(fields["status"]),
        platform_ref=fields["file"].strip(),
        occurred_at=_occurred_at(fields["date"], tzinfo),
        message=fields["message"].strip(),
        event_id=name,
        ack_token=name,
    )


class BavelConnector(Connector):
    provider = Provider.BAVEL

    def __init__(self, integration: Integration) -> None:
        super().__init__(integration)
        self.config = BavelConfig.from_integration(integration)

    def filename(self, document: Document) -> str:
        return bavel_filename(hotel_code=self.config.hotel_code, document=document)

    def _url(self, folder: str, name: str = "") -> str:
        return f"{self.config.base_url}/{folder}/{quote(name, safe='')}"

    def _request(self, method: str, url: str, **kwargs) -> requests.Response:
        try:
            response = http_request(
                method,
                url,
                integration=self.integration,
                auth=(self.config.username, self.config.password),
                # A redirect would turn a PUT into a GET on some servers and hide that the
                # document never arrived: the endpoint must be the final URL.
                allow_redirects=False,
                **kwargs,
            )
        except RejectedError as exc:
            if exc.status_code in (401, 403):
                # Every document would be refused the same way: an integration to fix, not
                # an invoice to give up on.
                raise ConfigurationError(
                    _("Bavel refused the credentials of integration %(name)s (%(error)s).")
                    % {"name": self.integration.name, "error": exc}
                ) from exc
            raise
        if response.is_redirect:
            raise ConfigurationError(
                _("The Bavel endpoint redirects to %(url)s: set that URL as the endpoint.")
                % {"url": response.headers.get("Location", "?")}
            )
        return response

    def submit(self, document: Document, *, dispatch_id: int | None = None) -> SubmitReceipt:
        filename = self.filename(document)
        response = self._request(
            "PUT",
            self._url("Outbox", filename),
            operation="submit",
            dispatch_id=dispatch_id,
            sends_document=True,
            data=document.content,
            headers={"Content-Type": document.media_type},
        )
        if response.status_code not in SUBMIT_OK_STATUSES:
            # Another 2xx (202 queued?) is no proof of a deposit: the sender then looks for
            # the file before sending again.
            raise OutcomeUnknown(
                _("Bavel answered HTTP %(status)s to the upload of %(file)s.")
                % {"status": response.status_code, "file": filename}
            )
        return SubmitReceipt(
            platform_ref=filename,
            code=LifecycleCode.DEPOSITED.value,
            message=_("Deposited in the Bavel Outbox as %(file)s.") % {"file": filename},
        )

    def find_submission(
        self, document: Document, *, dispatch_id: int | None = None
    ) -> SubmitReceipt | None:
        filename = self.filename(document)
        response = self._request(
            "GET", self._url("Outbox"), operation="find_submission", dispatch_id=dispatch_id
        )
        if filename in _listing_names(response):
            return SubmitReceipt(
                platform_ref=filename,
                code=LifecycleCode.DEPOSITED.value,
                message=_("Found in the Bavel Outbox as %(file)s.") % {"file": filename},
            )
        # The platform moves files out of the Outbox once it has taken them: a status about
        # the file in the Inbox proves it arrived. Those files stay for the status poll.
        for update in self._read_inbox(operation="find_submission", dispatch_id=dispatch_id):
            if update.platform_ref == filename:
                return SubmitReceipt(
                    platform_ref=filename,
                    code=LifecycleCode.DEPOSITED.value,
                    message=_("Bavel already reported on %(file)s (%(code)s).")
                    % {"file": filename, "code": update.code},
                )
        return None

    def fetch_statuses(self, *, platform_refs: list[str]) -> list[StatusUpdate]:
        """Every readable status in the Inbox, whatever `platform_refs` says.

        The Inbox is shared by every submission of the account and a file can only be read
        to know which submission it is about; `lifecycle_record` leaves out (and so does not
        acknowledge) those about submissions it does not know.
        """
        return self._read_inbox(operation="fetch_statuses")

    def _read_inbox(self, *, operation: str, dispatch_id: int | None = None) -> list[StatusUpdate]:
        listing = self._request(
            "GET", self._url("Inbox"), operation=operation, dispatch_id=dispatch_id
        )
        tzinfo = self.integration.establishment.tzinfo
        updates = []
        for name in _listing_names(listing):
            try:
                response = self._request(
                    "GET", self._url("Inbox", name), operation=operation, dispatch_id=dispatch_id
                )
            except ConfigurationError:
                raise
            except ConnectorError as exc:
                # Stored as an HttpAttempt; the file stays there for the next poll.
                logger.warning("Bavel Inbox file %s not read: %s", name, exc)
                continue
            try:
                updates.append(
                    parse_status_file(name=name, content=response.content, tzinfo=tzinfo)
                )
            except StatusFileError as exc:
                logger.warning(
                    "integration %s: Bavel Inbox file %s skipped (left in the Inbox): %s",
                    self.integration.pk,
                    name,
                    exc,
                )
        return updates

    def acknowledge(self, update: StatusUpdate) -> None:
        try:
            self._request("DELETE", self._url("Inbox", update.ack_token), operation="acknowledge")
        except RejectedError as exc:
            # Already gone (acknowledged by an earlier poll that died before recording it).
            if exc.status_code != 404:
                raise

    def parse_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> list[StatusUpdate]:
        raise WebhookRejected(_("Bavel has no webhooks: its statuses are read from the Inbox."))

    def test_connection(self) -> str:
        count = len(
            _listing_names(self._request("GET", self._url("Inbox"), operation="test_connection"))
        )
        return ngettext(
            "Connected: %(count)d file waiting in the inbox.",
            "Connected: %(count)d files waiting in the inbox.",
            count,
        ) % {"count": count}
