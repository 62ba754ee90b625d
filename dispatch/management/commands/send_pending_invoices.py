"""Run the nightly job now, synchronously, with the same services as the Celery tasks."""

import datetime as dt
import json
from collections import defaultdict

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from dispatch.models import (
    CONFIGURATION_REASONS,
    Dispatch,
    DispatchItem,
    DispatchStatus,
    RunTrigger,
    SkipReason,
)
from dispatch.selectors import (
    DebtorDecision,
    establishment_business_date,
    establishment_plan_letters,
)
from dispatch.services import dispatch_send, run_execute
from establishments.models import Establishment


def _decision_entry(
    establishment: Establishment, business_date: dt.date, d: DebtorDecision, *, channel: str
):
    entry = {
        "establishment": establishment.code,
        "business_date": business_date.isoformat(),
        "debtor": d.account_number,
        "name": d.name,
        "channel": channel,
        "recipient": d.recipient,
        "invoices": d.invoice_numbers,
        "amount_due": str(d.total_due),
        "currency": establishment.currency,
    }
    if d.reason:
        entry["reason"] = str(d.reason)
    return entry


def _dispatch_entries(dispatches: list[Dispatch]) -> list[dict]:
    numbers: dict[int, list[str]] = defaultdict(list)
    for dispatch_id, number in (
        DispatchItem.objects.filter(dispatch__in=dispatches)
        .order_by("invoice__due_date", "invoice__number")
        .values_list("dispatch_id", "invoice__number")
    ):
        numbers[dispatch_id].append(number)
    entries = []
    for d in dispatches:
        entry = {
            "establishment": d.establishment.code,
            "business_date": d.business_date.isoformat(),
            "debtor": d.debtor.account_number,
            "name": d.debtor.name,
            "channel": d.integration.provider if d.integration_id else d.channel,
            "recipient": d.recipient,
            "invoices": numbers[d.pk],
            "amount_due": str(d.total_due),
            "currency": d.currency,
            "dispatch_id": d.pk,
            "status": d.status,
        }
        if d.integration_id:
            entry["integration"] = d.integration.name
            entry["tracking_id"] = d.tracking_id
            entry["platform_ref"] = d.platform_ref
        if d.status == DispatchStatus.SENT:
            if d.message_id:
                entry["message_id"] = d.message_id
        else:
            entry["error"] = d.last_error
            entry["attempts"] = d.attempts
            entry["next_attempt_at"] = d.next_attempt_at.isoformat() if d.next_attempt_at else None
        entries.append(entry)
    return entries


class Command(BaseCommand):
    help = (
        "Send pending invoices now: plan each establishment's business date, write the "
        "outbox and send every letter before returning."
    )

    def add_arguments(self, parser):
        parser.add_argument("--establishment", metavar="CODE", help="Only this establishment.")
        parser.add_argument(
            "--date",
            metavar="YYYY-MM-DD",
            help="Business date of every establishment processed, whatever the clock and "
            "the send hour.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Plan and print; write and send nothing."
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options):
        business_date = None
        if options["date"]:
            try:
                business_date = dt.date.fromisoformat(options["date"])
            except ValueError as exc:
                raise CommandError(
                    f"--date: {options['date']!r} is not a YYYY-MM-DD date."
                ) from exc
        establishments = Establishment.objects.order_by("code")
        if options["establishment"]:
            establishments = establishments.filter(code=options["establishment"])
            if not establishments.exists():
                raise CommandError(f"No establishment with code {options['establishment']!r}.")

        now = timezone.now()
        report: dict = {
            "dry_run": options["dry_run"],
            "establishments": [],
            "sent": [],
            "skipped": [],
            "failed": [],
        }
        for establishment in establishments:
            report["establishments"].append(
                self._process(establishment, business_date, now, options["dry_run"], report)
            )

        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, ensure_ascii=False))
        else:
            self._print_summary(report)

    def _process(self, establishment, forced_date, now, dry_run, report) -> dict:
        summary = {"code": establishment.code, "name": establishment.name}
        if not establishment.auto_send_pending_invoices:
            return {**summary, "processed": False, "note": _("automatic sending is off")}
        business_date = forced_date or establishment_business_date(
            establishment=establishment, now=now
        )
        if business_date is None:
            return {
                **summary,
                "processed": False,
                "note": _("not due before %(hour)02d:00 (%(zone)s)")
                % {"hour": establishment.send_hour, "zone": establishment.time_zone},
            }
        summary.update(processed=True, business_date=business_date.isoformat())

        if dry_run:
            plan = establishment_plan_letters(
                establishment=establishment, business_date=business_date
            )
            for d in plan.letters:
                report["sent"].append(
                    _decision_entry(establishment, business_date, d, channel="email")
                )
            for d in plan.submitters:
                for invoice in d.submissions:
                    entry = _decision_entry(establishment, business_date, d, channel=d.provider)
                    entry.update(
                        invoices=[invoice.number],
                        amount_due=str(invoice.amount_due),
                        recipient=d.einvoicing_id,
                    )
                    report["sent"].append(entry)
            existing = Dispatch.objects.select_related(
                "establishment", "debtor", "integration"
            ).filter(pk__in=[d.existing_dispatch_id for d in plan.existing])
            for entry in _dispatch_entries(list(existing)):
                key = "failed" if entry["status"] == DispatchStatus.FAILED else "sent"
                report[key].append(entry)
        else:
            outcome = run_execute(
                establishment=establishment,
                business_date=business_date,
                trigger=RunTrigger.COMMAND,
                enqueue=False,
                now=now,
            )
            plan = outcome.plan
            summary["run_id"] = outcome.run.pk
            for dispatch_id in outcome.due_ids:
                dispatch_send(dispatch_id=dispatch_id)
            failed_today = [
                d.existing_dispatch_id
                for d in plan.existing
                if d.existing_status == DispatchStatus.FAILED
            ]
            touched = (
                Dispatch.objects.select_related("establishment", "debtor", "integration")
                .filter(pk__in=[*outcome.due_ids, *failed_today])
                .order_by("debtor__account_number", "business_date")
            )
            for entry in _dispatch_entries(list(touched)):
                report["sent" if entry["status"] == DispatchStatus.SENT else "failed"].append(entry)
        for d in plan.skips:
            report["skipped"].append(
                _decision_entry(establishment, business_date, d, channel=d.channel_label)
            )
        return summary

    def _print_summary(self, report: dict) -> None:
        w = self.stdout.write

        def line(e: dict) -> str:
            count = ngettext("%(n)d invoice", "%(n)d invoices", len(e["invoices"])) % {
                "n": len(e["invoices"])
            }
            return (
                f"{e['debtor']:<10} {e['name'][:38]:<38} {count:>12} "
                f"{e['amount_due']:>12} {e['currency']}"
            )

        for est in report["establishments"]:
            w(self.style.MIGRATE_HEADING(f"{est['name']} ({est['code']})"))
            if not est["processed"]:
                w("  " + _("not processed: %(note)s") % {"note": est["note"]})
                continue
            code = est["code"]
            sent = [e for e in report["sent"] if e["establishment"] == code]
            failed = [e for e in report["failed"] if e["establishment"] == code]
            skipped = [e for e in report["skipped"] if e["establishment"] == code]
            w("  " + _("business date %(date)s") % {"date": est["business_date"]})
            if report["dry_run"]:
                heading = _("would send: %(count)d letter(s)")
            else:
                heading = _("sent: %(count)d letter(s)")
            letters = [e for e in sent if e["channel"] == "email"]
            einvoices = [e for e in sent if e["channel"] != "email"]
            w(self.style.SUCCESS("  " + heading % {"count": len(letters)}))
            for e in letters:
                w(f"    {line(e)}  {e['recipient']}")
            if einvoices:
                if report["dry_run"]:
                    heading = _("would submit: %(count)d e-invoice(s)")
                else:
                    heading = _("e-invoices submitted: %(count)d")
                w(self.style.SUCCESS("  " + heading % {"count": len(einvoices)}))
                for e in einvoices:
                    w(f"    {line(e)}  {e['channel']} → {e['recipient']}")
            if failed:
                w(self.style.ERROR("  " + _("failed: %(count)d") % {"count": len(failed)}))
                for e in failed:
                    retry = (
                        " " + _("(next attempt %(at)s)") % {"at": e["next_attempt_at"]}
                        if e["next_attempt_at"]
                        else ""
                    )
                    w(f"    {line(e)}  {e['status']}{retry}: {e['error']}")
            by_reason: dict[str, list[dict]] = defaultdict(list)
            for e in skipped:
                by_reason[e["reason"]].append(e)
            w("  " + _("skipped: %(count)d") % {"count": len(skipped)})
            for reason in sorted(by_reason):
                entries = by_reason[reason]
                style = self.style.WARNING if reason in CONFIGURATION_REASONS else str
                label = SkipReason(reason).label
                w(style(f"    {reason} ({label}): {len(entries)}"))
                if reason in CONFIGURATION_REASONS or reason == SkipReason.BELOW_MINIMUM:
                    for e in entries:
                        w(f"      {line(e)}")
        if report["dry_run"]:
            total = _("Total: %(sent)d to send, %(failed)d failed, %(skipped)d skipped.")
        else:
            total = _("Total: %(sent)d sent, %(failed)d failed, %(skipped)d skipped.")
        w(
            total
            % {
                "sent": len(report["sent"]),
                "failed": len(report["failed"]),
                "skipped": len(report["skipped"]),
            }
        )
