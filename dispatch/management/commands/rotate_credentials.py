from django.core.management.base import BaseCommand
from django.db import transaction

from dispatch.integrations import integrations_rotate_keys


class Command(BaseCommand):
    help = (
        "Re-encrypt every integration secret with the first key of FIELD_ENCRYPTION_KEYS "
        "(run after putting a new key first; then the old keys can be removed)."
    )

    def handle(self, *args, **options):
        with transaction.atomic():
            count = integrations_rotate_keys()
        self.stdout.write(f"{count} integration(s) re-encrypted.")
