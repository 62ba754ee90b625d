"""The remittance letter: what a debtor owes, as a PDF/A-3b document and the email carrying it.

Rendering is pure (data in, bytes out, STYLE.md point 12): `letter_data_from_dispatch` reads
the outbox snapshot once, then `letter_render_pdf` and `letter_build_email` only format it.
Storage and sending belong to dispatch/services.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from email.utils import formataddr
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import Prefetch
from django.template.loader import render_to_string
from django.utils import formats, translation
from django.utils.text import slugify

from dispatch.models import Dispatch, DispatchItem
from invoicing.models import ZERO, Invoice, cents

LETTER_TEMPLATE = "dispatch/letter.html"
EMAIL_SUBJECT_TEMPLATE = "dispatch/email/letter_subject.txt"
EMAIL_TEXT_TEMPLATE = "dispatch/email/letter_body.txt"
EMAIL_HTML_TEMPLATE = "dispatch/email/letter_body.html"
PDF_VARIANT = "pdf/a-3b"


@dataclass(frozen=True)
class LetterLine:
    number: str
    issue_date: dt.date
    due_date: dt.date
    total: Decimal
    paid: Decimal
    due: Decimal
    days_overdue: int  # 0 when not overdue

    @property
    def is_overdue(self) -> bool:
        return self.days_overdue > 0


@dataclass(frozen=True)
class LetterSender:
    """The establishment as it presents itself on the letter."""

    name: str
    legal_name: str = ""
    address_lines: tuple[str, ...] = ()
    postal_code: str = ""
    city: str = ""
    country: str = ""
    siret: str = ""
    vat_number: str = ""
    finance_email: str = ""
    phone: str = ""
    iban: str = ""
    bic: str = ""


@dataclass(frozen=True)
class LetterRecipient:
    """The debtor account; `address_lines` is the postal block, ready to print."""

    name: str
    account_number: str
    address_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class LetterData:
    establishment: LetterSender
    debtor: LetterRecipient
    business_date: dt.date
    language: str
    currency: str
    lines: tuple[LetterLine, ...]
    total_due: Decimal
    overdue_total: Decimal


def letter_data_from_dispatch(*, dispatch: Dispatch) -> LetterData:
    """Build the letter from the dispatch's snapshot, in two queries whatever its size.

    Amounts due and days overdue come from the DispatchItem rows written when the letter was
    planned, not from today's payments: a retried send must carry the same figures.
    """
    items = DispatchItem.objects.select_related("invoice").order_by(
        "invoice__due_date", "invoice__number", "pk"
    )
    dispatch = (
        Dispatch.objects.select_related("establishment", "debtor")
        .prefetch_related(Prefetch("items", queryset=items))
        .get(pk=dispatch.pk)
    )
    lines = tuple(
        LetterLine(
            number=item.invoice.number,
            issue_date=item.invoice.issue_date,
            due_date=item.invoice.due_date,
            total=item.invoice.gross_total,
            paid=item.invoice.gross_total - item.amount_due,
            due=item.amount_due,
            days_overdue=item.days_overdue,
        )
        for item in dispatch.items.all()
    )
    return _letter_data(
        establishment=dispatch.establishment,
        debtor=dispatch.debtor,
        business_date=dispatch.business_date,
        language=dispatch.language,
        currency=dispatch.currency,
        lines=lines,
    )


def letter_data_for_debtor(*, debtor, business_date: dt.date) -> LetterData | None:
    """The letter the next run would send the debtor, from today's pending invoices.

    None when nothing is pending. Nothing is written: this is the accountants' preview.
    """
    invoices = list(
        Invoice.objects.pending()
        .filter(debtor=debtor, issue_date__lte=business_date)
        .select_related("establishment")
        .order_by("due_date", "number")
    )
    if not invoices:
        return None
    establishment = debtor.establishment
    lines = tuple(
        LetterLine(
            number=invoice.number,
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
            total=invoice.gross_total,
            paid=cents(invoice.amount_paid),
            due=cents(invoice.amount_due),
            days_overdue=max(0, (business_date - invoice.due_date).days),
        )
        for invoice in invoices
    )
    return _letter_data(
        establishment=establishment,
        debtor=debtor,
        business_date=business_date,
        language=debtor.language or establishment.language,
        currency=establishment.currency,
        lines=lines,
    )


def _letter_data(*, establishment, debtor, business_date, language, currency, lines):
    debtor_address = [debtor.address_line1, debtor.address_line2]
    debtor_address.append(" ".join(part for part in (debtor.postal_code, debtor.city) if part))
    # A domestic letter omits the country, as the post office expects.
    if debtor.country and debtor.country != establishment.country:
        debtor_address.append(debtor.country)

    return LetterData(
        establishment=LetterSender(
            name=establishment.name,
            legal_name=establishment.legal_name,
            address_lines=_non_empty(establishment.address_line1, establishment.address_line2),
            postal_code=establishment.postal_code,
            city=establishment.city,
            country=establishment.country,
            siret=establishment.siret,
            vat_number=establishment.vat_number,
            finance_email=establishment.finance_email,
            phone=establishment.phone,
            iban=establishment.iban,
            bic=establishment.bic,
        ),
        debtor=LetterRecipient(
            name=debtor.name,
            account_number=debtor.account_number,
            address_lines=_non_empty(*debtor_address),
        ),
        business_date=business_date,
        language=language,
        currency=currency,
        lines=lines,
        total_due=sum((line.due for line in lines), ZERO),
        overdue_total=sum((line.due for line in lines if line.is_overdue), ZERO),
    )


def letter_render_html(*, data: LetterData) -> str:
    with translation.override(data.language):
        return render_to_string(LETTER_TEMPLATE, _context(data))


def letter_render_pdf(*, data: LetterData) -> bytes:
    # Imported here: WeasyPrint loads Pango at import time, which code paths that never
    # render a letter (admin, migrations, the planner) should not pay for.
    from weasyprint import HTML

    html = letter_render_html(data=data)
    # The template embeds its stylesheet and loads nothing; base_url only anchors any
    # relative URL to the templates folder rather than the process's working directory.
    base_url = str(settings.BASE_DIR / "templates" / "dispatch")
    return HTML(string=html, base_url=base_url).write_pdf(pdf_variant=PDF_VARIANT)


def letter_filename(*, data: LetterData) -> str:
    """`releve-<account>-<YYYY-MM-DD>.pdf`, reduced to safe ASCII for every mail client."""
    stem = slugify(f"releve-{data.debtor.account_number}-{data.business_date.isoformat()}")
    return f"{stem or 'releve'}.pdf"


def letter_build_email(
    *,
    data: LetterData,
    pdf: bytes,
    recipient: str,
    message_id: str,
    from_email: str | None = None,
    connection: Any = None,
) -> EmailMultiAlternatives:
    """The letter's email, ready for `send()`; nothing is sent here.

    `message_id` is chosen by the caller and stored on the dispatch before sending, so that
    a send interrupted half-way can be matched with what the server received.
    """
    context = _context(data)
    with translation.override(data.language):
        subject = render_to_string(EMAIL_SUBJECT_TEMPLATE, context)
        text_body = render_to_string(EMAIL_TEXT_TEMPLATE, context)
        html_body = render_to_string(EMAIL_HTML_TEMPLATE, context)
    # A header cannot span lines; the template may end with a newline.
    subject = " ".join(subject.split())

    sender = formataddr((data.establishment.name, from_email or settings.DEFAULT_FROM_EMAIL))
    message = EmailMultiAlternatives(
        subject=subject,
        body=text_body,
        from_email=sender,
        to=[recipient],
        reply_to=[data.establishment.finance_email] if data.establishment.finance_email else None,
        headers={"Message-ID": message_id},
        connection=connection,
    )
    message.attach_alternative(html_body, "text/html")
    message.attach(letter_filename(data=data), pdf, "application/pdf")
    return message


def _non_empty(*parts: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in parts if part and part.strip())


def _money(value: Decimal, currency: str) -> str:
    # Formatted in the active language; the no-break space keeps "EUR" with its figure.
    amount = formats.number_format(value, decimal_pos=2, use_l10n=True, force_grouping=True)
    return f"{amount}\u00a0{currency}"


def _iban(value: str) -> str:
    """Groups of four, as printed on bank documents, so that it can be read aloud."""
    compact = "".join(value.split()).upper()
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def _context(data: LetterData) -> dict[str, Any]:
    """Everything the templates show, already formatted in the letter's language.

    Values stay plain strings (never marked safe), so the templates escape them.
    """
    with translation.override(data.language):
        short_date = formats.get_format("SHORT_DATE_FORMAT")
        rows = [
            {
                "number": line.number,
                "issue_date": formats.date_format(line.issue_date, short_date),
                "due_date": formats.date_format(line.due_date, short_date),
                "total": _money(line.total, data.currency),
                "paid": _money(line.paid, data.currency),
                "due": _money(line.due, data.currency),
                "days_overdue": line.days_overdue,
                "is_overdue": line.is_overdue,
            }
            for line in data.lines
        ]
        sender = data.establishment
        return {
            "data": data,
            "establishment": sender,
            "debtor": data.debtor,
            "language": data.language,
            "letter_date": formats.date_format(data.business_date, "DATE_FORMAT"),
            "rows": rows,
            "invoice_count": len(rows),
            "overdue_count": sum(1 for line in data.lines if line.is_overdue),
            "total_due": _money(data.total_due, data.currency),
            "overdue_total": _money(data.overdue_total, data.currency),
            "has_overdue": data.overdue_total > ZERO,
            "sender_city_line": " ".join(p for p in (sender.postal_code, sender.city) if p),
            "iban": _iban(sender.iban),
            "bic": sender.bic.strip().upper(),
            "payment_reference": data.debtor.account_number,
        }
