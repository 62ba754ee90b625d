from django.core.management.base import BaseCommand
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from dispatch.schedules import PERIODIC_TASKS, periodic_tasks_install


class Command(BaseCommand):
    help = "Install the module's periodic tasks into django-celery-beat's database scheduler."

    def handle(self, *args, **options):
        created = periodic_tasks_install(
            crontab_model=CrontabSchedule, periodic_task_model=PeriodicTask
        )
        self.stdout.write(f"{len(PERIODIC_TASKS)} periodic task(s) installed ({created} new).")
