"""Encryption at rest of integration secrets (Fernet, keys from the environment)."""

import base64
import hashlib
import json
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretError(Exception):
    """A stored secret cannot be read with the configured keys."""


@cache
def _fernet() -> MultiFernet:
    keys = list(settings.FIELD_ENCRYPTION_KEYS)
    if not keys:
        # Embedded demo only (settings refuse this outside DEBUG): a key derived from
        # SECRET_KEY, so a fresh clone can store credentials without configuration.
        digest = hashlib.sha256(f"field-encryption:{settings.SECRET_KEY}".encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return MultiFernet([Fernet(key) for key in keys])


def encrypt_json(value: dict) -> str:
    if not value:
        return ""
    return _fernet().encrypt(json.dumps(value, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict:
    if not token:
        return {}
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken as exc:
        raise SecretError("stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS") from exc


def encrypt_text(value: str) -> str:
    return encrypt_json({"value": value}) if value else ""


def decrypt_text(token: str) -> str:
    return decrypt_json(token).get("value", "")


def rotate(token: str) -> str:
    """Re-encrypt with the newest key."""
    return _fernet().rotate(token.encode()).decode() if token else ""
