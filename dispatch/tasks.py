"""Thin Celery tasks: load by id, call a service, decide about retrying.

Time limits come from CELERY_TASK_SOFT_TIME_LIMIT / CELERY_TASK_TIME_LIMIT; the
interrupted-send sweep relies on the hard limit to know that a claim is stale.
"""

import datetime as dt

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from establishments.models import Establishment

from .connectors.base import TransientError
from .models import DispatchStatus, RunTrigger


@shared_task(name="dispatch.run_due_establishments", ignore_result=True)
def run_due_establishments_task() -> dict:
    """Hourly (django-celery-beat): process each establishment whose send hour has passed."""
    from .services import due_establishments_process

    return due_establishments_process()


# Database hiccups (a lock, a failover) are worth a few tries; planning is idempotent.
DATABASE_RETRY = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task(name="dispatch.plan_establishment", ignore_result=True, **DATABASE_RETRY)
def plan_establishment_task(establishment_id: int, business_date: str) -> None:
    from .services import run_execute

    establishment = Establishment.objects.get(pk=establishment_id)
    run_execute(
        establishment=establishment,
        business_date=dt.date.fromisoformat(business_date),
        trigger=RunTrigger.SCHEDULE,
        enqueue=True,
    )


@shared_task(
    bind=True,
    name="dispatch.send_dispatch",
    ignore_result=True,
    # Send failures are planned by the service (next_attempt_at) and retried here; the
    # service marks the dispatch failed once MAX_SEND_ATTEMPTS is reached. Database errors
    # retry the task: before the claim nothing was sent, after it the claim refuses a
    # second send.
    # A hard cap on Celery's own retries of one message; a dispatch still waiting after
    # that is enqueued again by the hourly sweep.
    max_retries=20,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
)
def send_dispatch_task(self, dispatch_id: int) -> str:
    from .services import dispatch_send

    result = dispatch_send(dispatch_id=dispatch_id)
    dispatch = result.dispatch
    if (
        result.attempted
        and dispatch.status == DispatchStatus.RETRY
        and dispatch.next_attempt_at
        and not self.request.is_eager
    ):
        countdown = max(1, int((dispatch.next_attempt_at - timezone.now()).total_seconds()))
        raise self.retry(countdown=countdown)
    return dispatch.status


@shared_task(name="dispatch.poll_einvoice_statuses", ignore_result=True)
def poll_einvoice_statuses_task() -> dict:
    """Every 15 minutes: fan out one status poll per active integration."""
    from .models import Integration

    ids = list(Integration.objects.filter(active=True).values_list("id", flat=True))
    for integration_id in ids:
        poll_integration_task.delay(integration_id)
    return {"integrations": len(ids)}


@shared_task(
    name="dispatch.poll_integration",
    ignore_result=True,
    autoretry_for=(TransientError, OperationalError, InterfaceError),
    retry_backoff=30,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=3,
)
def poll_integration_task(integration_id: int) -> int:
    from .einvoicing import einvoice_poll
    from .models import Integration

    integration = Integration.objects.get(pk=integration_id)
    if not integration.active:
        return 0
    return einvoice_poll(integration=integration)


@shared_task(
    name="dispatch.report_invoice_cashed",
    ignore_result=True,
    autoretry_for=(TransientError, OperationalError, InterfaceError),
    retry_backoff=60,
    retry_backoff_max=3600,
    retry_jitter=True,
    max_retries=8,
)
def report_invoice_cashed_task(invoice_id: int) -> int:
    """An invoice sent as an e-invoice was paid in full: report 212 to its platform."""
    from .einvoicing import einvoice_report_cashed

    return einvoice_report_cashed(invoice_id=invoice_id)
