"""The sandbox connector against a real folder."""

import hashlib
import json

import pytest
from django.utils import timezone

from dispatch.connectors import (
    ConfigurationError,
    Document,
    RejectedError,
    WebhookRejected,
    connector_for,
)
from dispatch.connectors.sandbox import SandboxConnector
from dispatch.einvoicing import lifecycle_record
from dispatch.models import Channel, DispatchStatus, Integration, Provider
from tests.factories import DispatchFactory, EstablishmentFactory

pytestmark = pytest.mark.django_db


def _integration(**fields) -> Integration:
    fields.setdefault("establishment", EstablishmentFactory(code="paris-opera"))
    return Integration.objects.create(
        provider=Provider.SANDBOX, name="Sandbox", active=True, **fields
    )


def _document(content: bytes = b"%PDF-1.7 facture", **fields) -> Document:
    values = {
        "invoice_number": "F000123",
        "filename": "PARIS01_F000123.pdf",
        "content": content,
        "media_type": "application/pdf",
        "sha256": hashlib.sha256(content).hexdigest(),
        "tracking_id": "trk-0001",
    }
    return Document(**{**values, **fields})


def _receipt(folder, filename="PARIS01_F000123.pdf") -> dict:
    return json.loads((folder / f"{filename}.receipt.json").read_text())


def _edit_status(folder, code, filename="PARIS01_F000123.pdf", **extra) -> None:
    receipt = _receipt(folder, filename)
    receipt.update(status=code, **extra)
    (folder / f"{filename}.receipt.json").write_text(json.dumps(receipt))


def test_the_registry_returns_the_sandbox(tmp_path):
    connector = connector_for(_integration(endpoint=str(tmp_path)))

    assert isinstance(connector, SandboxConnector)
    assert connector.accepts_status_reports is True


def test_submit_writes_the_document_and_its_receipt(tmp_path):
    connector = SandboxConnector(_integration(endpoint=str(tmp_path)))
    document = _document()

    receipt = connector.submit(document)

    assert (receipt.platform_ref, receipt.code) == ("PARIS01_F000123.pdf", "200")
    assert (tmp_path / "PARIS01_F000123.pdf").read_bytes() == b"%PDF-1.7 facture"
    stored = _receipt(tmp_path)
    assert stored["tracking_id"] == "trk-0001"
    assert stored["sha256"] == document.sha256
    assert stored["invoice_number"] == "F000123"
    assert stored["status"] == "200"
    assert stored["submitted_at"]
    assert [entry["code"] for entry in stored["history"]] == ["200"]
    # Atomic writes leave no temporary file behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "PARIS01_F000123.pdf",
        "PARIS01_F000123.pdf.receipt.json",
    ]


def test_without_endpoint_the_folder_is_the_establishment_s_under_the_setting(settings, tmp_path):
    settings.EINVOICING_SANDBOX_DIR = str(tmp_path / "einvoices")
    connector = SandboxConnector(_integration(endpoint=""))

    connector.submit(_document())

    assert (tmp_path / "einvoices" / "paris-opera" / "PARIS01_F000123.pdf").exists()


def test_the_same_document_again_is_the_same_submission(tmp_path):
    connector = SandboxConnector(_integration(endpoint=str(tmp_path)))
    connector.submit(_document())

    again = connector.submit(_document())

    assert (again.platform_ref, again.code) == ("PARIS01_F000123.pdf", "200")
    assert len(_receipt(tmp_path)["history"]) == 1


def test_another_document_under_a_taken_name_is_rejected_not_overwritten(tmp_path):
    connector = SandboxConnector(_integration(endpoint=str(tmp_path)))
    connector.submit(_document())

    with pytest.raises(RejectedError, match="different document"):
        connector.submit(_document(content=b"%PDF-1.7 autre", tracking_id="trk-0002"))

    assert (tmp_path / "PARIS01_F000123.pdf").read_bytes() == b"%PDF-1.7 facture"


@pytest.mark.parametrize("filename", ["../escape.pdf", "sub/dir.pdf", ".hidden.pdf", ""])
def test_a_filename_with_a_path_is_refused(tmp_path, filename):
    connector = SandboxConnector(_integration(endpoint=str(tmp_path / "box")))

    with pytest.raises(RejectedError):
        connector.submit(_document(filename=filename))

    assert not (tmp_path / "escape.pdf").exists()


def test_find_submission_finds_the_file_or_says_none(tmp_path):
    connector = SandboxConnector(_integration(endpoint=str(tmp_path)))
    document = _document()

    assert connector.find_submission(document) is None
    connector.submit(document)
    found = connector.find_submission(document)
    assert (found.platform_ref, found.code) == ("PARIS01_F000123.pdf", "200")
    # A rebuilt document (other PDF timestamps) of the same submission is found.
    rebuilt = connector.find_submission(_document(content=b"rebuilt"))
    assert rebuilt.platform_ref == "PARIS01_F000123.pdf"
    assert connector.find_submission(_document(content=b"other", tracking_id="trk-9")) is None


def test_a_rebuilt_document_of_the_same_submission_is_not_written_again(tmp_path):
    connector = SandboxConnector(_integration(endpoint=str(tmp_path)))
    connector.submit(_document())

    again = connector.submit(_document(content=b"%PDF-1.7 facture, rebuilt"))

    assert (again.platform_ref, again.code) == ("PARIS01_F000123.pdf", "200")
    assert (tmp_path / "PARIS01_F000123.pdf").read_bytes() == b"%PDF-1.7 facture"


def test_fetch_statuses_reports_an_edited_receipt_until_acknowledged(tmp_path):
    connector = SandboxConnector(_integration(endpoint=str(tmp_path)))
    connector.submit(_document())
    refs = ["PARIS01_F000123.pdf", "UNKNOWN.pdf"]

    # The submission answer already carried 200: nothing new yet.
    assert connector.fetch_statuses(platform_refs=refs) == []

    _edit_status(tmp_path, "205", message="Approuvée par le client")
    updates = connector.fetch_statuses(platform_refs=refs)
    assert len(updates) == 1
    update = updates[0]
    assert (update.code, update.platform_ref, update.tracking_id, update.message) == (
        "205",
        "PARIS01_F000123.pdf",
        "trk-0001",
        "Approuvée par le client",
    )
    assert update.occurred_at is not None
    assert update.event_id.startswith("PARIS01_F000123.pdf:205:")
    assert connector.fetch_statuses(platform_refs=refs) == [update]

    connector.acknowledge(update)
    assert connector.fetch_statuses(platform_refs=refs) == []

    _edit_status(tmp_path, "212")
    assert [u.code for u in connector.fetch_statuses(platform_refs=refs)] == ["212"]


def test_acknowledging_an_old_status_keeps_a_newer_edit_reported(tmp_path):
    connector = SandboxConnector(_integration(endpoint=str(tmp_path)))
    connector.submit(_document())
    _edit_status(tmp_path, "204")
    [old] = connector.fetch_statuses(platform_refs=["PARIS01_F000123.pdf"])
    _edit_status(tmp_path, "205")

    connector.acknowledge(old)

    assert [u.code for u in connector.fetch_statuses(platform_refs=["PARIS01_F000123.pdf"])] == [
        "205"
    ]


def test_report_status_appends_to_the_history(tmp_path):
    connector = SandboxConnector(_integration(endpoint=str(tmp_path)))
    connector.submit(_document())

    connector.report_status(platform_ref="PARIS01_F000123.pdf", tracking_id="trk-0001", code="212")

    history = _receipt(tmp_path)["history"]
    assert [(entry["code"], entry["source"]) for entry in history] == [
        ("200", "platform"),
        ("212", "reported"),
    ]
    # Our own report is not read back as a platform status.
    assert connector.fetch_statuses(platform_refs=["PARIS01_F000123.pdf"]) == []


def test_report_status_of_an_unknown_submission_is_refused(tmp_path):
    connector = SandboxConnector(_integration(endpoint=str(tmp_path)))

    with pytest.raises(RejectedError):
        connector.report_status(platform_ref="NOPE.pdf", tracking_id="x", code="212")


def test_webhooks_are_refused(tmp_path):
    connector = SandboxConnector(_integration(endpoint=str(tmp_path)))

    with pytest.raises(WebhookRejected):
        connector.parse_webhook(body=b"{}", headers={})


def test_test_connection_creates_the_folder_and_says_it_is_writable(tmp_path):
    folder = tmp_path / "new" / "box"
    connector = SandboxConnector(_integration(endpoint=str(folder)))

    answer = connector.test_connection()

    assert str(folder) in answer
    assert folder.is_dir()
    assert list(folder.iterdir()) == []


def test_a_folder_that_cannot_be_created_is_a_configuration_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    connector = SandboxConnector(_integration(endpoint=str(tmp_path / "file" / "box")))

    with pytest.raises(ConfigurationError):
        connector.test_connection()
    with pytest.raises(ConfigurationError):
        connector.submit(_document())


def test_polled_statuses_reach_the_dispatch_history(tmp_path):
    integration = _integration(endpoint=str(tmp_path))
    connector = SandboxConnector(integration)
    receipt = connector.submit(_document())
    dispatch = DispatchFactory(
        debtor__establishment=integration.establishment,
        channel=Channel.EINVOICE,
        integration=integration,
        idempotency_key=f"einvoice:{integration.pk}:1",
        status=DispatchStatus.SENT,
        sent_at=timezone.now(),
        tracking_id="trk-0001",
        platform_ref=receipt.platform_ref,
        lifecycle_code=receipt.code,
    )
    _edit_status(tmp_path, "207", message="En litige")

    updates = connector.fetch_statuses(platform_refs=[dispatch.platform_ref])
    recorded = lifecycle_record(integration=integration, updates=updates, source="poll")
    for update in recorded.handled:
        connector.acknowledge(update)

    dispatch.refresh_from_db()
    assert dispatch.lifecycle_code == "207"
    assert [(e.code, e.message) for e in dispatch.lifecycle.all()] == [("207", "En litige")]
    assert connector.fetch_statuses(platform_refs=[dispatch.platform_ref]) == []


def test_a_status_the_receipt_comes_back_to_is_a_new_event(tmp_path):
    integration = _integration(endpoint=str(tmp_path))
    connector = SandboxConnector(integration)
    receipt = connector.submit(_document())
    dispatch = DispatchFactory(
        debtor__establishment=integration.establishment,
        channel=Channel.EINVOICE,
        integration=integration,
        idempotency_key=f"einvoice:{integration.pk}:1",
        status=DispatchStatus.SENT,
        sent_at=timezone.now(),
        tracking_id="trk-0001",
        platform_ref=receipt.platform_ref,
    )

    def poll():
        updates = connector.fetch_statuses(platform_refs=[dispatch.platform_ref])
        recorded = lifecycle_record(integration=integration, updates=updates, source="poll")
        for update in recorded.handled:
            connector.acknowledge(update)

    codes = ["205", "207", "205", "207", "205"]
    for code in codes:
        _edit_status(tmp_path, code)
        poll()
        poll()

    assert [e.code for e in dispatch.lifecycle.all()] == codes
    assert [entry["code"] for entry in _receipt(tmp_path)["history"]] == ["200", *codes]
