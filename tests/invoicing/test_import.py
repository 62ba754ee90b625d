import copy
import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import translation

from debtors.models import DebtorAccount
from establishments.models import Establishment
from invoicing.importing import ImportRowError, billing_data_import
from invoicing.models import Invoice, InvoiceLine, InvoiceStatus, Payment

pytestmark = pytest.mark.django_db

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "billing-data.json"
MODELS = (Establishment, DebtorAccount, Invoice, InvoiceLine, Payment)


@pytest.fixture(autouse=True)
def _english():
    # Form messages follow the active language; the command runs untranslated too.
    with translation.override("en"):
        yield


def example() -> dict:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"), parse_float=Decimal)


def snapshot() -> dict:
    """Every row of every imported table, with its timestamps."""
    return {
        model.__name__: sorted(
            tuple(sorted((k, str(v)) for k, v in row.items())) for row in model.objects.values()
        )
        for model in MODELS
    }


def test_example_file_imports_completely():
    report = billing_data_import(data=example())

    counts = {kind: vars(c) for kind, c in report.by_kind().items()}
    assert counts == {
        "establishments": {"created": 2, "updated": 0, "unchanged": 0},
        "debtors": {"created": 6, "updated": 0, "unchanged": 0},
        "invoices": {"created": 9, "updated": 0, "unchanged": 0},
        "payments": {"created": 5, "updated": 0, "unchanged": 0},
    }
    paris = Establishment.objects.get(code="paris-opera")
    assert paris.auto_send_pending_invoices is True
    assert paris.minimum_amount == Decimal("10.00")
    barcelona = Establishment.objects.get(code="barcelona-rambla")
    # Absent from the row: the model's default.
    assert barcelona.reminder_interval_days == 7

    nord = DebtorAccount.objects.get(establishment=paris, account_number="411NORD")
    assert nord.contact_email == "facturation@@nord-tours.example"
    nordic = DebtorAccount.objects.get(account_number="430NORDIC")
    assert (nordic.paused_until, nordic.pause_reason) == (
        dt.date(2027, 1, 31),
        "Payment plan agreed by phone",
    )

    acme = Invoice.objects.with_amounts().get(establishment=paris, number="F2026-0101")
    # 6 × 189 + 12 × 24.50 at 10%, 450 at 20%, 12 × 5.20 at 0%.
    assert (acme.net_total, acme.vat_total, acme.gross_total) == (
        Decimal("1940.40"),
        Decimal("232.80"),
        Decimal("2173.20"),
    )
    assert list(acme.lines.values_list("position", "vat_rate")) == [
        (1, Decimal("10.00")),
        (2, Decimal("10.00")),
        (3, Decimal("20.00")),
        (4, Decimal("0.00")),
    ]
    assert (acme.amount_paid, acme.amount_due) == (Decimal("1000.00"), Decimal("1173.20"))
    assert acme.status == InvoiceStatus.OPEN

    assert Invoice.objects.get(number="F2026-0121").status == InvoiceStatus.PAID
    assert Invoice.objects.get(number="F2026-0118").disputed is True
    # Barcelona is in review mode: an invoice without a status waits for approval.
    assert Invoice.objects.get(number="B-2026-0051").status == InvoiceStatus.REVIEW
    assert Invoice.objects.get(number="B-2026-0033").status == InvoiceStatus.OPEN
    assert set(Invoice.objects.pending().values_list("number", flat=True)) == {
        "F2026-0101",
        "F2026-0142",
        "F2026-0117",
        "F2026-0120",
        "B-2026-0033",
        "B-2026-0040",
    }


def test_importing_twice_changes_nothing():
    billing_data_import(data=example())
    before = snapshot()

    report = billing_data_import(data=example())

    assert not report.changed
    assert {kind: vars(c) for kind, c in report.by_kind().items()} == {
        "establishments": {"created": 0, "updated": 0, "unchanged": 2},
        "debtors": {"created": 0, "updated": 0, "unchanged": 6},
        "invoices": {"created": 0, "updated": 0, "unchanged": 9},
        "payments": {"created": 0, "updated": 0, "unchanged": 5},
    }
    # Same rows, same ids, same updated_at: nothing was written.
    assert snapshot() == before


def test_a_changed_row_updates_only_that_row():
    billing_data_import(data=example())
    before = {i.number: i.updated_at for i in Invoice.objects.all()}
    data = example()
    data["invoices"][1]["lines"][1]["unit_price"] = "40.00"
    data["debtors"][0]["contact_email"] = "ap@acme.example"

    report = billing_data_import(data=data)

    assert (report.invoices.updated, report.invoices.unchanged) == (1, 8)
    assert (report.debtors.updated, report.debtors.unchanged) == (1, 5)
    after = {i.number: i.updated_at for i in Invoice.objects.all()}
    assert [n for n in after if after[n] != before[n]] == ["F2026-0142"]
    assert Invoice.objects.get(number="F2026-0142").gross_total == Decimal("507.80")


def test_a_bad_row_in_the_middle_aborts_everything():
    data = example()
    data["invoices"][3]["due_date"] = "2026-13-45"

    with pytest.raises(ImportRowError) as error:
        billing_data_import(data=data)

    assert str(error.value) == 'invoices[3] (number "F2026-0118"): due_date: Enter a valid date.'
    for model in MODELS:
        assert not model.objects.exists(), model


def test_a_bad_row_leaves_earlier_data_untouched():
    billing_data_import(data=example())
    before = snapshot()
    data = example()
    data["establishments"][0]["name"] = "Renamed"
    data["payments"][4]["amount"] = "abc"

    with pytest.raises(ImportRowError, match=r'^payments\[4\] \(reference "TRF-7781"\): amount:'):
        billing_data_import(data=data)

    assert snapshot() == before


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["debtors"][4].update(establishment="madrid"),
            'debtors[4] (account_number "430SOL"): establishment: Unknown establishment "madrid".',
        ),
        (
            lambda d: d["invoices"][2].update(debtor="411ZZZ"),
            'invoices[2] (number "F2026-0117"): debtor: '
            'Unknown debtor account "411ZZZ" in establishment "paris-opera".',
        ),
        (
            # A debtor of another establishment is not found: references are per establishment.
            lambda d: d["invoices"][6].update(debtor="411ACME"),
            'invoices[6] (number "B-2026-0033"): debtor: '
            'Unknown debtor account "411ACME" in establishment "barcelona-rambla".',
        ),
        (
            lambda d: d["payments"][1].update(invoice="F2026-9999"),
            'payments[1] (reference "VIR-20261115-AZUR"): invoice: '
            'Unknown invoice "F2026-9999" in establishment "paris-opera".',
        ),
    ],
)
def test_unknown_references(mutate, message):
    data = example()
    mutate(data)
    with pytest.raises(ImportRowError) as error:
        billing_data_import(data=data)
    assert str(error.value) == message
    assert not Establishment.objects.exists()


@pytest.mark.parametrize(
    ("mutate", "location", "field"),
    [
        (lambda d: d["debtors"][1].update(send_mod="email"), "debtors[1]", "send_mod"),
        (lambda d: d["establishments"][1].update(autosend=True), "establishments[1]", "autosend"),
        (
            lambda d: d["invoices"][0]["lines"][2].update(vat=20),
            "invoices[0]",
            "lines[2].vat",
        ),
        (lambda d: d["payments"][0].update(amount_eur="1"), "payments[0]", "amount_eur"),
    ],
)
def test_unknown_keys_are_refused(mutate, location, field):
    data = example()
    mutate(data)
    with pytest.raises(ImportRowError) as error:
        billing_data_import(data=data)
    assert error.value.location.startswith(location + " (")
    assert error.value.field == field
    assert f": {field}: Unknown field. Expected one of: " in str(error.value)
    assert not Establishment.objects.exists()


def test_unknown_section_is_refused():
    data = example()
    data["invoice"] = data.pop("invoices")
    with pytest.raises(ImportRowError, match=r"^invoice: Unknown section"):
        billing_data_import(data=data)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["invoices"][0]["lines"][1].update(quantity="douze"),
            'invoices[0] (number "F2026-0101"): lines[1].quantity: Enter a number.',
        ),
        (
            lambda d: d["invoices"][0]["lines"][1].update(quantity=0),
            'invoices[0] (number "F2026-0101"): lines[1].quantity: '
            "Ensure this value is greater than zero.",
        ),
        (
            lambda d: d["invoices"][0].update(currency="USD"),
            'invoices[0] (number "F2026-0101"): currency: '
            "The currency must be the establishment's currency, EUR.",
        ),
        (
            lambda d: d["invoices"][0].pop("lines"),
            'invoices[0] (number "F2026-0101"): lines: This field is required.',
        ),
        (
            lambda d: d["invoices"][0].update(due_date="2026-10-01"),
            'invoices[0] (number "F2026-0101"): due_date: '
            "The due date cannot precede the issue date.",
        ),
        (
            lambda d: d["establishments"][0].update(auto_send_pending_invoices="yes"),
            'establishments[0] (code "paris-opera"): auto_send_pending_invoices: '
            "Enter true or false.",
        ),
        (
            lambda d: d["establishments"][1].update(time_zone="Europe/Barcelona"),
            'establishments[1] (code "barcelona-rambla"): time_zone: '
            "Select a valid choice. Europe/Barcelona is not one of the available choices.",
        ),
        (
            lambda d: d["debtors"][5].update(pause_reason=""),
            'debtors[5] (account_number "430NORDIC"): pause_reason: A pause needs a reason.',
        ),
        (
            lambda d: d["payments"][4].update(amount="5000.00"),
            'payments[4] (reference "TRF-7781"): amount: '
            "Payments would reach 5000.00, above the invoice total of 1370.64.",
        ),
        (
            lambda d: d["payments"].pop(3),
            'invoices[5] (number "F2026-0121"): status: "paid" needs payments covering the '
            "total, but 960.00 is still due. Import its payments, or give the status open.",
        ),
        (
            lambda d: d["invoices"].append(copy.deepcopy(d["invoices"][1])),
            'invoices[9] (number "F2026-0142"): number: Same key as invoices[1].',
        ),
    ],
)
def test_row_errors_name_the_row_and_the_field(mutate, message):
    data = example()
    mutate(data)
    with pytest.raises(ImportRowError) as error:
        billing_data_import(data=data)
    assert str(error.value) == message
    assert not Establishment.objects.exists()


def test_numbers_may_be_json_numbers_or_strings():
    data = example()
    data["invoices"][0]["lines"][0].update(unit_price=189, vat_rate=Decimal("10.0"))
    data["payments"][0]["amount"] = "1000"
    billing_data_import(data=data)
    assert Invoice.objects.get(number="F2026-0101").gross_total == Decimal("2173.20")
    assert Payment.objects.get(reference="VIR-20261110-ACME").amount == Decimal("1000.00")


def test_command_imports_and_reports(capsys):
    call_command("import_billing_data", str(EXAMPLE))
    out = capsys.readouterr().out
    assert f"Imported {EXAMPLE}:" in out
    assert "establishments: 2 created, 0 updated, 0 unchanged" in out
    assert "debtors:        6 created, 0 updated, 0 unchanged" in out
    assert "invoices:       9 created, 0 updated, 0 unchanged" in out
    assert "payments:       5 created, 0 updated, 0 unchanged" in out

    call_command("import_billing_data", str(EXAMPLE))
    out = capsys.readouterr().out
    assert "invoices:       0 created, 0 updated, 9 unchanged" in out
    assert "Nothing changed" in out


def test_command_fails_with_the_row_and_field(tmp_path):
    data = example()
    data["debtors"][2]["send_mode"] = "fax"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data, default=str), encoding="utf-8")

    with pytest.raises(CommandError) as error:
        call_command("import_billing_data", str(path))

    assert str(error.value) == (
        f'{path}: debtors[2] (account_number "411NORD"): send_mode: '
        "Select a valid choice. fax is not one of the available choices.\n"
        "Nothing was imported."
    )
    assert not Establishment.objects.exists()


def test_command_reports_malformed_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"establishments": [\n  {"code": "x",}\n]}', encoding="utf-8")
    with pytest.raises(CommandError) as error:
        call_command("import_billing_data", str(path))
    assert str(error.value) == (
        f"{path}: not valid JSON: Expecting property name enclosed in double quotes "
        "at line 2, column 16."
    )


def test_command_reports_a_missing_file(tmp_path):
    with pytest.raises(CommandError, match="cannot read the file: No such file or directory"):
        call_command("import_billing_data", str(tmp_path / "nope.json"))


def test_command_exit_status(tmp_path):
    """Run as a user would: a non-zero exit status and the message on stderr."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        # The test database, which pytest-django created and migrated.
        "TEST_DATABASE_URL": (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}"
            f"/{db['NAME']}"
        ),
    }
    path = tmp_path / "bad.json"
    path.write_text('{"payments": [{"reference": "X"}]}', encoding="utf-8")
    manage = Path(__file__).resolve().parents[2] / "manage.py"
    result = subprocess.run(
        [sys.executable, str(manage), "import_billing_data", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 1
    # The message is in the site's language (LANGUAGE_CODE, French); locations stay the same.
    assert str(path) in result.stderr
    assert 'payments[0] (reference "X"): amount: ' in result.stderr
    assert result.stdout == ""
