from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from debtors.models import DebtorAccount, SendMode
from debtors.selectors import integration_list_for_send_mode
from debtors.services import debtor_validate_send_mode

# Choice values of the e-invoicing modes: one per integration, "einvoicing:<integration id>".
EINVOICING_PREFIX = f"{SendMode.EINVOICING}:"


def send_mode_value(*, send_mode: str, integration_id: int | None) -> str:
    if send_mode == SendMode.EINVOICING and integration_id:
        return f"{EINVOICING_PREFIX}{integration_id}"
    return send_mode


class SendModeField(forms.ChoiceField):
    """None, Email, or one integration, named after it (e.g. "Bavel").

    Any integration id passes here, not only those offered, so that the send-mode rules can
    say what is wrong with it (inactive, another establishment) instead of "invalid choice".
    """

    def valid_value(self, value):
        text = str(value)
        if text.startswith(EINVOICING_PREFIX) and text.removeprefix(EINVOICING_PREFIX).isdigit():
            return True
        return super().valid_value(value)


class DebtorSendModeForm(forms.ModelForm):
    """The send mode, contact email and e-invoicing id of a debtor, with their rules.

    The rules are `debtors.services.debtor_validate_send_mode`; the accountants' pages and
    the admin share them through this form.
    """

    send_mode = SendModeField(label=_("send mode"))
    # The model keeps a CharField so that imports can store a bad address and the run can
    # report it as `invalid_email`; people editing the account must type a valid one.
    contact_email = forms.EmailField(
        label=DebtorAccount._meta.get_field("contact_email").verbose_name,
        max_length=254,
        required=False,
    )

    class Meta:
        model = DebtorAccount
        fields = ["send_mode", "contact_email", "einvoicing_id"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance = self.instance
        self.establishment = instance.establishment if instance.establishment_id else None
        self.fields["send_mode"].choices = self._send_mode_choices()
        if instance.pk:
            self.initial["send_mode"] = send_mode_value(
                send_mode=instance.send_mode, integration_id=instance.integration_id
            )

    def _send_mode_choices(self) -> list:
        choices: list = [(SendMode.NONE.value, SendMode.NONE.label)]
        choices.append((SendMode.EMAIL.value, SendMode.EMAIL.label))
        integrations = list(integration_list_for_send_mode(establishment=self.establishment))
        if self.establishment is not None:
            choices += [(send_mode_value_of(i), i.name) for i in integrations]
        else:
            # A new account's establishment is chosen in the same form: every establishment's
            # integrations, grouped, and the rules check the pair on save.
            groups: dict = {}
            for integration in integrations:
                groups.setdefault(integration.establishment.name, []).append(
                    (send_mode_value_of(integration), integration.name)
                )
            choices += list(groups.items())
        current = self.instance.integration if self.instance.integration_id else None
        if current is not None and current not in integrations:
            # Still shown as it is, so that the page tells the truth; saving it again is
            # refused until another mode is chosen or the integration is reactivated.
            if not current.active:
                label = _("%(name)s (inactive)") % {"name": current.name}
            else:
                label = _("%(name)s (another establishment)") % {"name": current.name}
            choices.append((send_mode_value_of(current), label))
        return choices

    def _chosen_integration(self, value: str):
        from dispatch.models import Integration

        if not value.startswith(EINVOICING_PREFIX):
            return None
        pk = int(value.removeprefix(EINVOICING_PREFIX))
        integration = Integration.objects.filter(pk=pk).first()
        if integration is None:
            self.add_error("send_mode", _("This integration does not exist."))
        return integration

    def clean(self):
        cleaned = super().clean()
        value = cleaned.get("send_mode")
        if value is None:
            return cleaned
        integration = self._chosen_integration(value)
        send_mode = SendMode.EINVOICING if value.startswith(EINVOICING_PREFIX) else value
        # The model stores the mode and the integration apart.
        cleaned["send_mode"] = send_mode
        self.instance.integration = integration
        if "send_mode" in self.errors:
            return cleaned
        establishment = (
            cleaned.get("establishment") if "establishment" in self.fields else self.establishment
        )
        if establishment is None:
            return cleaned
        contact_email = cleaned.get("contact_email")
        if contact_email is None:
            contact_email = self.data.get(self.add_prefix("contact_email"), "")
        try:
            debtor_validate_send_mode(
                establishment=establishment,
                send_mode=send_mode,
                integration=integration,
                contact_email=contact_email,
                einvoicing_id=cleaned.get("einvoicing_id", self.instance.einvoicing_id) or "",
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                # A field already refused (a malformed email) keeps its first message only.
                if field in self.errors:
                    continue
                self.add_error(field if field in self.fields else None, messages)
        return cleaned


def send_mode_value_of(integration) -> str:
    return send_mode_value(send_mode=SendMode.EINVOICING, integration_id=integration.pk)
