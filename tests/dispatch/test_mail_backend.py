import email
import email.policy
from pathlib import Path

import pytest
from django.core import mail
from django.core.mail import BadHeaderError, EmailMessage, get_connection

from dispatch.documents.letter import letter_build_email, letter_render_pdf
from dispatch.mail import EmlFileBackend
from tests.dispatch.test_letter import sample_data

BACKEND = "dispatch.mail.EmlFileBackend"


def read_eml(path: Path) -> email.message.EmailMessage:
    with path.open("rb") as stream:
        return email.message_from_binary_file(stream, policy=email.policy.default)


def test_each_message_is_its_own_parsable_eml_file_in_order(tmp_path):
    folder = tmp_path / "outbox"  # created by the backend
    connection = get_connection(BACKEND, file_path=str(folder))
    messages = [
        EmailMessage(
            subject=f"Message {i}",
            body=f"Body {i}",
            from_email="billing@hotels.example",
            to=[f"ap{i}@agency.example"],
            attachments=[(f"doc-{i}.bin", bytes([i]) * 100, "application/octet-stream")],
        )
        for i in range(3)
    ]

    assert connection.send_messages(messages) == 3
    assert connection.send_messages([]) == 0
    # A second connection writes next to the first, never into the same file.
    assert get_connection(BACKEND, file_path=str(folder)).send_messages([messages[0]]) == 1

    files = sorted(folder.iterdir())
    assert [path.suffix for path in files] == [".eml"] * 4
    parsed = [read_eml(path) for path in files]
    assert [message["Subject"] for message in parsed] == [
        "Message 0",
        "Message 1",
        "Message 2",
        "Message 0",
    ]
    for i, message in enumerate(parsed[:3]):
        assert message["To"] == f"ap{i}@agency.example"
        assert message.get_body(preferencelist=("plain",)).get_content().strip() == f"Body {i}"
        (attachment,) = message.iter_attachments()
        assert attachment.get_filename() == f"doc-{i}.bin"
        assert attachment.get_content() == bytes([i]) * 100
    # Standard files: no separator line like Django's .log files have.
    for path in files:
        assert b"-" * 79 not in path.read_bytes()


def test_letter_email_through_settings(settings, tmp_path):
    settings.EMAIL_BACKEND = BACKEND
    settings.EMAIL_FILE_PATH = str(tmp_path / "mail")
    data = sample_data(language="en")
    pdf = letter_render_pdf(data=data)

    sent = letter_build_email(
        data=data, pdf=pdf, recipient="ap@agency.example", message_id="<letter-1@hotels.example>"
    ).send()

    assert sent == 1
    (path,) = (tmp_path / "mail").iterdir()
    assert path.name.endswith(".eml")
    message = read_eml(path)
    assert message["Message-ID"] == "<letter-1@hotels.example>"
    assert message["Reply-To"] == "compta@hotel.example"
    (attachment,) = message.iter_attachments()
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf
    assert message.get_body(preferencelist=("html",)) is not None


def test_mail_send_mail_uses_one_file_per_message(settings, tmp_path):
    settings.EMAIL_BACKEND = BACKEND
    settings.EMAIL_FILE_PATH = str(tmp_path)

    for i in range(5):
        mail.send_mail(f"S{i}", "body", "billing@hotels.example", ["x@agency.example"])

    files = sorted(tmp_path.glob("*.eml"))
    assert len(files) == 5
    assert [read_eml(path)["Subject"] for path in files] == [f"S{i}" for i in range(5)]
    # Nothing half-written is left behind.
    assert not list(tmp_path.glob(".*"))


def test_a_bad_message_raises_unless_silent(tmp_path):
    good = EmailMessage("Good", "b", "a@example.com", ["b@example.com"])
    # A header with a line break is refused by Django before anything is written.
    bad = EmailMessage("Bad\nBcc: victim@example.com", "b", "a@example.com", ["b@example.com"])

    with pytest.raises(BadHeaderError):
        EmlFileBackend(file_path=str(tmp_path)).send_messages([bad])
    assert list(tmp_path.iterdir()) == []

    silent = EmlFileBackend(file_path=str(tmp_path), fail_silently=True)
    assert silent.send_messages([bad, good]) == 1
    (path,) = tmp_path.iterdir()
    assert read_eml(path)["Subject"] == "Good"
