from django.contrib.auth.management import create_permissions
from django.db import migrations


def install(apps, schema_editor):
    # Permissions are normally created after all migrations; the groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    from establishments.groups import groups_install

    groups_install(apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("establishments", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("debtors", "0003_historicaldebtoraccount"),
        ("invoicing", "0003_historicalinvoice"),
        ("dispatch", "0005_lifecycle_event_id"),
    ]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
