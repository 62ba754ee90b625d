"""Deterministic demo data, built as an import document (see `invoicing.importing`).

The same anchor date always gives the same document, so loading it again through the
import is an upsert that changes nothing.
"""

import datetime as dt
import random
from decimal import Decimal

from django.utils.text import slugify

from invoicing.services import line_amounts

SEED = 20261204
PARIS = "paris-lumiere"
CANCUN = "cancun-mar"

ESTABLISHMENTS = [
    {
        "code": PARIS,
        "name": "Hôtel Lumière Paris",
        "legal_name": "Hôtel Lumière Paris SAS",
        "address_line1": "27 rue de Rivoli",
        "postal_code": "75004",
        "city": "Paris",
        "country": "FR",
        "siret": "73282932000074",
        "vat_number": "FR44732829320",
        "finance_email": "comptabilite@hotel-lumiere.example",
        "phone": "+33 1 44 00 00 00",
        "iban": "FR7630006000011234567890189",
        "bic": "AGRIFRPP",
        "time_zone": "Europe/Paris",
        "language": "fr",
        "currency": "EUR",
        "auto_send_pending_invoices": True,
        "review_mode": False,
        "reminder_interval_days": 7,
        # High enough that one account shows the `below_minimum` skip.
        "minimum_amount": "50.00",
        # Hour 0, so the demo's nightly run processes it at any hour of the day.
        "send_hour": 0,
    },
    {
        "code": CANCUN,
        "name": "Hotel Mar Azul Cancún",
        "legal_name": "Hotelera Mar Azul S.A. de C.V.",
        "address_line1": "Blvd. Kukulcán km 12.5, Zona Hotelera",
        "postal_code": "77500",
        "city": "Cancún",
        "country": "MX",
        "vat_number": "HMA010101AB1",
        "finance_email": "cobranza@hotel-marazul.example",
        "phone": "+52 998 000 0000",
        "iban": "",
        "bic": "BNMXMXMM",
        "time_zone": "America/Cancun",
        "language": "es",
        "currency": "MXN",
        "auto_send_pending_invoices": True,
        "review_mode": False,
        "reminder_interval_days": 7,
        "minimum_amount": "0.01",
        # Hour 0, so the demo's nightly run processes it at any hour of the day.
        "send_hour": 0,
    },
]

# (name, kind, language); kind drives the payment terms.
PARIS_DEBTORS = [
    ("Atelier Moreau & Fils", "company", "fr"),
    ("Cabinet Lefèvre Conseil", "company", "fr"),
    ("Groupe Delaunay Industrie", "company", "fr"),
    ("Laboratoires Verlaine", "company", "fr"),
    ("Banque Saint-Honoré", "company", "fr"),
    ("Éditions du Marais", "company", "fr"),
    ("Maison Carpentier", "company", "fr"),
    ("Studio Lumière Production", "company", "fr"),
    ("Société Parisienne de Salons", "company", "fr"),
    ("Ingénierie Vauban", "company", "fr"),
    ("Transports Garnier", "company", "fr"),
    ("Fondation Rameau", "company", "fr"),
    ("Northwind Consulting Ltd", "company", "en"),
    ("Bluefield Pharma Inc.", "company", "en"),
    ("Harbor & Pike LLP", "company", "en"),
    ("Kestrel Aerospace plc", "company", "en"),
    ("Voyages Azur", "agency", "fr"),
    ("Agence Rive Gauche", "agency", "fr"),
    ("Évasion Tours", "agency", "fr"),
    ("Horizons Affaires", "agency", "fr"),
    ("Paris Séminaires", "agency", "fr"),
    ("Escapades Provence", "agency", "fr"),
    ("Voyages & Découvertes", "agency", "fr"),
    ("Globe Corporate Travel", "agency", "en"),
    ("Meridian Business Travel", "agency", "en"),
    ("Atlantic Tours Ltd", "tour_operator", "en"),
    ("Nordic Sun Travel AB", "tour_operator", "en"),
    ("Sakura Journeys", "tour_operator", "en"),
    ("Alpina Reisen GmbH", "tour_operator", "en"),
    ("Iberia Circuitos", "tour_operator", "es"),
    ("Tour Opérateur Méditerranée", "tour_operator", "fr"),
    ("Danube Cruises & Tours", "tour_operator", "en"),
]

CANCUN_DEBTORS = [
    ("Corporativo Maya Norte", "company", "es"),
    ("Grupo Industrial Peninsular", "company", "es"),
    ("Constructora Riviera", "company", "es"),
    ("Farmacéutica del Caribe", "company", "es"),
    ("Consultores Tulum", "company", "es"),
    ("Banco Regional del Sureste", "company", "es"),
    ("Eventos Corporativos Xcaret", "company", "es"),
    ("Logística Quintana Roo", "company", "es"),
    ("Seguros Cozumel", "company", "es"),
    ("Tecnología Holbox", "company", "es"),
    ("Clínica Playa Azul", "company", "es"),
    ("Lone Star Energy Inc.", "company", "en"),
    ("Maple Leaf Mining Corp.", "company", "en"),
    ("Pacific Ridge Software", "company", "en"),
    ("Great Lakes Insurance", "company", "en"),
    ("Viajes Caribe Azul", "agency", "es"),
    ("Agencia Sol y Mar", "agency", "es"),
    ("Turismo Yucatán", "agency", "es"),
    ("Destinos Bacalar", "agency", "es"),
    ("Viajes Chichén", "agency", "es"),
    ("Bodas & Eventos Riviera", "agency", "es"),
    ("Agencia Isla Mujeres", "agency", "es"),
    ("Sunshine Getaways", "agency", "en"),
    ("Coastal Corporate Travel", "agency", "en"),
    ("Caribbean Dreams Tours", "tour_operator", "en"),
    ("Northern Lights Holidays", "tour_operator", "en"),
    ("Maple Vacations", "tour_operator", "en"),
    ("Iberotours", "tour_operator", "es"),
    ("Reisen Karibik GmbH", "tour_operator", "en"),
    ("Tour Operadora Mexicana", "tour_operator", "es"),
    ("Azul Vacations", "tour_operator", "en"),
    ("Ruta Maya Tours", "tour_operator", "es"),
]

PAYMENT_TERMS = {"company": 30, "agency": 45, "tour_operator": 60}
MAILBOX = {"fr": "comptabilite", "en": "accounts", "es": "cuentas"}

# Accounts set up wrong on purpose, by position in the lists above, so that the run shows
# every kind of skip. Each of them gets an overdue, unpaid invoice to be skipped for.
NO_SEND_MODE = 3
MISSING_EMAIL = 7
INVALID_EMAIL = 11
PAUSED = 15
BELOW_MINIMUM = 19  # Paris only: its minimum is 50.00
MISCONFIGURED = {NO_SEND_MODE, MISSING_EMAIL, INVALID_EMAIL, PAUSED, BELOW_MINIMUM}

# E-invoicing: Paris has an active sandbox platform that some companies receive their
# invoices through (one of them without its recipient id, to show that skip); Cancún has
# an integration that was switched off, with one debtor still on it.
EINVOICING_INTEGRATION = {PARIS: "Plateforme démo", CANCUN: "Plataforma anterior"}
EINVOICING_ACTIVE = {PARIS: True, CANCUN: False}
EINVOICING_DEBTORS = {PARIS: {0, 1, 2, 5, 8}, CANCUN: {9}}
MISSING_EINVOICING_ID = {PARIS: 8}
MISCONFIGURED |= {8, 9}


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def _paris_lines(rng: random.Random) -> list[dict]:
    nights = rng.randint(1, 5)
    rooms = rng.choice([1, 1, 1, 2, 3, 6])
    guests = rooms * rng.choice([1, 2])
    room = rng.choice([("classique", 180), ("supérieure", 240), ("junior suite", 390)])
    price = Decimal(room[1] + 5 * rng.randint(0, 6))
    lines = [
        {
            "description": f"Hébergement, chambre {room[0]} ({rooms} × {nights} nuits)",
            "quantity": str(rooms * nights),
            "unit_price": _money(price),
            "vat_rate": "10.00",
        }
    ]
    if rng.random() < 0.7:
        lines.append(
            {
                "description": "Petit-déjeuner",
                "quantity": str(guests * nights),
                "unit_price": "28.00",
                "vat_rate": "10.00",
            }
        )
    if rng.random() < 0.2:
        lines.append(
            {
                "description": "Location salle de réunion, journée",
                "quantity": str(rng.randint(1, 2)),
                "unit_price": _money(Decimal(450 + 50 * rng.randint(0, 15))),
                "vat_rate": "20.00",
            }
        )
    if rng.random() < 0.35:
        lines.append(
            {
                "description": "Bar et minibar",
                "quantity": "1",
                "unit_price": _money(Decimal(rng.randint(1200, 14000)) / 100),
                "vat_rate": "20.00",
            }
        )
    lines.append(
        {
            "description": "Taxe de séjour",
            "quantity": str(guests * nights),
            "unit_price": "5.20",
            "vat_rate": "0.00",
        }
    )
    return lines


def _cancun_lines(rng: random.Random) -> list[dict]:
    nights = rng.randint(2, 7)
    rooms = rng.choice([1, 1, 2, 4, 8])
    guests = rooms * rng.choice([1, 2])
    room = rng.choice([("estándar", 2800), ("vista al mar", 3900), ("suite", 6200)])
    price = Decimal(room[1] + 50 * rng.randint(0, 10))
    lodging = {
        "description": f"Hospedaje, habitación {room[0]} ({rooms} × {nights} noches)",
        "quantity": str(rooms * nights),
        "unit_price": _money(price),
        "vat_rate": "16.00",
    }
    lodging_net, _vat = line_amounts(
        quantity=Decimal(lodging["quantity"]), unit_price=price, vat_rate=Decimal(16)
    )
    lines = [
        lodging,
        {
            "description": "Impuesto sobre hospedaje (5 %)",
            "quantity": "1",
            "unit_price": _money(lodging_net * Decimal("0.05")),
            "vat_rate": "0.00",
        },
    ]
    if rng.random() < 0.6:
        lines.append(
            {
                "description": "Desayuno buffet",
                "quantity": str(guests * nights),
                "unit_price": "420.00",
                "vat_rate": "16.00",
            }
        )
    if rng.random() < 0.3:
        lines.append(
            {
                "description": "Traslado aeropuerto",
                "quantity": str(rng.randint(1, 2)),
                "unit_price": "950.00",
                "vat_rate": "16.00",
            }
        )
    if rng.random() < 0.15:
        lines.append(
            {
                "description": "Renta de salón de eventos",
                "quantity": "1",
                "unit_price": _money(Decimal(9000 + 500 * rng.randint(0, 30))),
                "vat_rate": "16.00",
            }
        )
    return lines


def _gross(lines: list[dict]) -> Decimal:
    total = Decimal("0.00")
    for line in lines:
        net, vat = line_amounts(
            quantity=Decimal(line["quantity"]),
            unit_price=Decimal(line["unit_price"]),
            vat_rate=Decimal(line["vat_rate"]),
        )
        total += net + vat
    return total


def _debtor_row(code: str, prefix: str, index: int, entry: tuple, anchor: dt.date) -> dict:
    name, kind, language = entry
    establishment_language = "fr" if code == PARIS else "es"
    mailbox = MAILBOX[language]
    domain = f"{slugify(name)}.example"
    row = {
        "establishment": code,
        "account_number": f"{prefix}{index + 1:04d}",
        "name": name,
        "contact_email": f"{mailbox}@{domain}",
        "send_mode": "email",
        "language": "" if language == establishment_language else language,
        "country": "FR" if code == PARIS else "MX",
    }
    if index == NO_SEND_MODE:
        row["send_mode"] = "none"
    elif index == MISSING_EMAIL:
        row["contact_email"] = ""
    elif index == INVALID_EMAIL:
        row["contact_email"] = f"{mailbox}@@{domain}"
    elif index == PAUSED:
        row["paused_until"] = (anchor + dt.timedelta(days=45)).isoformat()
        row["pause_reason"] = (
            "Échéancier accordé par la direction"
            if code == PARIS
            else "Plan de pagos acordado con la gerencia"
        )
    if index in EINVOICING_DEBTORS[code]:
        row["send_mode"] = "einvoicing"
        row["integration"] = EINVOICING_INTEGRATION[code]
        # A SIRET-shaped identifier that is stable for the account.
        siret = f"{(index + 1) * 10337:09d}00012"[:14]
        row["siret"] = siret
        row["einvoicing_id"] = "" if MISSING_EINVOICING_ID.get(code) == index else siret
    if kind == "agency" and index % 2 == 0:
        row["credit_limit"] = "20000.00" if code == PARIS else "400000.00"
    return row


def _invoices_for(
    rng: random.Random,
    *,
    code: str,
    debtor: dict,
    index: int,
    kind: str,
    anchor: dt.date,
    numbers: list[int],
    invoices: list[dict],
    payments: list[dict],
) -> None:
    prefix = "PL" if code == PARIS else "CM"
    make_lines = _paris_lines if code == PARIS else _cancun_lines
    terms = PAYMENT_TERMS[kind]
    count = 1 if (code == PARIS and index == BELOW_MINIMUM) else rng.randint(3, 7)
    for position in range(count):
        numbers[0] += 1
        number = f"{prefix}-{numbers[0]:05d}"
        forced_unpaid = index in MISCONFIGURED and position == 0
        overdue = forced_unpaid or rng.random() < 0.6
        if overdue:
            due = anchor - dt.timedelta(days=rng.randint(1, 120))
        else:
            due = anchor + dt.timedelta(days=rng.randint(0, min(terms, 30)))
        issue = due - dt.timedelta(days=terms)
        if code == PARIS and index == BELOW_MINIMUM:
            lines = [
                {
                    "description": "Petit-déjeuner",
                    "quantity": "1",
                    "unit_price": "28.00",
                    "vat_rate": "10.00",
                }
            ]
        else:
            lines = make_lines(rng)
        row = {
            "establishment": code,
            "debtor": debtor["account_number"],
            "number": number,
            "series": prefix,
            "issue_date": issue.isoformat(),
            "due_date": due.isoformat(),
            "status": "open",
            "lines": lines,
        }
        draw = rng.random()
        if not forced_unpaid and not overdue and issue > anchor - dt.timedelta(days=20):
            if draw < 0.25:
                # Recent invoices still being checked by the accountants.
                row["status"] = "review"
        if not forced_unpaid and overdue and draw < 0.05:
            row["disputed"] = True
            row["dispute_reason"] = (
                "Le client conteste le nombre de nuitées"
                if code == PARIS
                else "El cliente disputa el número de noches"
            )
        invoices.append(row)

        if forced_unpaid or row["status"] == "review":
            continue
        gross = _gross(lines)
        settle = rng.random()
        latest = min(anchor, due + dt.timedelta(days=30))
        span = max((latest - issue).days, 0)
        if settle < (0.3 if overdue else 0.1):
            amounts = [gross]
        elif settle < (0.55 if overdue else 0.2):
            first = (gross * Decimal(rng.randint(20, 70)) / 100).quantize(Decimal("0.01"))
            amounts = [first]
            if rng.random() < 0.3:
                amounts.append((gross - first) / 2)
        else:
            amounts = []
        for n, amount in enumerate(amounts, start=1):
            payments.append(
                {
                    "establishment": code,
                    "invoice": number,
                    "reference": f"{'VIR' if code == PARIS else 'TRF'}-{number}-{n}",
                    "date": (issue + dt.timedelta(days=rng.randint(0, span))).isoformat(),
                    "amount": _money(amount.quantize(Decimal("0.01"))),
                }
            )


def demo_data(*, anchor: dt.date, include_invoices: bool = True) -> dict:
    """The demo as an import document; invoice dates are relative to `anchor`."""
    rng = random.Random(SEED)
    debtors: list[dict] = []
    invoices: list[dict] = []
    payments: list[dict] = []
    for code, prefix, entries in ((PARIS, "411", PARIS_DEBTORS), (CANCUN, "C", CANCUN_DEBTORS)):
        numbers = [0]
        for index, entry in enumerate(entries):
            debtor = _debtor_row(code, prefix, index, entry, anchor)
            debtors.append(debtor)
            _invoices_for(
                rng,
                code=code,
                debtor=debtor,
                index=index,
                kind=entry[1],
                anchor=anchor,
                numbers=numbers,
                invoices=invoices,
                payments=payments,
            )
    data = {"establishments": [dict(e) for e in ESTABLISHMENTS], "debtors": debtors}
    if include_invoices:
        data["invoices"] = invoices
        data["payments"] = payments
    return data
