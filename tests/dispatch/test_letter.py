import datetime as dt
import email
import email.policy
import io
import re
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from django.core import mail
from pypdf import PdfReader

from dispatch.documents.letter import (
    LetterData,
    LetterLine,
    LetterRecipient,
    LetterSender,
    letter_build_email,
    letter_data_from_dispatch,
    letter_filename,
    letter_render_html,
    letter_render_pdf,
)
from tests.factories import (
    DebtorAccountFactory,
    DispatchFactory,
    DispatchItemFactory,
    EstablishmentFactory,
    InvoiceFactory,
)

BUSINESS_DATE = dt.date(2026, 12, 3)
HOSTILE_NAME = "<script>alert(1)</script>"


def pdf_text(pdf: bytes) -> str:
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    # Amounts are grouped with no-break spaces; compare them as plain spaces.
    return text.replace("\u00a0", " ").replace("\u202f", " ")


def sample_data(*, language: str = "fr", debtor_name: str = "Agence Voyages & Co") -> LetterData:
    lines = (
        LetterLine(
            number="F-2026-0101",
            issue_date=dt.date(2026, 10, 2),
            due_date=dt.date(2026, 11, 1),
            total=Decimal("1234.56"),
            paid=Decimal("234.56"),
            due=Decimal("1000.00"),
            days_overdue=32,
        ),
        LetterLine(
            number="F-2026-0202",
            issue_date=dt.date(2026, 11, 20),
            due_date=dt.date(2026, 12, 20),
            total=Decimal("110.00"),
            paid=Decimal("0.00"),
            due=Decimal("110.00"),
            days_overdue=0,
        ),
    )
    return LetterData(
        establishment=LetterSender(
            name="Hôtel Saint-Michel",
            legal_name="SAS Hôtellerie Saint-Michel",
            address_lines=("12 rue de la Paix",),
            postal_code="75002",
            city="Paris",
            country="FR",
            siret="73282932000074",
            vat_number="FR44732829320",
            finance_email="compta@hotel.example",
            phone="+33 1 23 45 67 89",
            iban="FR7630006000011234567890189",
            bic="AGRIFRPP",
        ),
        debtor=LetterRecipient(
            name=debtor_name,
            account_number="D00042",
            address_lines=("3 avenue Foch", "69006 Lyon"),
        ),
        business_date=BUSINESS_DATE,
        language=language,
        currency="EUR",
        lines=lines,
        total_due=Decimal("1110.00"),
        overdue_total=Decimal("1000.00"),
    )


@pytest.fixture
def planned_letter(db):
    """A dispatch as the planner writes it: three pending invoices, two of them overdue."""
    establishment = EstablishmentFactory(name="Hôtel du Parc", legal_name="Parc Hôtels SAS")
    debtor = DebtorAccountFactory(
        establishment=establishment,
        account_number="TO-778",
        name="Tour Opérateur Sud",
        address_line1="8 quai Rambaud",
        postal_code="69002",
        city="Lyon",
        country="FR",
        language="en",
    )
    dues = [Decimal("1000.00"), Decimal("110.00"), Decimal("2500.00")]
    dispatch = DispatchFactory(debtor=debtor, business_date=BUSINESS_DATE, total_due=sum(dues))
    invoices = [
        # Partly paid, 32 days overdue.
        InvoiceFactory(
            debtor=debtor,
            number="F000101",
            issue_date=dt.date(2026, 10, 2),
            due_date=dt.date(2026, 11, 1),
            gross=Decimal("1234.56"),
        ),
        # Not due yet.
        InvoiceFactory(
            debtor=debtor,
            number="F000103",
            issue_date=dt.date(2026, 11, 20),
            due_date=dt.date(2026, 12, 20),
            gross=Decimal("110.00"),
        ),
        # 5 days overdue.
        InvoiceFactory(
            debtor=debtor,
            number="F000102",
            issue_date=dt.date(2026, 10, 28),
            due_date=dt.date(2026, 11, 28),
            gross=Decimal("2500.00"),
        ),
    ]
    for invoice, due in zip(invoices, dues, strict=True):
        DispatchItemFactory(dispatch=dispatch, invoice=invoice, amount_due=due)
    return dispatch


def test_data_from_dispatch_uses_the_planned_snapshot(planned_letter, django_assert_num_queries):
    with django_assert_num_queries(2):
        data = letter_data_from_dispatch(dispatch=planned_letter)

    assert data.language == "en"
    assert data.currency == "EUR"
    assert data.business_date == BUSINESS_DATE
    assert data.establishment.name == "Hôtel du Parc"
    assert data.establishment.legal_name == "Parc Hôtels SAS"
    assert data.establishment.iban == "FR7630006000011234567890189"
    assert data.debtor == LetterRecipient(
        name="Tour Opérateur Sud",
        account_number="TO-778",
        address_lines=("8 quai Rambaud", "69002 Lyon"),
    )
    # Ordered by due date, the oldest debt first.
    assert [line.number for line in data.lines] == ["F000101", "F000102", "F000103"]
    first = data.lines[0]
    assert (first.total, first.paid, first.due, first.days_overdue) == (
        Decimal("1234.56"),
        Decimal("234.56"),
        Decimal("1000.00"),
        32,
    )
    assert data.lines[1].days_overdue == 5
    assert data.lines[2].days_overdue == 0
    assert data.total_due == Decimal("3610.00")
    assert data.overdue_total == Decimal("3500.00")
    assert all(isinstance(line.paid, Decimal) for line in data.lines)


def test_data_from_dispatch_query_count_does_not_grow_with_invoices(db, django_assert_num_queries):
    dispatch = DispatchFactory(total_due=Decimal("1100.00"))
    for _ in range(10):
        DispatchItemFactory(dispatch=dispatch)

    with django_assert_num_queries(2):
        data = letter_data_from_dispatch(dispatch=dispatch)

    assert len(data.lines) == 10


def test_data_from_dispatch_prints_a_foreign_country(db):
    establishment = EstablishmentFactory(country="FR")
    debtor = DebtorAccountFactory(
        establishment=establishment,
        address_line1="Gran Vía 1",
        postal_code="28013",
        city="Madrid",
        country="ES",
    )
    dispatch = DispatchFactory(debtor=debtor)
    DispatchItemFactory(dispatch=dispatch)

    data = letter_data_from_dispatch(dispatch=dispatch)

    assert data.debtor.address_lines == ("Gran Vía 1", "28013 Madrid", "ES")


# Formatting follows Django's locale formats of the letter's language.
LOCALIZED = {
    "fr": {
        "date": "3 décembre 2026",
        "row": "F000101 02/10/2026 01/11/2026 1 234,56 EUR 234,56 EUR 1 000,00 EUR 32",
        "rows": [
            "F000102 28/10/2026 28/11/2026 2 500,00 EUR 0,00 EUR 2 500,00 EUR 5",
            "F000103 20/11/2026 20/12/2026 110,00 EUR 0,00 EUR 110,00 EUR –",
        ],
        "total": "3 610,00 EUR",
        "overdue": "3 500,00 EUR",
    },
    "en": {
        "date": "Dec. 3, 2026",
        "row": "F000101 10/02/2026 11/01/2026 1,234.56 EUR 234.56 EUR 1,000.00 EUR 32",
        "rows": [
            "F000102 10/28/2026 11/28/2026 2,500.00 EUR 0.00 EUR 2,500.00 EUR 5",
            "F000103 11/20/2026 12/20/2026 110.00 EUR 0.00 EUR 110.00 EUR –",
        ],
        "total": "3,610.00 EUR",
        "overdue": "3,500.00 EUR",
    },
    "es": {
        "date": "3 de diciembre de 2026",
        "row": "F000101 02/10/2026 01/11/2026 1 234,56 EUR 234,56 EUR 1 000,00 EUR 32",
        "rows": [
            "F000102 28/10/2026 28/11/2026 2 500,00 EUR 0,00 EUR 2 500,00 EUR 5",
            "F000103 20/11/2026 20/12/2026 110,00 EUR 0,00 EUR 110,00 EUR –",
        ],
        "total": "3 610,00 EUR",
        "overdue": "3 500,00 EUR",
    },
}


@pytest.mark.parametrize("language", ["fr", "en", "es"])
def test_pdf_lists_every_invoice_formatted_for_the_language(planned_letter, language):
    planned_letter.language = language
    planned_letter.save(update_fields=["language"])
    data = letter_data_from_dispatch(dispatch=planned_letter)
    expected = LOCALIZED[language]

    pdf = letter_render_pdf(data=data)

    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    lines = text.splitlines()
    # Each row reads number, issue date, due date, total, paid, due, days overdue.
    assert expected["row"] in lines
    for row in expected["rows"]:
        assert row in lines
    assert expected["date"] in text
    assert re.search(rf"{re.escape(expected['total'])}$", text, re.MULTILINE)
    assert expected["overdue"] in text
    # Identity, legal data and payment instructions.
    for fragment in (
        "Hôtel du Parc",
        "Parc Hôtels SAS",
        "73282932000074",
        "FR44732829320",
        "FR76 3000 6000 0112 3456 7890 189",
        "AGRIFRPP",
        "compta@hotel.example",
        "+33 1 23 45 67 89",
        "Tour Opérateur Sud",
        "8 quai Rambaud",
        "69002 Lyon",
        "TO-778",
    ):
        assert fragment in text


def test_pdf_declares_pdf_a_3b():
    reader = PdfReader(io.BytesIO(letter_render_pdf(data=sample_data())))

    xmp = reader.trailer["/Root"]["/Metadata"].get_object().get_data()
    ns = "{http://www.aiim.org/pdfa/ns/id/}"
    found = {}
    for node in ET.fromstring(xmp.split(b"?>", 1)[1].rsplit(b"<?xpacket", 1)[0]).iter():
        # XMP allows both the attribute and the element form.
        for key in ("part", "conformance"):
            if f"{ns}{key}" in node.attrib:
                found[key] = node.attrib[f"{ns}{key}"]
            if node.tag == f"{ns}{key}":
                found[key] = node.text
    assert found == {"part": "3", "conformance": "B"}
    assert reader.trailer["/Root"]["/OutputIntents"][0]["/S"] == "/GTS_PDFA1"
    # PDF/A forbids fonts that are not embedded.
    fonts = reader.pages[0]["/Resources"]["/Font"]
    for font in fonts.values():
        descendant = font.get_object()
        if "/DescendantFonts" in descendant:
            descendant = descendant["/DescendantFonts"][0].get_object()
        descriptor = descendant["/FontDescriptor"]
        assert any(key in descriptor for key in ("/FontFile", "/FontFile2", "/FontFile3"))
        assert "DejaVu" in str(descendant["/BaseFont"])


def test_hostile_debtor_name_is_text_everywhere():
    data = sample_data(debtor_name=HOSTILE_NAME)

    html = letter_render_html(data=data)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html

    assert HOSTILE_NAME in pdf_text(letter_render_pdf(data=data))


def test_hostile_establishment_name_is_escaped_in_the_email():
    data = sample_data()
    data = LetterData(
        **{
            **data.__dict__,
            "establishment": LetterSender(
                **{**data.establishment.__dict__, "name": 'Hôtel "<b>Grand</b>", Paris'}
            ),
        }
    )

    message = letter_build_email(
        data=data, pdf=b"%PDF-1.7", recipient="ap@agency.example", message_id="<m1@test>"
    )

    html_body = message.alternatives[0].content
    assert "<b>Grand</b>" not in html_body
    assert "&lt;b&gt;Grand&lt;/b&gt;" in html_body
    # Plain text is not HTML: it shows the name as typed.
    assert 'Hôtel "<b>Grand</b>", Paris' in message.body
    parsed = email.message_from_bytes(message.message().as_bytes(), policy=email.policy.default)
    sender = parsed["From"].addresses[0]
    assert sender.display_name == 'Hôtel "<b>Grand</b>", Paris'
    assert sender.addr_spec == "facturation@hotel-billing.localhost"


@pytest.mark.parametrize(
    ("language", "total", "due_date"),
    [
        ("fr", "1 110,00 EUR", "01/11/2026"),
        ("en", "1,110.00 EUR", "11/01/2026"),
        ("es", "1 110,00 EUR", "01/11/2026"),
    ],
)
def test_email_has_both_bodies_the_pdf_and_the_headers(settings, language, total, due_date):
    settings.DEFAULT_FROM_EMAIL = "billing@hotels.example"
    data = sample_data(language=language, debtor_name=HOSTILE_NAME)
    pdf = letter_render_pdf(data=data)

    message = letter_build_email(
        data=data, pdf=pdf, recipient="ap@agency.example", message_id="<letter-42@hotels.example>"
    )
    message.send()

    assert len(mail.outbox) == 1
    raw = mail.outbox[0].message().as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Message-ID"] == "<letter-42@hotels.example>"
    assert parsed["To"] == "ap@agency.example"
    assert parsed["Reply-To"] == "compta@hotel.example"
    sender = parsed["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == (
        "Hôtel Saint-Michel",
        "billing@hotels.example",
    )
    assert "D00042" in parsed["Subject"]
    assert "\n" not in parsed["Subject"]

    text = parsed.get_body(preferencelist=("plain",)).get_content()
    html = parsed.get_body(preferencelist=("html",)).get_content()
    for body in (text, html):
        normalized = body.replace("\u00a0", " ")
        assert total in normalized
        assert due_date in normalized
        assert "F-2026-0101" in normalized and "F-2026-0202" in normalized
        assert "FR76 3000 6000 0112 3456 7890 189" in normalized
    assert f'lang="{language}"' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html
    assert HOSTILE_NAME in text

    attachments = list(parsed.iter_attachments())
    assert len(attachments) == 1
    assert attachments[0].get_content_type() == "application/pdf"
    assert attachments[0].get_filename() == "releve-d00042-2026-12-03.pdf"
    assert attachments[0].get_content() == pdf


def test_email_without_finance_email_has_no_reply_to():
    data = sample_data()
    data = LetterData(
        **{
            **data.__dict__,
            "establishment": LetterSender(**{**data.establishment.__dict__, "finance_email": ""}),
        }
    )

    message = letter_build_email(
        data=data,
        pdf=b"%PDF-1.7",
        recipient="ap@agency.example",
        message_id="<m2@test>",
        from_email="other@hotels.example",
    )

    parsed = email.message_from_bytes(message.message().as_bytes(), policy=email.policy.default)
    assert parsed["Reply-To"] is None
    assert parsed["From"].addresses[0].addr_spec == "other@hotels.example"


@pytest.mark.parametrize(
    ("account_number", "expected"),
    [
        ("D00042", "releve-d00042-2026-12-03.pdf"),
        ("AB/12 é\r\n../x", "releve-ab12-e-x-2026-12-03.pdf"),
    ],
)
def test_attachment_filename_is_safe(account_number, expected):
    data = sample_data()
    data = LetterData(
        **{
            **data.__dict__,
            "debtor": LetterRecipient(name="X", account_number=account_number),
        }
    )

    assert letter_filename(data=data) == expected
