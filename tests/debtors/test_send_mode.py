"""The rules of a debtor's send mode: the service, the reusable form and the admin."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import translation

from debtors.forms import DebtorSendModeForm
from debtors.models import DebtorAccount, SendMode
from debtors.services import debtor_set_send_mode
from dispatch.models import Integration, Provider
from tests.factories import DebtorAccountFactory, EstablishmentFactory

pytestmark = pytest.mark.django_db

NEEDS_ID = "Bavel needs the recipient's identifier (SIREN/SIRET, Peppol id or client code)."


@pytest.fixture(autouse=True)
def _english():
    # Messages are checked in their English source text, whatever catalogues are compiled.
    with translation.override("en"):
        yield


@pytest.fixture
def admin_client(admin_client):
    # The admin's requests take their language from LocaleMiddleware (French by default),
    # not from the override above: ask for English as a browser would.
    admin_client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return admin_client


def _integration(establishment, *, name="Bavel", active=True, provider=Provider.BAVEL):
    return Integration.objects.create(
        establishment=establishment, provider=provider, name=name, active=active
    )


@pytest.fixture
def debtor():
    return DebtorAccountFactory(
        send_mode=SendMode.EMAIL, contact_email="ap@agency.example", einvoicing_id=""
    )


@pytest.fixture
def bavel(debtor):
    return _integration(debtor.establishment)


def _set(debtor, **changes):
    values = {
        "send_mode": debtor.send_mode,
        "integration": debtor.integration,
        "contact_email": debtor.contact_email,
        "einvoicing_id": debtor.einvoicing_id,
    }
    return debtor_set_send_mode(debtor=debtor, **{**values, **changes})


def _field_errors(exc_info) -> dict:
    return {
        field: [str(m) for m in messages] for field, messages in exc_info.value.message_dict.items()
    }


# --- the service ------------------------------------------------------------------------


def test_service_sets_an_active_integration_of_the_establishment(debtor, bavel):
    saved = _set(
        debtor, send_mode=SendMode.EINVOICING, integration=bavel, einvoicing_id="732829320"
    )

    saved.refresh_from_db()
    assert (saved.send_mode, saved.integration, saved.einvoicing_id) == (
        "einvoicing",
        bavel,
        "732829320",
    )


def test_service_back_to_email_drops_the_integration(debtor, bavel):
    _set(debtor, send_mode=SendMode.EINVOICING, integration=bavel, einvoicing_id="732829320")

    saved = _set(debtor, send_mode=SendMode.EMAIL, integration=bavel)

    saved.refresh_from_db()
    assert (saved.send_mode, saved.integration) == ("email", None)


def test_service_refuses_an_inactive_integration(debtor):
    inactive = _integration(debtor.establishment, active=False)

    with pytest.raises(ValidationError) as exc_info:
        _set(debtor, send_mode=SendMode.EINVOICING, integration=inactive, einvoicing_id="1")

    assert _field_errors(exc_info) == {"send_mode": ["This integration is not active."]}
    debtor.refresh_from_db()
    assert (debtor.send_mode, debtor.integration) == ("email", None)


def test_service_reads_the_active_flag_as_it_is_now(debtor, bavel):
    Integration.objects.filter(pk=bavel.pk).update(active=False)

    with pytest.raises(ValidationError) as exc_info:
        # The caller's copy still says active.
        _set(debtor, send_mode=SendMode.EINVOICING, integration=bavel, einvoicing_id="1")

    assert _field_errors(exc_info) == {"send_mode": ["This integration is not active."]}


def test_service_refuses_another_establishment_s_integration(debtor):
    foreign = _integration(EstablishmentFactory())

    with pytest.raises(ValidationError) as exc_info:
        _set(debtor, send_mode=SendMode.EINVOICING, integration=foreign, einvoicing_id="1")

    assert _field_errors(exc_info) == {
        "send_mode": ["This integration belongs to another establishment."]
    }


def test_service_needs_the_recipient_id_for_e_invoicing(debtor, bavel):
    with pytest.raises(ValidationError) as exc_info:
        _set(debtor, send_mode=SendMode.EINVOICING, integration=bavel, einvoicing_id="  ")

    assert _field_errors(exc_info) == {"einvoicing_id": [NEEDS_ID]}


def test_service_needs_an_integration_for_e_invoicing(debtor):
    with pytest.raises(ValidationError) as exc_info:
        _set(debtor, send_mode=SendMode.EINVOICING, integration=None, einvoicing_id="1")

    assert list(_field_errors(exc_info)) == ["send_mode"]


def test_service_needs_an_email_for_the_email_mode(debtor):
    with pytest.raises(ValidationError) as exc_info:
        _set(debtor, send_mode=SendMode.EMAIL, contact_email="")

    assert _field_errors(exc_info) == {
        "contact_email": ["The send mode Email needs a contact email address."]
    }


def test_service_refuses_an_invalid_email(debtor):
    with pytest.raises(ValidationError) as exc_info:
        _set(debtor, send_mode=SendMode.NONE, contact_email="ap at agency")

    assert _field_errors(exc_info) == {"contact_email": ["Enter a valid email address."]}


def test_service_allows_no_send_mode_without_email(debtor):
    saved = _set(debtor, send_mode=SendMode.NONE, contact_email="")

    saved.refresh_from_db()
    assert (saved.send_mode, saved.contact_email) == ("none", "")


def test_service_reports_every_problem_at_once(debtor):
    inactive = _integration(debtor.establishment, active=False)

    with pytest.raises(ValidationError) as exc_info:
        _set(
            debtor,
            send_mode=SendMode.EINVOICING,
            integration=inactive,
            einvoicing_id="",
            contact_email="bad",
        )

    assert set(_field_errors(exc_info)) == {"send_mode", "einvoicing_id", "contact_email"}


# --- the reusable form ------------------------------------------------------------------


def _form(debtor, **data):
    values = {
        "send_mode": DebtorSendModeForm(instance=debtor).initial.get("send_mode", "none"),
        "contact_email": debtor.contact_email,
        "einvoicing_id": debtor.einvoicing_id,
    }
    return DebtorSendModeForm({**values, **data}, instance=debtor)


def _choices(form) -> list[tuple[str, str]]:
    return [(str(value), str(label)) for value, label in form.fields["send_mode"].choices]


def test_form_offers_none_email_and_each_active_integration_by_name(debtor, bavel):
    _integration(debtor.establishment, name="Old platform", active=False)
    _integration(EstablishmentFactory(), name="Elsewhere")
    sandbox = _integration(debtor.establishment, name="Sandbox", provider=Provider.SANDBOX)

    choices = _choices(DebtorSendModeForm(instance=debtor))

    assert choices == [
        ("none", "None"),
        ("email", "Email"),
        (f"einvoicing:{bavel.pk}", "Bavel"),
        (f"einvoicing:{sandbox.pk}", "Sandbox"),
    ]


def test_form_choosing_an_integration_sets_the_mode_and_the_integration(debtor, bavel):
    form = _form(debtor, send_mode=f"einvoicing:{bavel.pk}", einvoicing_id="0088:123456789")

    assert form.is_valid(), form.errors
    form.save()
    debtor.refresh_from_db()
    assert (debtor.send_mode, debtor.integration, debtor.einvoicing_id) == (
        "einvoicing",
        bavel,
        "0088:123456789",
    )
    assert DebtorSendModeForm(instance=debtor).initial["send_mode"] == f"einvoicing:{bavel.pk}"


def test_form_refuses_an_inactive_integration(debtor):
    inactive = _integration(debtor.establishment, active=False)

    form = _form(debtor, send_mode=f"einvoicing:{inactive.pk}", einvoicing_id="1")

    assert form.errors == {"send_mode": ["This integration is not active."]}


def test_form_refuses_another_establishment_s_integration(debtor):
    foreign = _integration(EstablishmentFactory())

    form = _form(debtor, send_mode=f"einvoicing:{foreign.pk}", einvoicing_id="1")

    assert form.errors == {"send_mode": ["This integration belongs to another establishment."]}


def test_form_needs_the_recipient_id(debtor, bavel):
    form = _form(debtor, send_mode=f"einvoicing:{bavel.pk}", einvoicing_id="")

    assert form.errors == {"einvoicing_id": [NEEDS_ID]}


def test_form_email_mode_needs_an_email(debtor):
    form = _form(debtor, send_mode="email", contact_email="")

    assert form.errors == {"contact_email": ["The send mode Email needs a contact email address."]}


def test_form_refuses_an_invalid_email_once(debtor):
    form = _form(debtor, send_mode="email", contact_email="ap at agency")

    assert form.errors == {"contact_email": ["Enter a valid email address."]}


@pytest.mark.parametrize("value", ["einvoicing:abc", "fax", "einvoicing:"])
def test_form_refuses_unknown_modes(debtor, value):
    form = _form(debtor, send_mode=value)

    assert list(form.errors) == ["send_mode"]


def test_form_refuses_an_integration_that_does_not_exist(debtor):
    form = _form(debtor, send_mode="einvoicing:999999", einvoicing_id="1")

    assert form.errors == {"send_mode": ["This integration does not exist."]}


def test_a_deactivated_integration_still_shows_and_must_be_changed(debtor, bavel):
    _set(debtor, send_mode=SendMode.EINVOICING, integration=bavel, einvoicing_id="732829320")
    Integration.objects.filter(pk=bavel.pk).update(active=False)
    debtor = DebtorAccount.objects.get(pk=debtor.pk)

    shown = DebtorSendModeForm(instance=debtor)
    resaved = _form(debtor)
    switched = _form(debtor, send_mode="email")

    assert shown.initial["send_mode"] == f"einvoicing:{bavel.pk}"
    assert (f"einvoicing:{bavel.pk}", "Bavel (inactive)") in _choices(shown)
    assert resaved.errors == {"send_mode": ["This integration is not active."]}
    assert switched.is_valid(), switched.errors
    switched.save()
    debtor.refresh_from_db()
    assert (debtor.send_mode, debtor.integration) == ("email", None)


def test_a_reactivated_integration_can_be_saved_again(debtor, bavel):
    _set(debtor, send_mode=SendMode.EINVOICING, integration=bavel, einvoicing_id="732829320")
    Integration.objects.filter(pk=bavel.pk).update(active=False)
    Integration.objects.filter(pk=bavel.pk).update(active=True)

    form = _form(DebtorAccount.objects.get(pk=debtor.pk))

    assert form.is_valid(), form.errors


# --- the admin --------------------------------------------------------------------------


def _admin_url(view, *args):
    return reverse(f"admin:debtors_debtoraccount_{view}", args=args)


def _admin_data(admin_client, debtor) -> dict:
    form = admin_client.get(_admin_url("change", debtor.pk)).context["adminform"].form
    data = {}
    for bound in form:
        value = bound.value()
        if value not in (None, False):
            data[bound.html_name] = str(value)
    return data


def test_admin_change_page_offers_the_integration(admin_client, debtor, bavel):
    response = admin_client.get(_admin_url("change", debtor.pk))

    assert response.status_code == 200
    html = response.content.decode()
    assert f'<option value="einvoicing:{bavel.pk}">Bavel</option>' in html


def test_admin_saves_an_integration_as_send_mode(admin_client, debtor, bavel):
    data = _admin_data(admin_client, debtor)
    data.update(send_mode=f"einvoicing:{bavel.pk}", einvoicing_id="732829320")

    response = admin_client.post(_admin_url("change", debtor.pk), data)

    assert response.status_code == 302
    debtor.refresh_from_db()
    assert (debtor.send_mode, debtor.integration) == ("einvoicing", bavel)
    listed = admin_client.get(_admin_url("changelist")).content.decode()
    assert "Bavel" in listed


def test_admin_shows_field_errors(admin_client, debtor, bavel):
    data = _admin_data(admin_client, debtor)
    data.update(send_mode=f"einvoicing:{bavel.pk}", einvoicing_id="")

    response = admin_client.post(_admin_url("change", debtor.pk), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"einvoicing_id": [NEEDS_ID]}


def test_admin_refuses_to_move_a_debtor_away_from_its_integration_s_establishment(
    admin_client, debtor, bavel
):
    _set(debtor, send_mode=SendMode.EINVOICING, integration=bavel, einvoicing_id="732829320")
    data = _admin_data(admin_client, debtor)
    data.update(establishment=str(EstablishmentFactory().pk))

    response = admin_client.post(_admin_url("change", debtor.pk), data)

    assert response.context["adminform"].form.errors == {
        "send_mode": ["This integration belongs to another establishment."]
    }


def test_admin_add_form_groups_integrations_by_establishment(admin_client, bavel):
    other = EstablishmentFactory(name="Cancún Beach")
    _integration(other, name="Sandbox", provider=Provider.SANDBOX)

    response = admin_client.get(_admin_url("add"))

    html = response.content.decode()
    assert response.status_code == 200
    assert '<optgroup label="Cancún Beach">' in html
    assert f'<option value="einvoicing:{bavel.pk}">Bavel</option>' in html


def test_admin_add_with_an_integration(admin_client, bavel):
    response = admin_client.post(
        _admin_url("add"),
        {
            "establishment": bavel.establishment.pk,
            "account_number": "C-200",
            "name": "Agence Numérique",
            "send_mode": f"einvoicing:{bavel.pk}",
            "einvoicing_id": "732829320",
            "country": "FR",
        },
    )

    assert response.status_code == 302
    created = DebtorAccount.objects.get(account_number="C-200")
    assert (created.send_mode, created.integration) == ("einvoicing", bavel)


def test_admin_add_refuses_another_establishment_s_integration(admin_client, bavel):
    response = admin_client.post(
        _admin_url("add"),
        {
            "establishment": EstablishmentFactory().pk,
            "account_number": "C-201",
            "name": "Agence",
            "send_mode": f"einvoicing:{bavel.pk}",
            "einvoicing_id": "1",
        },
    )

    assert response.context["adminform"].form.errors == {
        "send_mode": ["This integration belongs to another establishment."]
    }
    assert not DebtorAccount.objects.filter(account_number="C-201").exists()
