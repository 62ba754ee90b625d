import json
from decimal import Decimal
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from invoicing.importing import ImportReport, ImportRowError, billing_data_import


def report_lines(report: ImportReport) -> list[str]:
    width = max(len(kind) for kind in report.by_kind())
    return [
        _("  %(kind)s %(created)d created, %(updated)d updated, %(unchanged)d unchanged")
        % {
            "kind": f"{kind}:".ljust(width + 1),
            "created": counts.created,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
        }
        for kind, counts in report.by_kind().items()
    ]


class Command(BaseCommand):
    help = _(
        "Import establishments, debtors, invoices and payments from a JSON file. Rows are "
        "upserted by their keys; any bad row aborts the whole import."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help=_("JSON file, see README.md"))

    def handle(self, *args, file: Path, **options):
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(
                _("%(file)s: cannot read the file: %(error)s")
                % {"file": file, "error": exc.strerror or exc}
            ) from exc
        except UnicodeDecodeError as exc:
            raise CommandError(_("%(file)s: not UTF-8 text.") % {"file": file}) from exc
        try:
            # Decimal, never float: amounts must keep exactly the digits of the file.
            data = json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise CommandError(
                _("%(file)s: not valid JSON: %(error)s at line %(line)d, column %(column)d.")
                % {"file": file, "error": exc.msg, "line": exc.lineno, "column": exc.colno}
            ) from exc
        try:
            report = billing_data_import(data=data)
        except ImportRowError as exc:
            raise CommandError(
                _("%(file)s: %(error)s\nNothing was imported.") % {"file": file, "error": exc}
            ) from exc

        self.stdout.write(_("Imported %(file)s:") % {"file": file})
        for line in report_lines(report):
            self.stdout.write(line)
        if not report.changed:
            self.stdout.write(_("Nothing changed: the database already matched the file."))
