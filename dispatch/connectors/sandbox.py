"""The sandbox platform: a local folder, for demos and for trying the channel without a contract.

Each document is written next to a JSON receipt (`<filename>.receipt.json`) that plays the
platform's part: its "status" is what status polls report, so editing it by hand to "205"
shows a lifecycle change in a demo. A status is reported until it is acknowledged, like a
platform's inbox file.
"""

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from dispatch.models import LifecycleCode, Provider

from .base import (
    ConfigurationError,
    Connector,
    Document,
    RejectedError,
    StatusUpdate,
    SubmitReceipt,
    WebhookRejected,
)

RECEIPT_SUFFIX = ".receipt.json"


def _write_atomic(path: Path, content: bytes) -> None:
    """Write `path` so that readers see the old file or the new one, never half of one."""
    # The temporary file starts with a dot: it is never taken for a submitted document.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(content)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _same_submission(receipt: Mapping[str, Any], document: Document) -> bool:
    # A rebuilt document (after an unknown outcome) may differ by its PDF timestamps but
    # keeps the dispatch's tracking id, which is what platforms search by.
    return (
        bool(document.tracking_id) and receipt.get("tracking_id") == document.tracking_id
    ) or receipt.get("sha256") == document.sha256


def _now() -> str:
    return timezone.now().isoformat()


class SandboxConnector(Connector):
    provider = Provider.SANDBOX
    accepts_status_reports = True

    @property
    def folder(self) -> Path:
        endpoint = self.integration.endpoint.strip().removeprefix("file://")
        if endpoint:
            folder = Path(endpoint).expanduser()
            if not folder.is_absolute():
                folder = Path(settings.BASE_DIR) / folder
            return folder
        return Path(settings.EINVOICING_SANDBOX_DIR) / self.integration.establishment.code

    def _document_path(self, filename: str) -> Path:
        # The filename comes from our own sender, but a path in it would write elsewhere.
        if not filename or Path(filename).name != filename or filename.startswith("."):
            raise RejectedError(f"Invalid document filename {filename!r}.")
        return self.folder / filename

    def _receipt_path(self, filename: str) -> Path:
        return self._document_path(filename).with_name(filename + RECEIPT_SUFFIX)

    def _read_receipt(self, filename: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._receipt_path(filename).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"Unreadable sandbox receipt for {filename}: {exc}") from exc

    def _write_receipt(self, filename: str, receipt: Mapping[str, Any]) -> None:
        content = json.dumps(receipt, indent=2, ensure_ascii=False) + "\n"
        _write_atomic(self._receipt_path(filename), content.encode("utf-8"))

    def _ensure_folder(self) -> Path:
        folder = self.folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"Sandbox folder {folder} cannot be created: {exc}") from exc
        return folder

    def submit(self, document: Document, *, dispatch_id: int | None = None) -> SubmitReceipt:
        path = self._document_path(document.filename)
        self._ensure_folder()
        existing = self._read_receipt(document.filename)
        if existing is not None and path.exists():
            # Like a platform: the same submission again (our tracking id, or the same
            # bytes) is answered with the first one; another document under a name already
            # taken is refused, never overwritten.
            if _same_submission(existing, document):
                return SubmitReceipt(
                    platform_ref=document.filename,
                    code=str(existing.get("status", "")),
                    message="already submitted",
                )
            raise RejectedError(
                f"The sandbox already holds a different document named {document.filename}."
            )
        submitted_at = _now()
        try:
            _write_atomic(path, document.content)
            self._write_receipt(
                document.filename,
                {
                    "platform_ref": document.filename,
                    "tracking_id": document.tracking_id,
                    "invoice_number": document.invoice_number,
                    "sha256": document.sha256,
                    "media_type": document.media_type,
                    "size": len(document.content),
                    "submitted_at": submitted_at,
                    "status": LifecycleCode.DEPOSITED.value,
                    "message": "",
                    # The submission answer carries 200 already; polls report what follows.
                    "acknowledged_status": LifecycleCode.DEPOSITED.value,
                    "history": [
                        {
                            "code": LifecycleCode.DEPOSITED.value,
                            "at": submitted_at,
                            "source": "platform",
                        }
                    ],
                },
            )
        except OSError as exc:
            raise ConfigurationError(f"Sandbox folder {self.folder}: {exc}") from exc
        return SubmitReceipt(
            platform_ref=document.filename,
            code=LifecycleCode.DEPOSITED.value,
            message=f"written to {path}",
        )

    def find_submission(
        self, document: Document, *, dispatch_id: int | None = None
    ) -> SubmitReceipt | None:
        receipt = self._read_receipt(document.filename)
        if receipt is None or not self._document_path(document.filename).exists():
            return None
        if not _same_submission(receipt, document):
            return None
        return SubmitReceipt(platform_ref=document.filename, code=str(receipt.get("status", "")))

    def fetch_statuses(self, *, platform_refs: list[str]) -> list[StatusUpdate]:
        updates = []
        for ref in platform_refs:
            path = self._receipt_path(ref)
            try:
                raw = path.read_bytes()
                receipt = json.loads(raw)
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"Unreadable sandbox receipt for {ref}: {exc}") from exc
            code = str(receipt.get("status", "")).strip()
            if not code or code == receipt.get("acknowledged_status"):
                continue
            # An edited receipt has no event id of its own: its content is one (acknowledging
            # adds to the history, so a status the receipt comes back to later is new).
            event_id = f"{ref}:{code}:{hashlib.sha256(raw).hexdigest()[:16]}"
            updates.append(
                StatusUpdate(
                    code=code,
                    platform_ref=ref,
                    tracking_id=str(receipt.get("tracking_id", "")),
                    # The file's time is the hand edit's.
                    occurred_at=dt.datetime.fromtimestamp(mtime, tz=dt.UTC),
                    message=str(receipt.get("message", "")),
                    event_id=event_id,
                    ack_token=ref,
                )
            )
        return updates

    def acknowledge(self, update: StatusUpdate) -> None:
        ref = update.ack_token or update.platform_ref
        receipt = self._read_receipt(ref)
        if receipt is None:
            return
        # The code acknowledged is the one read: a newer edit is still reported next time.
        receipt["acknowledged_status"] = update.code
        receipt.setdefault("history", []).append(
            {"code": update.code, "at": _now(), "source": "platform"}
        )
        self._write_receipt(ref, receipt)

    def report_status(self, *, platform_ref: str, tracking_id: str, code: str) -> None:
        receipt = self._read_receipt(platform_ref)
        if receipt is None:
            raise RejectedError(f"No sandbox submission named {platform_ref}.")
        receipt.setdefault("history", []).append(
            {"code": code, "at": _now(), "source": "reported", "tracking_id": tracking_id}
        )
        self._write_receipt(platform_ref, receipt)

    def parse_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> list[StatusUpdate]:
        raise WebhookRejected("The sandbox sends no webhooks: its statuses are polled.")

    def test_connection(self) -> str:
        folder = self._ensure_folder()
        try:
            _write_atomic(folder / ".write-test", b"ok")
            (folder / ".write-test").unlink()
        except OSError as exc:
            raise ConfigurationError(f"Sandbox folder {folder} is not writable: {exc}") from exc
        return f"Sandbox folder {folder} is writable."
