"""Services and selectors of e-invoicing integrations (secrets in, never out)."""

from django.db import transaction

from dispatch import crypto
from dispatch.models import Integration


@transaction.atomic
def integration_set_secrets(
    *,
    integration: Integration,
    credentials: dict | None = None,
    webhook_secret: str | None = None,
) -> Integration:
    """Replace the stored secrets given (None keeps the current one), encrypted."""
    fields = []
    if credentials is not None:
        integration.credentials_encrypted = crypto.encrypt_json(credentials)
        fields.append("credentials_encrypted")
    if webhook_secret is not None:
        integration.webhook_secret_encrypted = crypto.encrypt_text(webhook_secret)
        fields.append("webhook_secret_encrypted")
    if fields and integration.pk:
        integration.save(update_fields=[*fields, "updated_at"])
    elif fields:
        integration.save()
    return integration


def integration_credentials(*, integration: Integration) -> dict:
    return crypto.decrypt_json(integration.credentials_encrypted)


def integration_webhook_secret(*, integration: Integration) -> str:
    return crypto.decrypt_text(integration.webhook_secret_encrypted)


def integrations_rotate_keys() -> int:
    """Re-encrypt every stored secret with the newest key; returns how many were rewritten."""
    count = 0
    for integration in Integration.objects.select_for_update().iterator():
        integration.credentials_encrypted = crypto.rotate(integration.credentials_encrypted)
        integration.webhook_secret_encrypted = crypto.rotate(integration.webhook_secret_encrypted)
        integration.save(update_fields=["credentials_encrypted", "webhook_secret_encrypted"])
        count += 1
    return count
