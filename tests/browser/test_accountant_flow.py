"""The product description, clicked through in a real browser (Debian's chromium).

Staff switch on the automatic sending in the admin; an accountant finds a debtor, is told
when the email is wrong, sets the send mode and previews the letter; another
establishment's debtor stays out of reach. Each page visited is saved as a screenshot at
1280 and 390 pixels wide under test-artifacts/screenshots/.
"""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.urls import reverse
from django.utils import timezone, translation
from playwright.sync_api import expect

from debtors.models import DebtorAccount, SendMode
from dispatch.models import RunTrigger
from dispatch.services import run_execute
from establishments.groups import groups_install
from establishments.models import Establishment
from tests.factories import DebtorAccountFactory, EstablishmentFactory, InvoiceFactory

PASSWORD = "browser-test-2026"


def french(text) -> str:
    """A source string as the French pages show it (English when the catalogue is not
    compiled: the server shows the same then). Plain strings are looked up in the
    catalogue; lazy ones (verbose names) translate themselves."""
    with translation.override("fr"):
        return translation.gettext(text) if isinstance(text, str) else str(text)


def log_in(page, *, path: str, username: str) -> None:
    page.goto(path)
    page.locator("#id_username").fill(username)
    page.locator("#id_password").fill(PASSWORD)
    page.locator("form [type=submit]").click()


def no_server_error(response) -> None:
    assert response is not None and response.status < 400, (
        f"{response.url if response else '?'} answered {response.status if response else '-'}"
    )


@pytest.fixture
def accountant():
    # transactional_db empties every table between tests, the data migration's groups too.
    groups_install(apps=django_apps)
    user = get_user_model().objects.create_user(
        username="claire",
        password=PASSWORD,
        first_name="Marie-Claire",
        last_name="Delacroix-Beaumont",
    )
    user.groups.add(Group.objects.get(name="Comptables"))
    return user


@pytest.fixture
def hotels(accountant):
    """Two hotels, the accountant working for the first, with debtors in every state."""
    paris = EstablishmentFactory(code="paris-opera", name="Hôtel Opéra Paris")
    paris.members.add(accountant)
    lyon = EstablishmentFactory(code="lyon-bellecour", name="Hôtel Bellecour Lyon")

    target = DebtorAccountFactory(
        establishment=paris,
        account_number="C0042",
        name="Voyages Horizon SARL",
        contact_email="",
        send_mode=SendMode.NONE,
    )
    InvoiceFactory(debtor=target, gross=Decimal("1280.50"))  # due 2026-12-01: overdue
    InvoiceFactory(
        debtor=target,
        gross=Decimal("342.00"),
        issue_date=dt.date(2026, 11, 28),
        due_date=dt.date(2026, 12, 28),
    )
    # Letters go out to these on the first run; one is skipped for its missing email.
    for number, name, email in [
        ("C0007", "Agence Méditerranée Tours", "compta@mediterranee.example"),
        ("C0013", "Cabinet Dupont & Associés", "factures@dupont.example"),
        ("C0021", "Séminaires Lumière", ""),
    ]:
        debtor = DebtorAccountFactory(
            establishment=paris, account_number=number, name=name, contact_email=email
        )
        InvoiceFactory(debtor=debtor, gross=Decimal("215.40"))
    stranger = DebtorAccountFactory(
        establishment=lyon, account_number="L0001", name="Voyages Horizon Lyon"
    )
    InvoiceFactory(debtor=stranger)

    # A past night, so that the runs page has something to show.
    today = timezone.localdate()
    run_execute(
        establishment=paris,
        business_date=today - dt.timedelta(days=8),
        trigger=RunTrigger.COMMAND,
        enqueue=True,
    )
    return {"paris": paris, "lyon": lyon, "target": target, "stranger": stranger}


def test_staff_switch_on_automatic_sending_in_the_admin(page, snapshot, live_server):
    establishment = EstablishmentFactory(
        code="nice-promenade", name="Hôtel Promenade Nice", auto_send_pending_invoices=False
    )
    staff = get_user_model().objects.create_user(
        username="sophie", password=PASSWORD, is_staff=True
    )
    staff.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="establishments",
            codename__in=["view_establishment", "change_establishment"],
        )
    )

    log_in(page, path="/admin/login/", username="sophie")
    expect(page.locator("#user-tools")).to_be_visible()
    assert page.url.startswith("http://127.0.0.1:")

    response = page.goto(
        reverse("admin:establishments_establishment_change", args=[establishment.pk])
    )
    no_server_error(response)
    switch = page.locator("#id_auto_send_pending_invoices")
    # The switch sits in the section staff are told to look for, under its product name.
    section = page.locator("fieldset", has=switch)
    expect(section.locator("h2")).to_contain_text(french("Preferences › Financial information"))
    label = Establishment._meta.get_field("auto_send_pending_invoices").verbose_name
    expect(page.get_by_label(french(label))).to_be_visible()
    expect(switch).not_to_be_checked()
    switch.check()
    snapshot(page, "admin-establishment", fits=False)
    page.locator("input[name=_save]").click()

    expect(page.locator(".messagelist .success")).to_be_visible()
    establishment.refresh_from_db()
    assert establishment.auto_send_pending_invoices is True


def test_accountant_sets_email_send_mode_and_previews_the_letter(
    page, snapshot, live_server, hotels
):
    target = hotels["target"]

    page.goto(reverse("billing:debtor_list"))
    # Not logged in: the login page, which then leads back to the list.
    expect(page).to_have_url(re.compile(r"/billing/login/"))
    snapshot(page, "login")
    page.locator("#id_username").fill("claire")
    page.locator("#id_password").fill(PASSWORD)
    page.locator("form [type=submit]").click()
    expect(page).to_have_url(re.compile(r"/billing/debtors/"))

    search = page.locator("input[type=search][name=q]")
    search.fill("horizon")
    search.press("Enter")
    page.wait_for_load_state()
    results = page.locator("main table tbody")
    expect(results).to_contain_text("Voyages Horizon SARL")
    # The Lyon debtor of the same name belongs to a hotel the accountant does not work for.
    expect(results).not_to_contain_text("Voyages Horizon Lyon")
    snapshot(page, "debtor-list")

    page.get_by_role("link", name="Voyages Horizon SARL").first.click()
    expect(page).to_have_url(re.compile(rf"/billing/debtors/{target.pk}/$"))
    expect(page.locator("h1")).to_contain_text("Voyages Horizon SARL")

    form = page.locator("form", has=page.locator("#id_contact_email"))
    form.locator("#id_contact_email").fill("compta@horizon")
    form.locator("#id_send_mode").select_option(SendMode.EMAIL.value)
    form.locator("[type=submit]").click()
    page.wait_for_load_state()
    errors = page.locator("form", has=page.locator("#id_contact_email")).locator(".errorlist")
    with translation.override("fr"):
        from django.core.validators import EmailValidator

        expected_error = str(EmailValidator.message)
    expect(errors).to_contain_text(expected_error)
    snapshot(page, "debtor-detail-error")
    target.refresh_from_db()
    assert target.contact_email == "" and target.send_mode == SendMode.NONE

    form = page.locator("form", has=page.locator("#id_contact_email"))
    form.locator("#id_contact_email").fill("compta@horizon-voyages.example")
    form.locator("#id_send_mode").select_option(SendMode.EMAIL.value)
    form.locator("[type=submit]").click()
    expect(page.locator(".messages .msg-success")).to_be_visible()
    expect(page.locator("#id_contact_email")).to_have_value("compta@horizon-voyages.example")
    snapshot(page, "debtor-detail-saved")
    target.refresh_from_db()
    assert target.contact_email == "compta@horizon-voyages.example"
    assert target.send_mode == SendMode.EMAIL
    # The change history records who made the change.
    assert target.history.latest().history_user.username == "claire"

    letter_url = reverse("billing:debtor_letter", args=[target.pk])
    preview = page.locator(f'a[href="{letter_url}"]')
    expect(preview).to_be_visible()
    # The link opens the PDF in the browser's viewer; fetch it with the page's session.
    letter = page.request.get(preview.get_attribute("href"))
    assert letter.status == 200
    assert letter.headers["content-type"] == "application/pdf"
    assert letter.headers.get("content-disposition", "").startswith("inline")
    assert letter.body().startswith(b"%PDF-")

    for name, url_name in [
        ("checks", "billing:checks"),
        ("tonight", "billing:run_preview"),
        ("runs", "billing:run_list"),
    ]:
        no_server_error(page.goto(reverse(url_name)))
        expect(page.locator("h1")).to_be_visible()
        snapshot(page, name)
    # Tonight's run would send the debtor just configured its first letter.
    page.goto(reverse("billing:run_preview"))
    expect(page.locator("main")).to_contain_text("Voyages Horizon SARL")
    # The one skipped for its missing email is on the configuration check.
    page.goto(reverse("billing:checks"))
    expect(page.locator("main")).to_contain_text("Séminaires Lumière")


def test_accountant_cannot_open_another_establishments_debtor(page, live_server, hotels):
    log_in(page, path=reverse("billing:login"), username="claire")
    expect(page).to_have_url(re.compile(r"/billing/debtors/"))

    response = page.goto(reverse("billing:debtor_detail", args=[hotels["stranger"].pk]))
    assert response.status == 404
    assert "Voyages Horizon Lyon" not in page.content()
    letter = page.request.get(reverse("billing:debtor_letter", args=[hotels["stranger"].pk]))
    assert letter.status == 404
    assert DebtorAccount.objects.get(pk=hotels["stranger"].pk).contact_email
