"""Test settings: the real PostgreSQL, Redis and SMTP services of the machine.

`make test` starts them when they are stopped. TEST_DATABASE_URL and TEST_REDIS_URL point
elsewhere when needed.
"""

import environ

from config.settings.base import *  # noqa: F403
from config.settings.base import BASE_DIR, BILLING

_env = environ.Env()

DATABASES = {
    "default": _env.db(
        "TEST_DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/hotel_billing"
    )
}
TEST_REDIS_URL = _env.str("TEST_REDIS_URL", default="redis://127.0.0.1:6379/15")

# Each test chooses its own transport; the default keeps mail in memory (locmem) and
# tests that need a real SMTP server use the aiosmtpd fixture.
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
EMAIL_FILE_PATH = str(BASE_DIR / "var" / "test-mail")
CELERY_BROKER_URL = TEST_REDIS_URL
CELERY_TASK_ALWAYS_EAGER = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
BILLING = {**BILLING, "RETRY_BASE_SECONDS": 60}
LANGUAGE_CODE = "fr"

# Tests run without collectstatic: whitenoise looks files up per request instead of scanning
# a STATIC_ROOT that does not exist (and warning about it at every request).
WHITENOISE_AUTOREFRESH = True
