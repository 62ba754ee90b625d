from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from establishments.selectors import establishment_list_for_user
from tests.factories import EstablishmentFactory

pytestmark = pytest.mark.django_db


def test_create_accountant_gives_group_and_establishments(django_user_model):
    paris = EstablishmentFactory(code="paris")
    EstablishmentFactory(code="cancun")
    out = StringIO()
    call_command("create_accountant", "marie", "--establishment", "paris", stdout=out)
    marie = django_user_model.objects.get(username="marie")
    assert not marie.has_usable_password()
    assert list(establishment_list_for_user(user=marie)) == [paris]
    assert marie.has_perm("debtors.change_debtoraccount")
    assert "changepassword marie" in out.getvalue()


def test_create_accountant_refuses_unknown_establishments(django_user_model):
    with pytest.raises(CommandError, match="nowhere"):
        call_command("create_accountant", "marie", "--establishment", "nowhere")
    assert not django_user_model.objects.filter(username="marie").exists()
