"""Benchmark: planning a business date for N debtors, as ratios within one run.

    TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/hotel_billing_bench \
        .venv/bin/python scripts/bench_planner.py 100 1000 5000

Uses its own PostgreSQL database (created and migrated if missing; its data is rolled
back). Prints, for each size, the SQL queries and seconds of `run_execute` (planning and
writing the outbox, no sending), and the time per debtor relative to the smallest size:
set-based planning keeps the query count flat and the time per debtor roughly constant.
"""

import datetime as dt
import os
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
os.environ.setdefault("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hotel_billing_bench")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

BUSINESS_DATE = dt.date(2026, 12, 4)
INVOICES_PER_DEBTOR = 3


class Rollback(Exception):
    pass


def ensure_database() -> None:
    db = settings.DATABASES["default"]
    with psycopg.connect(
        dbname="postgres",
        host=db["HOST"],
        port=db["PORT"] or 5432,
        user=db["USER"],
        autocommit=True,
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]])
        if not exists.fetchone():
            conn.execute(f'CREATE DATABASE "{db["NAME"]}"')
    call_command("migrate", verbosity=0)


def seed(size: int):
    from debtors.models import DebtorAccount, SendMode
    from establishments.models import Establishment
    from invoicing.models import Invoice

    rng = random.Random(size)
    establishment = Establishment.objects.create(
        code=f"bench-{size}", name=f"Bench {size}", auto_send_pending_invoices=True
    )
    debtors = DebtorAccount.objects.bulk_create(
        [
            DebtorAccount(
                establishment=establishment,
                account_number=f"B{n:07d}",
                name=f"Debtor {n}",
                contact_email="" if n % 10 == 0 else f"d{n}@bench.example",
                send_mode=SendMode.EMAIL,
            )
            for n in range(size)
        ],
        batch_size=1000,
    )
    invoices = []
    for debtor in debtors:
        for k in range(INVOICES_PER_DEBTOR):
            gross = Decimal(rng.randint(50, 5000))
            issue = BUSINESS_DATE - dt.timedelta(days=rng.randint(0, 120))
            invoices.append(
                Invoice(
                    establishment=establishment,
                    debtor=debtor,
                    number=f"{debtor.account_number}-{k}",
                    issue_date=issue,
                    due_date=issue + dt.timedelta(days=30),
                    net_total=gross,
                    vat_total=Decimal("0"),
                    gross_total=gross,
                )
            )
    Invoice.objects.bulk_create(invoices, batch_size=2000)
    return establishment


def measure(size: int) -> tuple[int, float, int]:
    from dispatch.models import RunTrigger
    from dispatch.services import run_execute

    result = None
    try:
        with transaction.atomic():
            establishment = seed(size)
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                outcome = run_execute(
                    establishment=establishment,
                    business_date=BUSINESS_DATE,
                    trigger=RunTrigger.COMMAND,
                    enqueue=False,
                )
                elapsed = time.perf_counter() - started
            result = (len(queries), elapsed, len(outcome.created_ids))
            raise Rollback
    except Rollback:
        pass
    return result


def main(sizes: list[int]) -> None:
    ensure_database()
    rows = [(size, *measure(size)) for size in sizes]
    base_per_debtor = rows[0][2] / rows[0][0]
    print(
        f"{'debtors':>8} {'queries':>8} {'seconds':>8} {'letters':>8} {'time/debtor vs first':>22}"
    )
    for size, queries, seconds, letters in rows:
        ratio = (seconds / size) / base_per_debtor
        print(f"{size:>8} {queries:>8} {seconds:>8.3f} {letters:>8} {ratio:>22.2f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000, 5000])
