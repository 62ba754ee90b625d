"""Pages of the nightly run: configuration check, tonight, runs; the admin's count to fix."""

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from debtors.models import SendMode
from dispatch.models import (
    Dispatch,
    DispatchEvent,
    DispatchStatus,
    Integration,
    Provider,
    Run,
    RunTrigger,
    SkippedDebtor,
    SkipReason,
)
from dispatch.selectors import (
    configuration_check,
    configuration_to_fix_counts,
    establishment_next_runs,
)
from dispatch.services import run_execute
from tests.factories import DebtorAccountFactory, EstablishmentFactory, InvoiceFactory

pytestmark = pytest.mark.django_db

EN = {"HTTP_ACCEPT_LANGUAGE": "en"}


def days_ago(days: int) -> dt.date:
    # A day of margin: the establishment's local date may be behind UTC's.
    return timezone.now().date() - dt.timedelta(days=days + 1)


def pending_invoice(debtor, gross: str = "110.00", **kwargs):
    kwargs.setdefault("issue_date", days_ago(60))
    kwargs.setdefault("due_date", days_ago(30))
    return InvoiceFactory(debtor=debtor, gross=Decimal(gross), **kwargs)


@pytest.fixture
def paris():
    return EstablishmentFactory(code="paris", name="Hôtel Paris")


@pytest.fixture
def lyon():
    return EstablishmentFactory(code="lyon", name="Hôtel Lyon")


@pytest.fixture
def accountant(django_user_model, paris):
    user = django_user_model.objects.create_user("compta", password="x")
    user.groups.add(Group.objects.get(name="Comptables"))
    paris.members.add(user)
    return user


@pytest.fixture
def client_in(client, accountant):
    client.force_login(accountant)
    return client


def test_anonymous_users_are_sent_to_the_login_page(client, paris):
    run = Run.objects.create(establishment=paris, business_date=days_ago(0), trigger="command")
    for url in (
        reverse("billing:checks"),
        reverse("billing:run_preview"),
        reverse("billing:run_list"),
        reverse("billing:run_detail", args=[run.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("billing:login"))


def test_users_without_the_permission_are_refused(client, django_user_model, paris):
    user = django_user_model.objects.create_user("guest", password="x")
    paris.members.add(user)
    client.force_login(user)
    for url in (reverse("billing:checks"), reverse("billing:run_list")):
        assert client.get(url).status_code == 403


def test_direction_members_can_read_every_page(client, django_user_model, paris):
    user = django_user_model.objects.create_user("boss", password="x")
    user.groups.add(Group.objects.get(name="Direction"))
    paris.members.add(user)
    run = Run.objects.create(establishment=paris, business_date=days_ago(0), trigger="command")
    client.force_login(user)
    for url in (
        reverse("billing:checks"),
        reverse("billing:run_preview"),
        reverse("billing:run_list"),
        reverse("billing:run_detail", args=[run.pk]),
    ):
        assert client.get(url).status_code == 200, url


# --- When the next run happens -------------------------------------------------------------


def test_next_run_is_today_before_the_send_hour_then_due_then_tomorrow(paris):
    paris.send_hour = 2  # Europe/Paris: UTC+1 in December
    paris.save()
    early = dt.datetime(2026, 12, 4, 0, 30, tzinfo=dt.UTC)  # 01:30 in Paris
    later = dt.datetime(2026, 12, 4, 9, 0, tzinfo=dt.UTC)

    before = establishment_next_runs(establishments=[paris], now=early)[paris.pk]
    assert before.business_date == dt.date(2026, 12, 4)
    assert not before.due_now
    assert before.due_at.hour == 2 and before.due_at.utcoffset() == dt.timedelta(hours=1)

    after = establishment_next_runs(establishments=[paris], now=later)[paris.pk]
    assert (after.business_date, after.due_now) == (dt.date(2026, 12, 4), True)

    # "Send now" for one debtor is not the night's run; a command run is.
    Run.objects.create(
        establishment=paris,
        business_date=dt.date(2026, 12, 4),
        trigger=RunTrigger.MANUAL,
        finished_at=later,
    )
    assert establishment_next_runs(establishments=[paris], now=later)[paris.pk].due_now
    Run.objects.create(
        establishment=paris,
        business_date=dt.date(2026, 12, 4),
        trigger=RunTrigger.COMMAND,
        finished_at=later,
    )
    done = establishment_next_runs(establishments=[paris], now=later)[paris.pk]
    assert (done.business_date, done.due_now) == (dt.date(2026, 12, 5), False)


def test_configuration_check_groups_skips_with_configuration_reasons_first(paris):
    now = dt.datetime(2026, 12, 4, 9, 0, tzinfo=dt.UTC)
    no_email = DebtorAccountFactory(establishment=paris, name="Sans email", contact_email="")
    InvoiceFactory(debtor=no_email, gross=Decimal("200.00"))
    InvoiceFactory(debtor=no_email, gross=Decimal("50.50"))
    no_mode = DebtorAccountFactory(establishment=paris, send_mode=SendMode.NONE)
    InvoiceFactory(debtor=no_mode, gross=Decimal("30.00"))
    paris.minimum_amount = Decimal("20.00")
    paris.save()
    small = DebtorAccountFactory(establishment=paris)
    InvoiceFactory(debtor=small, gross=Decimal("10.00"))
    served = DebtorAccountFactory(establishment=paris)
    InvoiceFactory(debtor=served, gross=Decimal("99.00"))

    [check] = configuration_check(establishments=[paris], now=now)

    assert [g.reason for g in check.groups] == [
        SkipReason.NO_SEND_MODE,
        SkipReason.MISSING_EMAIL,
        SkipReason.BELOW_MINIMUM,
    ]
    missing = check.groups[1]
    assert missing.configuration and missing.count == 1 and missing.invoice_count == 2
    assert missing.amount == Decimal("250.50")
    assert not check.groups[2].configuration
    assert check.to_fix_count == 2 and check.to_fix_amount == Decimal("280.50")
    assert check.other_skip_count == 1
    assert [d.debtor_id for d in check.plan.letters] == [served.pk]


# --- Configuration check page ----------------------------------------------------------------


def test_check_lists_a_debtor_without_email_with_its_amount_and_a_link(client_in, paris, lyon):
    debtor = DebtorAccountFactory(
        establishment=paris, name="Agence Sans Courriel", contact_email=""
    )
    pending_invoice(debtor, "120.00")
    pending_invoice(debtor, "80.25")
    # Another establishment's misconfigured debtor is not this accountant's business.
    stranger = DebtorAccountFactory(establishment=lyon, name="Agence Lyonnaise", contact_email="")
    pending_invoice(stranger)

    response = client_in.get(reverse("billing:checks"), **EN)

    assert response.status_code == 200
    [check] = response.context["checks"]
    [group] = check.configuration_groups
    assert group.reason == SkipReason.MISSING_EMAIL
    assert [d.debtor_id for d in group.debtors] == [debtor.pk]
    assert group.amount == Decimal("200.25")
    html = response.content.decode()
    assert "missing_email" in html
    assert "No contact email" in html
    assert "Agence Sans Courriel" in html
    assert "200.25 EUR" in html
    assert reverse("billing:debtor_detail", args=[debtor.pk]) in html
    assert "Agence Lyonnaise" not in html
    # Which business date is shown is said on the page.
    assert check.next_run.business_date.strftime("%Y") in html
    assert "Business date" in html


def test_check_lists_an_establishment_with_auto_send_off_and_its_pending_total(
    client_in, accountant, paris
):
    nice = EstablishmentFactory(code="nice", name="Hôtel Nice", auto_send_pending_invoices=False)
    nice.members.add(accountant)
    debtor = DebtorAccountFactory(establishment=nice)
    pending_invoice(debtor, "300.00")
    pending_invoice(debtor, "45.50")
    # Off and nothing pending: not listed.
    quiet = EstablishmentFactory(code="quiet", name="Hôtel Calme", auto_send_pending_invoices=False)
    quiet.members.add(accountant)

    response = client_in.get(reverse("billing:checks"), **EN)

    [off] = response.context["switched_off"]
    assert off.establishment == nice
    assert off.pending_invoice_count == 2 and off.pending_total == Decimal("345.50")
    html = response.content.decode()
    assert "Automatic sending switched off" in html
    assert "Nothing is sent" in html
    assert "345.50 EUR" in html
    assert "Hôtel Calme" not in html.split("Automatic sending switched off")[1]
    assert [c.establishment for c in response.context["checks"]] == [paris]


def test_check_can_show_one_establishment_and_ignores_others_ids(
    client_in, accountant, paris, lyon
):
    nice = EstablishmentFactory(code="nice", name="Hôtel Nice")
    nice.members.add(accountant)
    response = client_in.get(reverse("billing:checks"), {"establishment": nice.pk})
    assert [c.establishment for c in response.context["checks"]] == [nice]
    # Not one of the user's establishments: the filter is ignored, never widened.
    response = client_in.get(reverse("billing:checks"), {"establishment": lyon.pk})
    assert {c.establishment for c in response.context["checks"]} == {paris, nice}


def test_check_page_queries_do_not_grow_with_debtors(client_in, paris):
    def add_debtors(count: int) -> None:
        for _ in range(count):
            pending_invoice(DebtorAccountFactory(establishment=paris, contact_email=""))
            pending_invoice(DebtorAccountFactory(establishment=paris, send_mode=SendMode.NONE))
            pending_invoice(DebtorAccountFactory(establishment=paris))

    add_debtors(2)
    client_in.get(reverse("billing:checks"))  # sessions, content types: warm
    with CaptureQueriesContext(connection) as few:
        assert client_in.get(reverse("billing:checks")).status_code == 200
    add_debtors(20)
    with CaptureQueriesContext(connection) as many:
        response = client_in.get(reverse("billing:checks"))
    assert response.context["checks"][0].to_fix_count == 44
    assert len(many) == len(few)


# --- Tonight -----------------------------------------------------------------------------------


@pytest.fixture
def sandbox(paris, tmp_path):
    return Integration.objects.create(
        establishment=paris,
        provider=Provider.SANDBOX,
        name="Plateforme démo",
        active=True,
        endpoint=str(tmp_path / "platform"),
    )


def test_preview_shows_letters_submissions_and_skips_and_writes_nothing(
    client_in, accountant, paris, sandbox
):
    letter = DebtorAccountFactory(establishment=paris, name="Agence Lettre")
    pending_invoice(letter, "150.00", number="F-L1")
    einvoiced = DebtorAccountFactory(
        establishment=paris,
        name="Agence Facture",
        send_mode=SendMode.EINVOICING,
        integration=sandbox,
        einvoicing_id="73282932000074",
    )
    pending_invoice(
        einvoiced, "75.00", number="F-E1", due_date=timezone.now().date() + dt.timedelta(days=20)
    )
    pending_invoice(DebtorAccountFactory(establishment=paris, contact_email=""), "10.00")
    off = EstablishmentFactory(code="nice", name="Hôtel Nice", auto_send_pending_invoices=False)
    off.members.add(accountant)
    pending_invoice(DebtorAccountFactory(establishment=off), "60.00")
    tables = (Run, Dispatch, SkippedDebtor, DispatchEvent)
    before = [model.objects.count() for model in tables]

    response = client_in.get(reverse("billing:run_preview"), **EN)

    assert response.status_code == 200
    assert [model.objects.count() for model in tables] == before
    by_code = {p.establishment.code: p for p in response.context["previews"]}
    preview = by_code["paris"]
    assert [d.debtor_id for d in preview.letters] == [letter.pk]
    assert preview.letters[0].cause == "new_invoices"
    assert [
        (s.decision.debtor_id, s.invoice.number, s.integration_name) for s in preview.submissions
    ] == [(einvoiced.pk, "F-E1", "Plateforme démo")]
    assert preview.skip_count == 1
    assert by_code["nice"].check.plan is None
    html = response.content.decode()
    for text in ("Agence Lettre", "F-L1", "150.00 EUR", "New invoices", "Agence Facture"):
        assert text in html
    assert "Plateforme démo" in html and "75.00 EUR" in html
    assert "No contact email" in html
    assert f"{reverse('billing:checks')}?establishment={paris.pk}" in html
    assert "Automatic sending off" in html
    # Due now or at the send hour: the page says which.
    assert "Due now" in html or "due at 02:00 local time (Europe/Paris)" in html


def test_preview_of_an_establishment_whose_night_is_done_shows_tomorrow(client_in, paris):
    today = timezone.now().astimezone(paris.tzinfo).date()
    if timezone.now().astimezone(paris.tzinfo).hour < paris.send_hour:
        pytest.skip("before the send hour the next run is today's anyway")
    Run.objects.create(
        establishment=paris,
        business_date=today,
        trigger=RunTrigger.SCHEDULE,
        finished_at=timezone.now(),
    )
    response = client_in.get(reverse("billing:run_preview"))
    [preview] = response.context["previews"]
    assert preview.check.next_run.business_date == today + dt.timedelta(days=1)
    assert not preview.check.next_run.due_now


# --- Runs ----------------------------------------------------------------------------------------


def make_run(establishment, *, served: int = 1, without_email: int = 1, failed: int = 0) -> Run:
    debtors = [DebtorAccountFactory(establishment=establishment) for _ in range(served)]
    for debtor in debtors:
        pending_invoice(debtor)
    for _ in range(without_email):
        pending_invoice(DebtorAccountFactory(establishment=establishment, contact_email=""))
    business_date = days_ago(0) - dt.timedelta(days=Run.objects.count())
    outcome = run_execute(
        establishment=establishment,
        business_date=business_date,
        trigger=RunTrigger.COMMAND,
        enqueue=False,
    )
    dispatches = list(outcome.run.dispatches.order_by("id"))
    for dispatch in dispatches[:failed]:
        dispatch.status = DispatchStatus.FAILED
        dispatch.last_error = "550 5.1.1 mailbox unknown"
        dispatch.attempts = 1
        dispatch.save()
    for dispatch in dispatches[failed:]:
        dispatch.status = DispatchStatus.SENT
        dispatch.sent_at = timezone.now()
        dispatch.save()
    return outcome.run


def test_run_list_shows_counts_newest_first_and_only_own_runs(client_in, accountant, paris, lyon):
    older = make_run(paris, served=3, without_email=2, failed=1)
    newer = make_run(paris, served=1, without_email=0)
    make_run(lyon, served=1)

    response = client_in.get(reverse("billing:run_list"), **EN)

    assert response.status_code == 200
    runs = list(response.context["page"].object_list)
    assert runs == [newer, older]
    assert (runs[1].planned_count, runs[1].live_sent, runs[1].live_failed) == (3, 2, 1)
    assert runs[1].skipped_count == 2
    html = response.content.decode()
    assert "No contact email: 2" in html
    assert reverse("billing:run_detail", args=[older.pk]) in html
    assert "2 runs" in html


def test_run_list_filters_by_establishment(client_in, accountant, paris):
    nice = EstablishmentFactory(code="nice", name="Hôtel Nice")
    nice.members.add(accountant)
    make_run(paris)
    nice_run = make_run(nice)
    response = client_in.get(reverse("billing:run_list"), {"establishment": nice.pk})
    assert list(response.context["page"].object_list) == [nice_run]


def test_run_list_is_paginated_with_fixed_queries(client_in, paris):
    for index in range(3):
        Run.objects.create(
            establishment=paris, business_date=days_ago(index), trigger=RunTrigger.SCHEDULE
        )
    client_in.get(reverse("billing:run_list"))
    with CaptureQueriesContext(connection) as few:
        client_in.get(reverse("billing:run_list"))
    for index in range(3, 30):
        Run.objects.create(
            establishment=paris,
            business_date=days_ago(index),
            trigger=RunTrigger.SCHEDULE,
            skipped_by_reason={"missing_email": 1},
        )
    with CaptureQueriesContext(connection) as many:
        response = client_in.get(reverse("billing:run_list"))
    page = response.context["page"]
    assert page.paginator.count == 30 and len(page.object_list) == 25
    assert len(many) == len(few)
    second = client_in.get(reverse("billing:run_list"), {"page": 2})
    assert len(second.context["page"].object_list) == 5


def test_run_detail_shows_failures_first_and_skipped_debtors(client_in, paris):
    run = make_run(paris, served=3, without_email=1, failed=1)
    failed = run.dispatches.get(status=DispatchStatus.FAILED)
    skipped = SkippedDebtor.objects.get(run=run)

    response = client_in.get(reverse("billing:run_detail", args=[run.pk]), **EN)

    assert response.status_code == 200
    rows = list(response.context["dispatches"].object_list)
    assert rows[0] == failed and len(rows) == 3
    html = response.content.decode()
    assert "550 5.1.1 mailbox unknown" in html
    assert html.index("550 5.1.1") < html.index('badge ok">Sent</span>')
    assert "<details>" in html and "Planned" in html
    assert reverse("billing:debtor_detail", args=[failed.debtor_id]) in html
    assert reverse("billing:debtor_detail", args=[skipped.debtor_id]) in html
    assert "missing_email" in html and "No contact email" in html


def test_run_detail_of_another_establishment_is_404(client_in, lyon):
    run = make_run(lyon)
    assert client_in.get(reverse("billing:run_detail", args=[run.pk])).status_code == 404
    assert client_in.get(reverse("billing:run_detail", args=[run.pk + 1000])).status_code == 404


def test_run_detail_queries_do_not_grow_with_dispatches(client_in, paris):
    small = make_run(paris, served=2, without_email=1, failed=1)
    large = make_run(paris, served=20, without_email=10, failed=5)
    client_in.get(reverse("billing:run_detail", args=[small.pk]))
    with CaptureQueriesContext(connection) as few:
        client_in.get(reverse("billing:run_detail", args=[small.pk]))
    with CaptureQueriesContext(connection) as many:
        response = client_in.get(reverse("billing:run_detail", args=[large.pk]))
    # The small run's failed letter is planned again: its invoices were never sent.
    assert len(response.context["dispatches"].object_list) == 21
    assert len(many) == len(few)


# --- Establishments' admin --------------------------------------------------------------------


@pytest.fixture
def admin_client_en(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("admin", password="x"))
    return client


def test_admin_changelist_shows_debtors_to_fix_tonight(admin_client_en, paris, lyon):
    for _ in range(3):
        pending_invoice(DebtorAccountFactory(establishment=paris, contact_email=""))
    pending_invoice(DebtorAccountFactory(establishment=paris, send_mode=SendMode.NONE))
    # Cadence skips are not "to fix".
    pending_invoice(DebtorAccountFactory(establishment=paris), "0.00", status="paid")
    off = EstablishmentFactory(code="nice", name="Hôtel Nice", auto_send_pending_invoices=False)
    pending_invoice(DebtorAccountFactory(establishment=off, contact_email=""))

    response = admin_client_en.get(reverse("admin:establishments_establishment_changelist"), **EN)

    assert response.status_code == 200
    html = response.content.decode()
    assert "to fix tonight" in html.lower()
    rows = {e.pk: e.to_fix_tonight_count for e in response.context["cl"].result_list}
    assert rows == {paris.pk: 4, lyon.pk: 0, off.pk: None}
    checks_url = reverse("billing:checks")
    assert (
        f'{checks_url}?establishment={paris.pk}" style="color:#ba2121;font-weight:bold">4<' in html
    )


def test_admin_count_is_the_configuration_checks_count(paris, lyon, tmp_path):
    """The admin's set-based count and the check page's planner agree, reason by reason."""
    now = dt.datetime(2026, 12, 4, 9, 0, tzinfo=dt.UTC)
    inactive = Integration.objects.create(
        establishment=paris, provider=Provider.SANDBOX, name="Old", active=False
    )
    active = Integration.objects.create(
        establishment=paris,
        provider=Provider.SANDBOX,
        name="Demo",
        active=True,
        endpoint=str(tmp_path),
    )
    overdue = {"issue_date": dt.date(2026, 10, 1), "due_date": dt.date(2026, 10, 31)}
    not_due = {"issue_date": dt.date(2026, 12, 1), "due_date": dt.date(2026, 12, 31)}
    debtors = [
        ({"contact_email": ""}, overdue),
        ({"contact_email": "bad@@example"}, overdue),
        ({"send_mode": SendMode.NONE}, overdue),
        ({"paused_until": dt.date(2026, 12, 31), "pause_reason": "Litige"}, overdue),
        ({"send_mode": SendMode.EINVOICING, "integration": inactive}, overdue),
        ({"send_mode": SendMode.EINVOICING, "integration": active}, overdue),
        # E-invoicing without email: a reminder it cannot get only when one is due.
        (
            {
                "send_mode": SendMode.EINVOICING,
                "integration": active,
                "einvoicing_id": "1",
                "contact_email": "",
            },
            overdue,
        ),
        (
            {
                "send_mode": SendMode.EINVOICING,
                "integration": active,
                "einvoicing_id": "2",
                "contact_email": "",
            },
            not_due,
        ),
        ({}, overdue),
    ]
    for fields, dates in debtors:
        InvoiceFactory(debtor=DebtorAccountFactory(establishment=paris, **fields), **dates)
    InvoiceFactory(debtor=DebtorAccountFactory(establishment=lyon, contact_email=""))
    # Issued after the business date: not pending for the run yet.
    InvoiceFactory(
        debtor=DebtorAccountFactory(establishment=lyon, contact_email=""),
        issue_date=dt.date(2026, 12, 20),
        due_date=dt.date(2026, 12, 30),
    )

    checks = configuration_check(establishments=[paris, lyon], now=now)
    counts = configuration_to_fix_counts(establishments=[paris, lyon], now=now)

    assert {c.establishment.pk: c.to_fix_count for c in checks} == counts
    assert counts == {paris.pk: 7, lyon.pk: 1}


def test_admin_changelist_queries_do_not_grow_with_debtors(admin_client_en, paris):
    url = reverse("admin:establishments_establishment_changelist")
    # One of each kind from the start: the planner looks up the outbox only when it has
    # letters to check, a fixed query whatever their number.
    pending_invoice(DebtorAccountFactory(establishment=paris, contact_email=""))
    pending_invoice(DebtorAccountFactory(establishment=paris))
    admin_client_en.get(url)
    with CaptureQueriesContext(connection) as few:
        admin_client_en.get(url)
    for _ in range(25):
        pending_invoice(DebtorAccountFactory(establishment=paris, contact_email=""))
        pending_invoice(DebtorAccountFactory(establishment=paris))
    # Nor with establishments: the count is set-based, not a planner run per row.
    for index in range(10):
        other = EstablishmentFactory(code=f"other-{index}")
        pending_invoice(DebtorAccountFactory(establishment=other, send_mode=SendMode.NONE))
    with CaptureQueriesContext(connection) as many:
        response = admin_client_en.get(url)
    counts = {e.code: e.to_fix_tonight_count for e in response.context["cl"].result_list}
    assert counts["paris"] == 26 and counts["other-3"] == 1
    assert len(many) == len(few)
