"""A real Celery worker consuming from the real Redis broker sends a dispatch end to end."""

import datetime as dt
import time

import pytest
from celery.contrib.testing.worker import start_worker

from config.celery import app
from dispatch.models import Dispatch, DispatchStatus, RunTrigger
from dispatch.services import run_execute
from tests.factories import InvoiceFactory

# The worker thread must see committed rows, so these tests commit for real.
pytestmark = pytest.mark.django_db(transaction=True)

WAIT_SECONDS = 60


@pytest.fixture
def redis_worker(settings):
    previous = {
        "broker_url": app.conf.broker_url,
        "task_always_eager": app.conf.task_always_eager,
    }
    app.conf.update(broker_url=settings.TEST_REDIS_URL, task_always_eager=False)
    app.control.purge()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield app
    app.conf.update(**previous)


def test_worker_on_redis_sends_the_planned_letter(redis_worker, smtp_server):
    invoice = InvoiceFactory(debtor__establishment__code="worker-hotel")
    outcome = run_execute(
        establishment=invoice.establishment,
        business_date=dt.date(2026, 12, 4),
        trigger=RunTrigger.SCHEDULE,
        enqueue=True,
    )
    (dispatch_id,) = outcome.created_ids

    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        status = Dispatch.objects.get(pk=dispatch_id).status
        if status == DispatchStatus.SENT:
            break
        time.sleep(0.2)
    assert Dispatch.objects.get(pk=dispatch_id).status == DispatchStatus.SENT
    assert len(smtp_server.messages) == 1
    assert outcome.run.establishment.code == "worker-hotel"
