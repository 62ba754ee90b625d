"""E-invoice documents: the XML is read back out of what was produced and checked field by
field against the invoice, with the `factur-x` library's own readers and XSD checks."""

import datetime as dt
import hashlib
import io
import re
from decimal import Decimal

import facturx
import pytest
from lxml import etree
from pypdf import PdfReader

from dispatch.documents.einvoice import (
    DocumentInvalid,
    einvoice_build,
    einvoice_data,
    einvoice_filename,
    einvoice_render_html,
)
from dispatch.models import DocumentFormat
from invoicing.models import Invoice, InvoiceLine
from tests.factories import (
    DebtorAccountFactory,
    InvoiceFactory,
    PaymentFactory,
)

pytestmark = pytest.mark.django_db

CII = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
UBL = {
    "inv": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
SETTLEMENT = (
    "/rsm:CrossIndustryInvoice/rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeSettlement"
)
SUMMATION = f"{SETTLEMENT}/ram:SpecifiedTradeSettlementHeaderMonetarySummation"
AGREEMENT = (
    "/rsm:CrossIndustryInvoice/rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeAgreement"
)

# (description, quantity, unit price, VAT rate %): a stay with three French VAT rates.
STAY = [
    ("Hébergement chambre double", "3", "120.00", "10"),
    ("Petit-déjeuner", "6", "15.50", "5.5"),
    ("Minibar", "2", "8.40", "20"),
    ("Parking", "3", "12.00", "20"),
]


def make_invoice(*, lines=STAY, payments=(), debtor=None, **fields) -> Invoice:
    """An invoice whose lines and totals agree, as the import writes them."""
    debtor = debtor or DebtorAccountFactory(
        name="Voyages Lumière SARL",
        account_number="C-0042",
        address_line1="8 quai des Chartrons",
        postal_code="33000",
        city="Bordeaux",
        country="FR",
        siret="41225331600021",
        vat_number="FR 83 412253316",
        einvoicing_id="412253316",
        contact_email="factures@voyages-lumiere.example",
        language="en",
    )
    invoice = InvoiceFactory(
        debtor=debtor,
        number=fields.pop("number", "FA-2026/0117"),
        issue_date=dt.date(2026, 11, 3),
        due_date=dt.date(2026, 12, 3),
        with_line=False,
        **fields,
    )
    net_total = vat_total = Decimal("0.00")
    for position, (description, quantity, price, rate) in enumerate(lines, start=1):
        net = (Decimal(quantity) * Decimal(price)).quantize(Decimal("0.01"))
        vat = (net * Decimal(rate) / 100).quantize(Decimal("0.01"))
        InvoiceLine.objects.create(
            invoice=invoice,
            position=position,
            description=description,
            quantity=Decimal(quantity),
            unit_price=Decimal(price),
            vat_rate=Decimal(rate),
            net_amount=net,
            vat_amount=vat,
        )
        net_total += net
        vat_total += vat
    invoice.net_total = net_total
    invoice.vat_total = vat_total
    invoice.gross_total = net_total + vat_total
    invoice.save()
    for reference, amount in payments:
        PaymentFactory(invoice=invoice, reference=reference, amount=Decimal(amount))
    return invoice


def xml_of_pdf(pdf: bytes) -> etree._Element:
    filename, xml = facturx.get_xml_from_pdf(pdf, check_xsd=True)
    assert filename == "factur-x.xml"
    return etree.fromstring(xml)


def text(root, path: str) -> str:
    found = root.xpath(path, namespaces=CII)
    assert len(found) == 1, f"{path}: {len(found)} matches"
    return found[0].text if hasattr(found[0], "text") else str(found[0])


def amount(root, path: str) -> Decimal:
    return Decimal(text(root, path))


def test_facturx_pdf_carries_the_invoice_with_several_vat_rates_and_partial_payments():
    invoice = make_invoice(payments=[("VIR-1", "200.00"), ("VIR-2", "150.55")])
    # 360.00 + 93.00 + 16.80 + 36.00 net; VAT 36.00 + 5.12 (5.115 rounded) + 3.36 + 7.20.
    assert invoice.net_total == Decimal("505.80")
    assert invoice.vat_total == Decimal("51.68")
    assert invoice.gross_total == Decimal("557.48")

    document = einvoice_build(
        invoice=invoice, document_format=DocumentFormat.FACTURX_EN16931, tracking_id="trk-1"
    )

    assert document.media_type == "application/pdf"
    assert document.filename == f"{invoice.establishment.code}-FA-2026-0117.pdf"
    assert document.invoice_number == "FA-2026/0117"
    assert document.tracking_id == "trk-1"
    assert document.sha256 == hashlib.sha256(document.content).hexdigest()
    root = xml_of_pdf(document.content)

    # Header
    assert text(root, "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:ID") == "FA-2026/0117"
    assert text(root, "//rsm:ExchangedDocument/ram:TypeCode") == "380"
    assert text(root, "//rsm:ExchangedDocument/ram:IssueDateTime/udt:DateTimeString") == "20261103"
    assert text(root, f"{SETTLEMENT}/ram:InvoiceCurrencyCode") == "EUR"
    assert (
        text(
            root,
            f"{SETTLEMENT}/ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString",
        )
        == "20261203"
    )
    assert (
        text(root, "//ram:GuidelineSpecifiedDocumentContextParameter/ram:ID")
        == "urn:cen.eu:en16931:2017"
    )

    # Lines, in order, with their net amounts and VAT rates
    items = root.xpath("//ram:IncludedSupplyChainTradeLineItem", namespaces=CII)
    got = [
        (
            text(item, "ram:SpecifiedTradeProduct/ram:Name"),
            Decimal(text(item, "ram:SpecifiedLineTradeDelivery/ram:BilledQuantity")),
            Decimal(
                text(
                    item,
                    "ram:SpecifiedLineTradeAgreement/ram:NetPriceProductTradePrice/ram:ChargeAmount",
                )
            ),
            text(item, "ram:SpecifiedLineTradeSettlement/ram:ApplicableTradeTax/ram:CategoryCode"),
            Decimal(
                text(
                    item,
                    "ram:SpecifiedLineTradeSettlement/ram:ApplicableTradeTax/ram:RateApplicablePercent",
                )
            ),
            Decimal(
                text(
                    item,
                    "ram:SpecifiedLineTradeSettlement/ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount",
                )
            ),
        )
        for item in items
    ]
    assert got == [
        ("Hébergement chambre double", 3, Decimal("120.00"), "S", Decimal("10"), Decimal("360.00")),
        ("Petit-déjeuner", 6, Decimal("15.50"), "S", Decimal("5.5"), Decimal("93.00")),
        ("Minibar", 2, Decimal("8.40"), "S", Decimal("20"), Decimal("16.80")),
        ("Parking", 3, Decimal("12.00"), "S", Decimal("20"), Decimal("36.00")),
    ]

    # VAT breakdown: one entry per rate, minibar and parking together at 20%
    breakdown = {
        Decimal(text(tax, "ram:RateApplicablePercent")): (
            text(tax, "ram:CategoryCode"),
            Decimal(text(tax, "ram:BasisAmount")),
            Decimal(text(tax, "ram:CalculatedAmount")),
        )
        for tax in root.xpath(f"{SETTLEMENT}/ram:ApplicableTradeTax", namespaces=CII)
    }
    assert breakdown == {
        Decimal("5.5"): ("S", Decimal("93.00"), Decimal("5.12")),
        Decimal("10"): ("S", Decimal("360.00"), Decimal("36.00")),
        Decimal("20"): ("S", Decimal("52.80"), Decimal("10.56")),
    }

    # Totals: payments so far are prepaid, the rest is due
    assert amount(root, f"{SUMMATION}/ram:LineTotalAmount") == Decimal("505.80")
    assert amount(root, f"{SUMMATION}/ram:TaxBasisTotalAmount") == Decimal("505.80")
    assert amount(root, f"{SUMMATION}/ram:TaxTotalAmount[@currencyID='EUR']") == Decimal("51.68")
    assert amount(root, f"{SUMMATION}/ram:GrandTotalAmount") == Decimal("557.48")
    assert amount(root, f"{SUMMATION}/ram:TotalPrepaidAmount") == Decimal("350.55")
    assert amount(root, f"{SUMMATION}/ram:DuePayableAmount") == Decimal("206.93")

    # Payment means: SEPA credit transfer to the establishment's account
    means = f"{SETTLEMENT}/ram:SpecifiedTradeSettlementPaymentMeans"
    assert text(root, f"{means}/ram:TypeCode") == "58"
    assert text(root, f"{means}/ram:PayeePartyCreditorFinancialAccount/ram:IBANID") == (
        "FR7630006000011234567890189"
    )
    assert (
        text(root, f"{means}/ram:PayeeSpecifiedCreditorFinancialInstitution/ram:BICID")
        == "AGRIFRPP"
    )

    # Seller: the establishment
    establishment = invoice.establishment
    seller = f"{AGREEMENT}/ram:SellerTradeParty"
    assert text(root, f"{seller}/ram:Name") == establishment.legal_name
    assert text(root, f"{seller}/ram:GlobalID[@schemeID='0009']") == "73282932000074"
    assert (
        text(root, f"{seller}/ram:SpecifiedLegalOrganization/ram:ID[@schemeID='0002']")
        == "732829320"
    )
    assert (
        text(root, f"{seller}/ram:SpecifiedTaxRegistration/ram:ID[@schemeID='VA']")
        == "FR44732829320"
    )
    assert text(root, f"{seller}/ram:PostalTradeAddress/ram:CityName") == "Paris"
    assert text(root, f"{seller}/ram:PostalTradeAddress/ram:CountryID") == "FR"
    assert text(root, f"{seller}/ram:URIUniversalCommunication/ram:URIID") == "compta@hotel.example"

    # Buyer: the debtor, addressed by its e-invoicing id (a SIREN)
    buyer = f"{AGREEMENT}/ram:BuyerTradeParty"
    assert text(root, f"{buyer}/ram:Name") == "Voyages Lumière SARL"
    assert text(root, f"{buyer}/ram:ID") == "C-0042"
    assert text(root, f"{buyer}/ram:GlobalID[@schemeID='0002']") == "412253316"
    assert (
        text(root, f"{buyer}/ram:URIUniversalCommunication/ram:URIID[@schemeID='0002']")
        == "412253316"
    )
    assert (
        text(root, f"{buyer}/ram:SpecifiedLegalOrganization/ram:ID[@schemeID='0009']")
        == "41225331600021"
    )
    assert (
        text(root, f"{buyer}/ram:SpecifiedTaxRegistration/ram:ID[@schemeID='VA']")
        == "FR83412253316"
    )
    assert text(root, f"{buyer}/ram:PostalTradeAddress/ram:PostcodeCode") == "33000"
    assert text(root, f"{buyer}/ram:PostalTradeAddress/ram:LineOne") == "8 quai des Chartrons"
    assert (
        text(root, f"{buyer}/ram:DefinedTradeContact/ram:EmailURIUniversalCommunication/ram:URIID")
        == "factures@voyages-lumiere.example"
    )


def test_facturx_pdf_is_pdfa3_at_level_en16931_in_the_debtors_language():
    invoice = make_invoice()
    document = einvoice_build(
        invoice=invoice, document_format=DocumentFormat.FACTURX_EN16931, tracking_id="t"
    )

    reader = PdfReader(io.BytesIO(document.content))
    xmp = reader.trailer["/Root"]["/Metadata"].get_object().get_data().decode()
    assert re.search(r"<pdfaid:part>3</pdfaid:part>", xmp)
    assert re.search(r"<pdfaid:conformance>B</pdfaid:conformance>", xmp)
    assert "<fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>" in xmp
    assert "<fx:DocumentFileName>factur-x.xml</fx:DocumentFileName>" in xmp
    assert facturx.get_level(xml_of_pdf(document.content)) == "en16931"
    assert reader.trailer["/Root"]["/Lang"] == "en"
    # The XML is declared as the invoice's data, as Factur-X requires.
    af = reader.trailer["/Root"]["/AF"][0].get_object()
    assert af["/AFRelationship"] == "/Data"

    # The printed invoice shows the same figures, in English for this debtor.
    page = "".join(p.extract_text() for p in reader.pages)
    assert "Invoice" in page
    assert "FA-2026/0117" in page
    assert "Voyages Lumière SARL" in page
    assert "557.48" in page
    assert "Total including VAT" in page
    fonts = {
        str(font["/BaseFont"]) for p in reader.pages for font in p["/Resources"]["/Font"].values()
    }
    assert fonts and all("DejaVu-Sans" in font for font in fonts)


def test_ubl_and_cii_alone_pass_the_xsd():
    invoice = make_invoice(payments=[("VIR-1", "57.48")])

    ubl = einvoice_build(invoice=invoice, document_format=DocumentFormat.UBL, tracking_id="u")
    cii = einvoice_build(invoice=invoice, document_format=DocumentFormat.CII, tracking_id="c")

    assert ubl.media_type == cii.media_type == "application/xml"
    assert ubl.filename == cii.filename == f"{invoice.establishment.code}-FA-2026-0117.xml"
    assert facturx.xml_check_xsd(ubl.content, flavor="ubl-2.1-invoice") is True
    assert facturx.xml_check_xsd(cii.content, flavor="factur-x", level="en16931") is True

    root = etree.fromstring(ubl.content)
    ns = UBL

    def ubl_text(path):
        (node,) = root.xpath(path, namespaces=ns)
        return node.text

    assert ubl_text("/inv:Invoice/cbc:ID") == "FA-2026/0117"
    assert ubl_text("/inv:Invoice/cbc:IssueDate") == "2026-11-03"
    assert ubl_text("/inv:Invoice/cbc:DueDate") == "2026-12-03"
    assert ubl_text("/inv:Invoice/cbc:InvoiceTypeCode") == "380"
    assert ubl_text("/inv:Invoice/cbc:DocumentCurrencyCode") == "EUR"
    assert ubl_text("//cac:LegalMonetaryTotal/cbc:TaxExclusiveAmount") == "505.80"
    assert ubl_text("//cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount") == "557.48"
    assert ubl_text("//cac:LegalMonetaryTotal/cbc:PrepaidAmount") == "57.48"
    assert ubl_text("//cac:LegalMonetaryTotal/cbc:PayableAmount") == "500.00"
    assert ubl_text("/inv:Invoice/cac:TaxTotal/cbc:TaxAmount") == "51.68"
    assert len(root.xpath("//cac:InvoiceLine", namespaces=ns)) == 4
    assert (
        ubl_text(
            "//cac:AccountingCustomerParty/cac:Party/cac:PartyLegalEntity/cbc:RegistrationName"
        )
        == "Voyages Lumière SARL"
    )

    # CII alone is the very XML the Factur-X PDF embeds.
    pdf = einvoice_build(
        invoice=invoice, document_format=DocumentFormat.FACTURX_EN16931, tracking_id="p"
    )
    assert facturx.get_xml_from_pdf(pdf.content)[1] == cii.content


def test_zero_rate_lines_are_exempt_with_a_reason_and_unpaid_invoices_have_no_prepaid():
    invoice = make_invoice(lines=[("Taxe de séjour", "3", "2.88", "0"), STAY[0]])

    root = etree.fromstring(
        einvoice_build(invoice=invoice, document_format=DocumentFormat.CII, tracking_id="z").content
    )
    (exempt,) = root.xpath(
        f"{SETTLEMENT}/ram:ApplicableTradeTax[ram:CategoryCode='E']", namespaces=CII
    )
    assert Decimal(text(exempt, "ram:BasisAmount")) == Decimal("8.64")
    assert Decimal(text(exempt, "ram:CalculatedAmount")) == Decimal("0")
    assert Decimal(text(exempt, "ram:RateApplicablePercent")) == Decimal("0")
    assert text(exempt, "ram:ExemptionReason") == "Exempt from VAT"
    assert root.xpath(f"{SUMMATION}/ram:TotalPrepaidAmount", namespaces=CII) == []
    assert amount(root, f"{SUMMATION}/ram:DuePayableAmount") == invoice.gross_total


def test_data_dict_is_decimal_strings_only():
    data = einvoice_data(invoice=make_invoice(payments=[("VIR-1", "0.48")]))

    def leaves(value):
        if isinstance(value, dict):
            for item in value.values():
                yield from leaves(item)
        elif isinstance(value, list):
            for item in value:
                yield from leaves(item)
        else:
            yield value

    assert not any(isinstance(leaf, float) for leaf in leaves(data))
    assert data["BT-113"] == "0.48"
    assert data["BT-115"] == "557.00"
    assert data["BT-81"] == "58"


def test_a_platform_client_code_is_the_buyer_id_and_a_peppol_id_its_address():
    debtor = DebtorAccountFactory(einvoicing_id="BAVEL-77310")
    root = etree.fromstring(
        einvoice_build(
            invoice=make_invoice(debtor=debtor), document_format=DocumentFormat.CII, tracking_id="b"
        ).content
    )
    assert text(root, f"{AGREEMENT}/ram:BuyerTradeParty/ram:ID") == "BAVEL-77310"

    debtor = DebtorAccountFactory(einvoicing_id="0208:0123456789")
    root = etree.fromstring(
        einvoice_build(
            invoice=make_invoice(debtor=debtor, number="FA-2"),
            document_format=DocumentFormat.CII,
            tracking_id="p",
        ).content
    )
    buyer = f"{AGREEMENT}/ram:BuyerTradeParty"
    assert (
        text(root, f"{buyer}/ram:URIUniversalCommunication/ram:URIID[@schemeID='0208']")
        == "0123456789"
    )
    assert text(root, f"{buyer}/ram:ID") == debtor.account_number


def test_an_invoice_without_lines_is_refused_by_the_xsd():
    # The Factur-X and UBL XSDs put no code list or length on identifiers and currencies
    # (the schematron does); what they do refuse is structure, here BG-25 with no line.
    invoice = InvoiceFactory(with_line=False, gross=Decimal("0.00"))

    for document_format in DocumentFormat.values:
        with pytest.raises(DocumentInvalid) as error:
            einvoice_build(invoice=invoice, document_format=document_format, tracking_id="x")
        message = str(error.value)
        assert "XML Schema Definition" in message
        assert "IncludedSupplyChainTradeLineItem" in message or "InvoiceLine" in message


def test_an_unknown_currency_code_is_refused_before_anything_is_built():
    # "ZZZ" passes the model's three-letter check but is no ISO 4217 currency.
    invoice = make_invoice(currency="ZZZ")

    with pytest.raises(DocumentInvalid, match="ZZZ"):
        einvoice_build(
            invoice=invoice, document_format=DocumentFormat.FACTURX_EN16931, tracking_id="x"
        )


def test_lines_that_do_not_add_up_to_the_totals_are_refused():
    invoice = make_invoice()
    Invoice.objects.filter(pk=invoice.pk).update(
        net_total=Decimal("500.00"), gross_total=Decimal("551.68")
    )

    with pytest.raises(DocumentInvalid, match="505.80"):
        einvoice_build(invoice=invoice, document_format=DocumentFormat.CII, tracking_id="x")


def test_markup_in_the_debtors_name_is_escaped_in_the_pdf_and_exact_in_the_xml():
    name = '<script>alert("x")</script> & Co'
    debtor = DebtorAccountFactory(name=name, language="fr")
    invoice = make_invoice(debtor=debtor)
    data = einvoice_data(invoice=invoice)

    html = einvoice_render_html(data=data, language="fr")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in html
    assert "Facture" in html or "Invoice" in html

    document = einvoice_build(
        invoice=invoice, document_format=DocumentFormat.FACTURX_EN16931, tracking_id="s"
    )
    root = xml_of_pdf(document.content)
    assert text(root, f"{AGREEMENT}/ram:BuyerTradeParty/ram:Name") == name
    page = "".join(p.extract_text() for p in PdfReader(io.BytesIO(document.content)).pages)
    assert '<script>alert("x")</script> & Co' in page


def test_filenames_keep_only_safe_characters():
    assert (
        einvoice_filename(
            establishment_code="paris-opera", invoice_number="F 2026/01#é", extension="pdf"
        )
        == "paris-opera-F-2026-01.pdf"
    )
    assert einvoice_filename(establishment_code="h", invoice_number="../../x", extension="xml") == (
        "h-x.xml"
    )
    assert einvoice_filename(
        establishment_code="h", invoice_number="F2026.001", extension="xml"
    ) == ("h-F2026-001.xml")
