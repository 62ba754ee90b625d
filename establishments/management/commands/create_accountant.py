from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from establishments.groups import GROUPS
from establishments.models import Establishment


class Command(BaseCommand):
    help = (
        "Create (or update) a user of the accountants' pages: its group and the "
        "establishments it may see. Set its password afterwards with `changepassword`."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--establishment",
            action="append",
            required=True,
            metavar="CODE",
            help="An establishment the user works for (repeat for several).",
        )
        parser.add_argument("--group", default="Comptables", choices=sorted(GROUPS))
        parser.add_argument("--email", default="")

    @transaction.atomic
    def handle(self, *args, username, establishment, group, email, **options):
        establishments = list(Establishment.objects.filter(code__in=establishment))
        missing = sorted(set(establishment) - {e.code for e in establishments})
        if missing:
            raise CommandError(f"Unknown establishment code(s): {', '.join(missing)}.")
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username)
        if created:
            # No password is ever passed on a command line: it is set interactively.
            user.set_unusable_password()
        if email:
            user.email = email
        user.save()
        user.groups.add(Group.objects.get(name=group))
        for item in establishments:
            item.members.add(user)
        verb = "Created" if created else "Updated"
        codes = ", ".join(sorted(e.code for e in establishments))
        self.stdout.write(f"{verb} {username} ({group}) for {codes}.")
        if created:
            self.stdout.write(f"Set the password with: python manage.py changepassword {username}")
