"""The French and Spanish catalogues: complete, compilable, and what the admin and the letter show.

The tests compile the committed .po files into a temporary folder and point LOCALE_PATHS at
it, so they check the sources in the repository rather than whatever .mo files happen to
lie in locale/ (those are build products, not committed).
"""

import ast
import datetime as dt
import io
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.forms import modelform_factory
from django.urls import reverse
from django.utils import translation
from pypdf import PdfReader

from dispatch.documents.letter import (
    LetterData,
    LetterLine,
    LetterRecipient,
    LetterSender,
    letter_render_pdf,
)
from dispatch.models import SkipReason
from establishments.models import Establishment
from tests.factories import EstablishmentFactory

LOCALE_DIR = Path(django_settings.BASE_DIR) / "locale"
# English is the source language: its catalogue exists but stays empty on purpose.
TRANSLATED_LANGUAGES = ("fr", "es")
PLURAL_FORMS = {"fr": "nplurals=2; plural=(n > 1);", "es": "nplurals=2; plural=(n != 1);"}

# printf-style named placeholders and str.format fields; a translation must keep them all.
PLACEHOLDER = re.compile(r"%\((\w+)\)[-#0 +]*\d*(?:\.\d+)?[sdifr]|\{(\w+)\}")

EXPECTED = {
    "fr": {
        "auto_send_label": "Envoi automatique des factures en attente",
        "preferences": "Préférences › Informations financières",
        "letter_title": "Relevé de compte",
        "salutation": "Madame, Monsieur,",
        "skip_reasons": {
            SkipReason.NO_SEND_MODE: "Aucun mode d'envoi choisi",
            SkipReason.MISSING_EMAIL: "Aucun e-mail de contact",
            SkipReason.INVALID_EMAIL: "E-mail de contact invalide",
            SkipReason.INTEGRATION_INACTIVE: "Intégration de facturation électronique inactive",
            SkipReason.MISSING_EINVOICING_ID: (
                "Aucun identifiant de destinataire pour la facturation électronique"
            ),
            SkipReason.PAUSED: "Relances suspendues",
            SkipReason.BELOW_MINIMUM: "Total dû inférieur au minimum",
            SkipReason.INTERVAL_NOT_REACHED: "Intervalle de relance non atteint",
            SkipReason.ALREADY_SENT_TODAY: "Relevé déjà envoyé pour cette date d'exploitation",
        },
    },
    "es": {
        "auto_send_label": "Envío automático de facturas pendientes",
        "preferences": "Preferencias › Información financiera",
        "letter_title": "Extracto de cuenta",
        "salutation": "Estimados señores:",
        "skip_reasons": {
            SkipReason.NO_SEND_MODE: "Sin modo de envío",
            SkipReason.MISSING_EMAIL: "Sin correo electrónico de contacto",
            SkipReason.INVALID_EMAIL: "Correo electrónico de contacto no válido",
            SkipReason.INTEGRATION_INACTIVE: "Integración de facturación electrónica inactiva",
            SkipReason.MISSING_EINVOICING_ID: (
                "Sin identificador de destinatario de facturación electrónica"
            ),
            SkipReason.PAUSED: "Recordatorios suspendidos",
            SkipReason.BELOW_MINIMUM: "Total pendiente inferior al mínimo",
            SkipReason.INTERVAL_NOT_REACHED: "Intervalo de recordatorio no alcanzado",
            SkipReason.ALREADY_SENT_TODAY: "Extracto ya enviado en esta fecha contable",
        },
    },
}


@dataclass
class PoEntry:
    line: int
    flags: set[str] = field(default_factory=set)
    msgid: str = ""
    msgid_plural: str | None = None
    # "msgstr" for singular entries, "msgstr[0]", "msgstr[1]"... for plural ones.
    msgstr: dict[str, str] = field(default_factory=dict)

    @property
    def is_header(self) -> bool:
        return self.msgid == ""


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "django.po"


def po_entries(path: Path) -> list[PoEntry]:
    """Just enough of the PO format for these checks: flags, msgid(_plural), msgstr(s)."""
    entries: list[PoEntry] = []
    entry: PoEntry | None = None
    keyword: str | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            entry, keyword = None, None
            continue
        if line.startswith("#~"):  # obsolete entry: gettext ignores it
            continue
        if entry is None:
            entry = PoEntry(line=number)
            entries.append(entry)
        if line.startswith("#,"):
            entry.flags.update(flag.strip() for flag in line[2:].split(","))
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            _append(entry, keyword, ast.literal_eval(line))
        else:
            keyword, _, literal = line.partition(" ")
            _append(entry, keyword, ast.literal_eval(literal), start=True)
    return entries


def _append(entry: PoEntry, keyword: str | None, text: str, *, start: bool = False) -> None:
    if keyword == "msgid":
        entry.msgid = text if start else entry.msgid + text
    elif keyword == "msgid_plural":
        entry.msgid_plural = text if start else entry.msgid_plural + text
    elif keyword and keyword.startswith("msgstr"):
        entry.msgstr[keyword] = text if start else entry.msgstr[keyword] + text
    elif keyword != "msgctxt":
        raise AssertionError(f"unexpected PO line for keyword {keyword!r}: {text!r}")


def placeholders(text: str) -> set[str]:
    return {a or b for a, b in PLACEHOLDER.findall(text)}


@pytest.fixture(scope="session")
def compiled_locale(tmp_path_factory) -> Path:
    msgfmt = shutil.which("msgfmt")
    if msgfmt is None:
        pytest.fail("msgfmt is missing: install gettext (`make test` does it).")
    root = tmp_path_factory.mktemp("locale")
    for language in TRANSLATED_LANGUAGES:
        target = root / language / "LC_MESSAGES"
        target.mkdir(parents=True)
        # --check: header, format strings and plural forms, as compilemessages would need.
        result = subprocess.run(
            [msgfmt, "--check", "-o", str(target / "django.mo"), str(po_path(language))],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def catalogues(settings, compiled_locale):
    # Changing LOCALE_PATHS makes Django drop its cached catalogues (setting_changed).
    settings.LOCALE_PATHS = [compiled_locale]
    return compiled_locale


def test_english_catalogue_exists_and_stays_untranslated():
    entries = [e for e in po_entries(po_path("en")) if not e.is_header]
    assert entries
    assert all(not any(e.msgstr.values()) for e in entries)


@pytest.mark.parametrize("language", TRANSLATED_LANGUAGES)
def test_catalogue_header(language):
    header = next(e for e in po_entries(po_path(language)) if e.is_header)
    fields = dict(
        line.split(": ", 1) for line in header.msgstr["msgstr"].splitlines() if ": " in line
    )
    assert fields["Language"] == language
    assert fields["Content-Type"] == "text/plain; charset=UTF-8"
    assert fields["Plural-Forms"] == PLURAL_FORMS[language]
    assert "fuzzy" not in header.flags


@pytest.mark.parametrize("language", TRANSLATED_LANGUAGES)
def test_every_message_is_translated(language):
    entries = [e for e in po_entries(po_path(language)) if not e.is_header]
    assert len(entries) > 100  # the parser read the file, not an empty shell
    untranslated = [
        f"line {e.line}: {e.msgid!r}"
        for e in entries
        if "fuzzy" in e.flags or not e.msgstr or not all(e.msgstr.values())
    ]
    assert untranslated == [], (
        f"{language}: translate these messages in {po_path(language)}:\n" + "\n".join(untranslated)
    )
    plural = [e for e in entries if e.msgid_plural is not None]
    assert plural
    assert all(set(e.msgstr) == {"msgstr[0]", "msgstr[1]"} for e in plural)


@pytest.mark.parametrize("language", TRANSLATED_LANGUAGES)
def test_translations_keep_the_placeholders(language):
    wrong = []
    for e in po_entries(po_path(language)):
        if e.is_header:
            continue
        if e.msgid_plural is None:
            if placeholders(e.msgstr["msgstr"]) != placeholders(e.msgid):
                wrong.append(e.msgid)
            continue
        # A singular form may leave the count out ("The invoice marked in red..."), as the
        # English singular does; the plural form must keep every placeholder.
        source = placeholders(e.msgid) | placeholders(e.msgid_plural)
        if placeholders(e.msgstr["msgstr[0]"]) - source:
            wrong.append(e.msgid)
        if placeholders(e.msgstr["msgstr[1]"]) != placeholders(e.msgid_plural):
            wrong.append(e.msgid_plural)
    assert wrong == []


@pytest.mark.parametrize("language", TRANSLATED_LANGUAGES)
def test_key_strings_are_translated(catalogues, language):
    expected = EXPECTED[language]
    form_class = modelform_factory(Establishment, fields=["auto_send_pending_invoices"])
    with translation.override(language):
        # The label the admin shows: capfirst() of the lowercase verbose name.
        assert (
            str(form_class.base_fields["auto_send_pending_invoices"].label)
            == (expected["auto_send_label"])
        )
        assert (
            translation.gettext("Preferences › Financial information") == (expected["preferences"])
        )
        assert translation.gettext("Statement of account") == expected["letter_title"]
        assert {reason: str(reason.label) for reason in SkipReason} == expected["skip_reasons"]
        assert (
            translation.ngettext("%(days)s day overdue", "%(days)s days overdue", 3) % {"days": 3}
            == {"fr": "3 jours de retard", "es": "3 días de retraso"}[language]
        )


@pytest.mark.parametrize("language", TRANSLATED_LANGUAGES)
def test_letter_pdf_is_in_the_debtor_language(catalogues, language):
    line = LetterLine(
        number="F-2026-0001",
        issue_date=dt.date(2026, 10, 1),
        due_date=dt.date(2026, 10, 31),
        total=Decimal("1234.50"),
        paid=Decimal("200.00"),
        due=Decimal("1034.50"),
        days_overdue=34,
    )
    data = LetterData(
        establishment=LetterSender(name="Hôtel Lumière Paris", iban="FR7630006000011234567890189"),
        debtor=LetterRecipient(name="Voyages Martin SA", account_number="D00042"),
        business_date=dt.date(2026, 12, 4),
        language=language,
        currency="EUR",
        lines=(line,),
        total_due=line.due,
        overdue_total=line.due,
    )
    reader = PdfReader(io.BytesIO(letter_render_pdf(data=data)))
    text = " ".join(" ".join(page.extract_text().split()) for page in reader.pages)
    expected = EXPECTED[language]
    assert expected["letter_title"] in text
    assert expected["salutation"] in text
    english = ["Statement of account", "Dear Sir or Madam", "Payment instructions", "Total due"]
    assert [phrase for phrase in english if phrase in text] == []


@pytest.mark.django_db
@pytest.mark.parametrize("language", TRANSLATED_LANGUAGES)
def test_admin_preferences_section_is_translated(catalogues, admin_client, language):
    establishment = EstablishmentFactory()
    url = reverse("admin:establishments_establishment_change", args=[establishment.pk])
    response = admin_client.get(url, HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200
    content = response.content.decode()
    assert EXPECTED[language]["preferences"] in content
    assert EXPECTED[language]["auto_send_label"] in content
