"""E-invoices: an invoice as Factur-X EN 16931 (PDF/A-3b with its CII XML), UBL 2.1 or CII.

The XML is produced by the `factur-x` library's own generators from one data dict keyed by
the EN 16931 business terms (BT-x / BG-x), and checked against the official XSD before
anything leaves this module: a document that fails is never returned, `DocumentInvalid`
carries the reason instead. Schematron rules need a Saxon server and are not run here.

`einvoice_data` reads the invoice once; `einvoice_render_xml` and `einvoice_render_pdf` are
pure functions of that dict (STYLE.md point 12); `einvoice_build` chains them for the
sender. Storage and sending belong to dispatch/einvoicing.py and the connectors.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import re
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string
from django.utils import formats, translation
from django.utils.translation import gettext as _
from stdnum import iban as iban_checker

from dispatch.connectors.base import Document
from dispatch.models import DocumentFormat
from invoicing.models import ZERO, Invoice, cents

INVOICE_TEMPLATE = "dispatch/invoice.html"
PDF_VARIANT = "pdf/a-3b"
LEVEL = "en16931"
# UNTDID 1001: commercial invoice. Credit notes are not produced by this module.
TYPE_CODE_INVOICE = "380"
# UN/ECE Rec 20 "one": hotel lines (nights, breakfasts, minibar) are counted in units.
UNIT_CODE = "C62"
# UNTDID 4461.
PAYMENT_MEANS_SEPA_TRANSFER = "58"
PAYMENT_MEANS_TRANSFER = "30"
# UNTDID 5305 VAT categories.
VAT_STANDARD = "S"
VAT_EXEMPT = "E"
# ISO 6523 ICD codes used as scheme ids for French companies and electronic addresses.
SCHEME_SIREN = "0002"
SCHEME_SIRET = "0009"
SCHEME_EMAIL = "EM"  # EAS code list: electronic mail
# A Peppol participant id written as "<ICD>:<value>", e.g. "0208:0123456789".
PEPPOL_ID = re.compile(r"^(\d{4}):(\S+)$")
SAFE_FILENAME = re.compile(r"[^A-Za-z0-9_-]+")

MEDIA_PDF = "application/pdf"
MEDIA_XML = "application/xml"


class DocumentInvalid(Exception):
    """The e-invoice could not be generated or failed its XSD check; the message says why."""


# --- data -------------------------------------------------------------------------------


def einvoice_data(*, invoice: Invoice) -> dict[str, Any]:
    """The invoice as a `factur-x` data dict (EN 16931 business terms), amounts as strings.

    Amounts are Decimal throughout and written with their exact digits; the library
    accepts numbers as strings, which keeps floats out. Texts (payment terms, VAT
    exemption reason) are in the debtor's language.
    Raise DocumentInvalid when the lines do not add up to the invoice's totals: such a
    document would contradict itself and platforms reject it.
    """
    invoice = (
        Invoice.objects.with_amounts()
        .select_related("establishment", "debtor")
        .prefetch_related("lines")
        .get(pk=invoice.pk)
    )
    establishment = invoice.establishment
    debtor = invoice.debtor
    lines = list(invoice.lines.all())
    paid = cents(invoice.amount_paid)
    gross = invoice.gross_total
    language = debtor.effective_language

    with translation.override(language):
        exemption_reason = _("Exempt from VAT")
        payment_terms = _("Payment due by %(date)s") % {
            "date": formats.date_format(invoice.due_date, "DATE_FORMAT")
        }

    line_net_total = sum((line.net_amount for line in lines), ZERO)
    line_vat_total = sum((line.vat_amount for line in lines), ZERO)
    if line_net_total != invoice.net_total or line_vat_total != invoice.vat_total:
        raise DocumentInvalid(
            f"Invoice {invoice.number}: its lines add up to {line_net_total} net and "
            f"{line_vat_total} VAT, its totals say {invoice.net_total} and "
            f"{invoice.vat_total}."
        )

    # One VAT breakdown entry per (category, rate), as EN 16931 BG-23 requires.
    breakdown: dict[tuple[str, Decimal], dict[str, Decimal]] = {}
    bg25 = []
    for index, line in enumerate(lines, start=1):
        category = _vat_category(line.vat_rate)
        entry = breakdown.setdefault((category, line.vat_rate), {"basis": ZERO, "tax": ZERO})
        entry["basis"] += line.net_amount
        entry["tax"] += line.vat_amount
        bg25.append(
            {
                "BT-126": str(index),
                "BT-153": line.description,
                "BT-129": _number(line.quantity),
                "BT-130": UNIT_CODE,
                "BT-146": _number(line.unit_price, min_places=2),
                "BT-131": _money(line.net_amount),
                "BT-151": category,
                "BT-152": _number(line.vat_rate),
            }
        )
    bg23 = []
    for (category, rate), amounts in sorted(breakdown.items(), key=lambda item: item[0][1]):
        entry = {
            "BT-116": _money(amounts["basis"]),
            "BT-117": _money(amounts["tax"]),
            "BT-118": category,
            "BT-119": _number(rate),
        }
        if category == VAT_EXEMPT:
            entry["BT-120"] = exemption_reason
        bg23.append(entry)

    data: dict[str, Any] = {
        "BT-1": invoice.number,
        "BT-2": invoice.issue_date,
        "BT-3": TYPE_CODE_INVOICE,
        "BT-5": invoice.currency,
        "BT-9": invoice.due_date,
        # The models keep no stay dates; hotel invoices are issued when the stay ends. The
        # header delivery block may not be empty either (the XSD refuses an empty one).
        "BT-72": invoice.issue_date,
        "BT-20": payment_terms,
        # The remittance information the debtor quotes with its transfer.
        "BT-83": invoice.number,
        "BG-4": _seller(establishment),
        "BG-7": _buyer(debtor, default_country=establishment.country),
        "BG-23": bg23,
        "BG-25": bg25,
        "BT-106": _money(line_net_total),
        "BT-109": _money(invoice.net_total),
        "BT-110": _money(invoice.vat_total),
        "BT-112": _money(gross),
        "BT-115": _money(gross - paid),
    }
    if paid > ZERO:
        data["BT-113"] = _money(paid)
    data.update(_payment_means(establishment))
    return data


def _seller(establishment) -> dict[str, Any]:
    party: dict[str, Any] = {
        "name": establishment.legal_name or establishment.name,
        "country_code": establishment.country,
        **_address(establishment),
    }
    if establishment.legal_name and establishment.legal_name != establishment.name:
        party["biz_name"] = establishment.name
    siret = _digits(establishment.siret)
    if len(siret) == 14:
        # French CIUS: the SIREN is the legal registration (BT-30), the SIRET the seller id.
        party["identifiers"] = {SCHEME_SIRET: siret}
        party["legal_identifier"] = siret[:9]
        party["legal_identifier_schemeid"] = SCHEME_SIREN
    elif establishment.siret:
        party["legal_identifier"] = establishment.siret
    if establishment.vat_number:
        party["vat_identifier"] = establishment.vat_number.replace(" ", "").upper()
    if establishment.finance_email:
        party["einvoicing_addr"] = establishment.finance_email
        party["einvoicing_addr_schemeid"] = SCHEME_EMAIL
    contact = {
        key: value
        for key, value in (
            ("email", establishment.finance_email),
            ("phone", establishment.phone),
        )
        if value
    }
    if contact:
        party["contacts"] = [contact]
    return party


def _buyer(debtor, *, default_country: str) -> dict[str, Any]:
    party: dict[str, Any] = {
        "name": debtor.name,
        # An account without a country is domestic, as on the letter; BT-55 is mandatory.
        "country_code": debtor.country or default_country,
        **_address(debtor),
    }
    identifiers: dict[str | None, str] = {}
    legal = _digits(debtor.siret)
    if len(legal) in (9, 14):
        party["legal_identifier"] = legal
        party["legal_identifier_schemeid"] = SCHEME_SIREN if len(legal) == 9 else SCHEME_SIRET
    elif debtor.siret:
        party["legal_identifier"] = debtor.siret
    if debtor.vat_number:
        party["vat_identifier"] = debtor.vat_number.replace(" ", "").upper()

    recipient = debtor.einvoicing_id.strip()
    scheme, value = _recipient_scheme(recipient)
    if scheme:
        party["einvoicing_addr"] = value
        party["einvoicing_addr_schemeid"] = scheme
        identifiers[scheme] = value
    elif recipient:
        # A platform's own client code has no public scheme: it is the buyer's id (BT-46).
        identifiers[None] = recipient
    if None not in identifiers:
        identifiers[None] = debtor.account_number
    party["identifiers"] = identifiers
    if debtor.contact_email:
        party["contacts"] = [{"email": debtor.contact_email}]
    return party


def _recipient_scheme(recipient: str) -> tuple[str, str]:
    """(scheme id, value) of a debtor's e-invoicing id; no scheme for a platform code."""
    if not recipient:
        return "", ""
    peppol = PEPPOL_ID.match(recipient)
    if peppol:
        return peppol.group(1), peppol.group(2)
    digits = _digits(recipient)
    if digits == recipient.replace(" ", ""):
        if len(digits) == 9:
            return SCHEME_SIREN, digits
        if len(digits) == 14:
            return SCHEME_SIRET, digits
    return "", recipient


def _address(party) -> dict[str, str]:
    return {
        key: value.strip()
        for key, value in (
            ("addr_l1", party.address_line1),
            ("addr_l2", party.address_line2),
            ("postcode", party.postal_code),
            ("city", party.city),
        )
        if value and value.strip()
    }


def _payment_means(establishment) -> dict[str, str]:
    iban = "".join(establishment.iban.split()).upper()
    if not iban:
        return {}
    means = {
        # SEPA credit transfer needs a valid IBAN; another account is a plain transfer.
        "BT-81": PAYMENT_MEANS_SEPA_TRANSFER
        if iban_checker.is_valid(iban)
        else PAYMENT_MEANS_TRANSFER,
        "BT-84": iban,
        "BT-85": establishment.legal_name or establishment.name,
    }
    if establishment.bic:
        means["BT-86"] = establishment.bic.strip().upper()
    return means


def _vat_category(rate: Decimal) -> str:
    # Hotels bill 0% lines for exempt services; zero-rated goods (Z) do not occur here.
    return VAT_STANDARD if rate > 0 else VAT_EXEMPT


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _money(value: Decimal) -> str:
    return f"{cents(value):f}"


def _number(value: Decimal, *, min_places: int = 0) -> str:
    """Exact digits without trailing zeros (1.000 -> 1, 5.50 -> 5.5), never an exponent."""
    text = f"{Decimal(value).normalize():f}"
    places = len(text.partition(".")[2])
    if places < min_places:
        text = f"{Decimal(value):.{min_places}f}"
    return text


# --- rendering --------------------------------------------------------------------------


def einvoice_render_xml(*, data: dict[str, Any], syntax: str) -> bytes:
    """CII (`syntax="cii"`) or UBL 2.1 (`syntax="ubl"`) XML, XSD-checked; raise DocumentInvalid."""
    import facturx

    generators = {"cii": facturx.generate_cii_xml, "ubl": facturx.generate_ubl_xml}
    try:
        generate = generators[syntax]
    except KeyError:
        raise ValueError(f"unknown XML syntax {syntax!r}") from None
    try:
        # The library rewrites the dict it is given; the caller's stays as it was.
        return generate(copy.deepcopy(data), level=LEVEL, check_xsd=True, check_schematron=False)
    # The library raises bare Exception for XSD failures and ValueError for bad data.
    except Exception as exc:
        raise DocumentInvalid(str(exc)) from exc


def einvoice_render_html(*, data: dict[str, Any], language: str, account_number: str = "") -> str:
    with translation.override(language):
        return render_to_string(INVOICE_TEMPLATE, _context(data, language, account_number))


def einvoice_render_pdf(*, data: dict[str, Any], language: str, account_number: str = "") -> bytes:
    """The Factur-X PDF: the invoice printed to PDF/A-3b with its CII XML embedded."""
    import facturx
    from weasyprint import HTML

    xml = einvoice_render_xml(data=data, syntax="cii")
    html = einvoice_render_html(data=data, language=language, account_number=account_number)
    base_url = str(settings.BASE_DIR / "templates" / "dispatch")
    pdf = HTML(string=html, base_url=base_url).write_pdf(pdf_variant=PDF_VARIANT)
    try:
        return facturx.generate_from_binary(
            pdf,
            xml,
            flavor="factur-x",
            level=LEVEL,
            check_xsd=True,
            check_schematron=False,
            lang=language,
            pdf_metadata=_pdf_metadata(data),
        )
    except Exception as exc:
        raise DocumentInvalid(str(exc)) from exc


def einvoice_filename(*, establishment_code: str, invoice_number: str, extension: str) -> str:
    """`<establishment code>-<invoice number>.<ext>`, reduced to characters every platform
    and file system accepts (the Bavel outbox uses it as the file's name): any run of
    other characters, dots included, becomes one dash, so no name can climb a folder."""
    parts = (
        SAFE_FILENAME.sub("-", part).strip("-") for part in (establishment_code, invoice_number)
    )
    stem = "-".join(part for part in parts if part)
    return f"{stem or 'invoice'}.{extension}"


def einvoice_build(*, invoice: Invoice, document_format: str, tracking_id: str) -> Document:
    """The validated document for one invoice in the integration's format.

    Raise DocumentInvalid (with the validation message) rather than return anything the
    XSD refuses.
    """
    data = einvoice_data(invoice=invoice)
    debtor = invoice.debtor
    if document_format == DocumentFormat.FACTURX_EN16931:
        content = einvoice_render_pdf(
            data=data,
            language=debtor.effective_language,
            account_number=debtor.account_number,
        )
        media_type, extension = MEDIA_PDF, "pdf"
    elif document_format == DocumentFormat.UBL:
        content = einvoice_render_xml(data=data, syntax="ubl")
        media_type, extension = MEDIA_XML, "xml"
    elif document_format == DocumentFormat.CII:
        content = einvoice_render_xml(data=data, syntax="cii")
        media_type, extension = MEDIA_XML, "xml"
    else:
        raise ValueError(f"unknown document format {document_format!r}")
    return Document(
        invoice_number=invoice.number,
        filename=einvoice_filename(
            establishment_code=invoice.establishment.code,
            invoice_number=invoice.number,
            extension=extension,
        ),
        content=content,
        media_type=media_type,
        sha256=hashlib.sha256(content).hexdigest(),
        tracking_id=tracking_id,
    )


def _pdf_metadata(data: dict[str, Any]) -> dict[str, str]:
    seller = data["BG-4"].get("biz_name") or data["BG-4"]["name"]
    return {
        "author": seller,
        "keywords": "Factur-X, Invoice",
        "title": f"{seller}: {data['BT-1']}",
        "subject": f"Factur-X invoice {data['BT-1']} dated {data['BT-2'].isoformat()} "
        f"issued by {seller}",
    }


def _context(data: dict[str, Any], language: str, account_number: str) -> dict[str, Any]:
    """What the template shows, formatted in the invoice's language.

    Values stay plain strings (never marked safe), so the template escapes them.
    """
    currency = data["BT-5"]
    short_date = formats.get_format("SHORT_DATE_FORMAT")
    seller = data["BG-4"]
    buyer = data["BG-7"]

    def money(value: str) -> str:
        amount = formats.number_format(
            Decimal(value), decimal_pos=2, use_l10n=True, force_grouping=True
        )
        return f"{amount}\u00a0{currency}"

    def number(value: str) -> str:
        return formats.number_format(Decimal(value), use_l10n=True)

    def date(value: dt.date) -> str:
        return formats.date_format(value, short_date)

    def city_line(party: dict[str, Any]) -> str:
        return " ".join(p for p in (party.get("postcode", ""), party.get("city", "")) if p)

    paid = data.get("BT-113")
    return {
        "language": language,
        "number": data["BT-1"],
        "issue_date": date(data["BT-2"]),
        "due_date": date(data["BT-9"]),
        "currency": currency,
        "payment_terms": data.get("BT-20", ""),
        "seller": {
            "name": seller.get("biz_name") or seller["name"],
            "legal_name": seller["name"],
            "address_lines": [seller[k] for k in ("addr_l1", "addr_l2") if seller.get(k)],
            "city_line": city_line(seller),
            "country": seller["country_code"],
            "siret": seller.get("identifiers", {}).get(SCHEME_SIRET, ""),
            "legal_id": seller.get("legal_identifier", ""),
            "vat_number": seller.get("vat_identifier", ""),
            "email": next((c.get("email") for c in seller.get("contacts", [])), ""),
            "phone": next((c.get("phone") for c in seller.get("contacts", [])), ""),
        },
        "buyer": {
            "name": buyer["name"],
            "address_lines": [buyer[k] for k in ("addr_l1", "addr_l2") if buyer.get(k)],
            "city_line": city_line(buyer),
            "country": buyer["country_code"]
            if buyer["country_code"] != seller["country_code"]
            else "",
            "legal_id": buyer.get("legal_identifier", ""),
            "vat_number": buyer.get("vat_identifier", ""),
            "einvoicing_id": buyer.get("einvoicing_addr", ""),
        },
        "account_number": account_number,
        "lines": [
            {
                "description": line["BT-153"],
                "quantity": number(line["BT-129"]),
                "unit_price": money(line["BT-146"]),
                "vat_rate": f"{number(line['BT-152'])}\u00a0%",
                "net": money(line["BT-131"]),
            }
            for line in data["BG-25"]
        ],
        "vat_breakdown": [
            {
                "rate": f"{number(entry['BT-119'])}\u00a0%",
                "basis": money(entry["BT-116"]),
                "tax": money(entry["BT-117"]),
                "exemption": entry.get("BT-120", ""),
            }
            for entry in data["BG-23"]
        ],
        "net_total": money(data["BT-109"]),
        "vat_total": money(data["BT-110"]),
        "gross_total": money(data["BT-112"]),
        "paid": money(paid) if paid else "",
        "due": money(data["BT-115"]),
        "iban": _group(data.get("BT-84", "")),
        "bic": data.get("BT-86", ""),
        "payment_reference": data.get("BT-83", ""),
    }


def _group(iban: str) -> str:
    """Groups of four, as printed on bank documents."""
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
