from django.db import migrations


def install(apps, schema_editor):
    from dispatch.schedules import periodic_tasks_install

    periodic_tasks_install(
        crontab_model=apps.get_model("django_celery_beat", "CrontabSchedule"),
        periodic_task_model=apps.get_model("django_celery_beat", "PeriodicTask"),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("dispatch", "0003_einvoicing"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
