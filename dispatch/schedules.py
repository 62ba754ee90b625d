"""Periodic tasks, defined in code and installed into django-celery-beat's database.

The data migration dispatch/migrations/0002_periodic_tasks.py installs them, and
`python manage.py setup_periodic_tasks` installs them again (after a staff member
deleted one, say). Staff can see and change the schedule in the admin.
"""

# name -> (task, crontab fields). Hourly at minute 5: each establishment is processed at
# or after its own local send hour, once per business date (time zones differ by hours,
# and some by half hours, so the job must look every hour).
PERIODIC_TASKS = {
    "Envoi automatique des factures en attente (toutes les heures)": (
        "dispatch.run_due_establishments",
        {"minute": "5", "hour": "*", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"},
    ),
    # Lifecycle statuses of submitted e-invoices (Bavel inbox, AFNOR flows, sandbox).
    "Statuts des factures électroniques (toutes les 15 minutes)": (
        "dispatch.poll_einvoice_statuses",
        {
            "minute": "*/15",
            "hour": "*",
            "day_of_week": "*",
            "day_of_month": "*",
            "month_of_year": "*",
        },
    ),
}


def periodic_tasks_install(*, crontab_model, periodic_task_model) -> int:
    """Create or update each periodic task; returns how many were created."""
    created = 0
    for name, (task, fields) in PERIODIC_TASKS.items():
        schedule, _ = crontab_model.objects.get_or_create(timezone="UTC", **fields)
        _, was_created = periodic_task_model.objects.update_or_create(
            name=name, defaults={"task": task, "crontab": schedule, "enabled": True}
        )
        created += int(was_created)
    return created
