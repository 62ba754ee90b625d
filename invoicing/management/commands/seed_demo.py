import datetime as dt

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from dispatch.models import Integration, Provider
from establishments.models import Establishment
from invoicing.demo import CANCUN, EINVOICING_ACTIVE, EINVOICING_INTEGRATION, PARIS, demo_data
from invoicing.importing import billing_data_import
from invoicing.management.commands.import_billing_data import report_lines

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-billing-2026"
# (user name, group, establishment codes): an accountant of the Paris hotel, and the
# group's management who reads both hotels.
DEMO_STAFF = [
    ("comptable", "Comptables", [PARIS]),
    ("direction", "Direction", [PARIS, CANCUN]),
]


class Command(BaseCommand):
    help = _(
        "Load the demo hotels, debtors, invoices and payments (deterministic; running it "
        "again duplicates nothing) and create the `demo` superuser."
    )

    def handle(self, *args, **options):
        with transaction.atomic():
            existing = Establishment.objects.filter(code=PARIS).first()
            # Invoice dates are relative to the day of the first seeding, which the demo
            # establishment's creation records; reseeding them later would move every due
            # date, so they are then left as they are.
            seeded_at = timezone.now() if existing is None else existing.created_at
            anchor = seeded_at.astimezone(dt.UTC).date()
            data = demo_data(anchor=anchor, include_invoices=existing is None)
            # Debtors refer to e-invoicing integrations, which belong to establishments.
            hotels = billing_data_import(data={"establishments": data.pop("establishments")})
            self._ensure_integrations()
            report = billing_data_import(data=data)
            report.establishments = hotels.establishments
            user_created = self._ensure_user()
            self._ensure_staff_users()

        self.stdout.write(_("Demo data (dates relative to %(anchor)s):") % {"anchor": anchor})
        for line in report_lines(report):
            self.stdout.write(line)
        if existing is not None:
            self.stdout.write(
                _(
                    "The demo was seeded before: its invoices and payments were left as they "
                    "are. Establishments and debtors were upserted."
                )
            )
        if user_created:
            self.stdout.write(_("Created the superuser %(user)s.") % {"user": DEMO_USERNAME})
        self.stdout.write(
            _("Admin login: user %(user)s, password %(password)s")
            % {"user": DEMO_USERNAME, "password": DEMO_PASSWORD}
        )
        for username, group, codes in DEMO_STAFF:
            self.stdout.write(
                _(
                    "Accountants' pages (/billing/): user %(user)s (%(group)s: %(codes)s), "
                    "password %(password)s"
                )
                % {
                    "user": username,
                    "group": group,
                    "codes": ", ".join(codes),
                    "password": DEMO_PASSWORD,
                }
            )

    def _ensure_integrations(self) -> None:
        """The demo's e-invoicing platforms: the sandbox connector, writing to var/einvoices."""
        for code, name in EINVOICING_INTEGRATION.items():
            Integration.objects.update_or_create(
                establishment=Establishment.objects.get(code=code),
                name=name,
                defaults={"provider": Provider.SANDBOX, "active": EINVOICING_ACTIVE[code]},
            )

    def _ensure_staff_users(self) -> None:
        """Users of the accountants' pages, each a member of its establishments."""
        User = get_user_model()
        for username, group_name, codes in DEMO_STAFF:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
            user.groups.add(Group.objects.get(name=group_name))
            for establishment in Establishment.objects.filter(code__in=codes):
                establishment.members.add(user)

    def _ensure_user(self) -> bool:
        User = get_user_model()
        if User.objects.filter(username=DEMO_USERNAME).exists():
            return False
        User.objects.create_superuser(
            username=DEMO_USERNAME, email="demo@hotel-billing.example", password=DEMO_PASSWORD
        )
        return True
