"""Settings for every environment, read from environment variables with django-environ.

Every variable has an embedded default so that a fresh clone runs the demo with nothing
configured: SQLite in var/, emails written as .eml files to var/mail/, Celery tasks run
in-process. `.env.example` lists them all; production sets them (docker-compose.yml).
"""

from pathlib import Path

import environ
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# The embedded secret only serves the local demo; DEBUG=False refuses to start with it.
_DEMO_SECRET_KEY = "demo-only-insecure-secret-key-change-me"
SECRET_KEY = env.str("SECRET_KEY", default=_DEMO_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=True)
if not DEBUG and SECRET_KEY == _DEMO_SECRET_KEY:
    raise environ.ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "simple_history",
    "establishments",
    "debtors",
    "invoicing",
    "dispatch",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files under gunicorn without a separate web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Records who made each change kept by django-simple-history.
    "simple_history.middleware.HistoryRequestMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded database: take the write lock when a transaction starts and wait for
    # it, instead of failing with "database is locked" when a worker runs beside the web.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# French is the default; English and Spanish are provided.
LANGUAGE_CODE = "fr"
LANGUAGES = [("fr", _("French")), ("en", _("English")), ("es", _("Spanish"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
# Stored instants are UTC; each establishment converts to its own time zone.
TIME_ZONE = "UTC"
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]

# The accountants' pages live under /billing/; the admin keeps its own login.
LOGIN_URL = "billing:login"
LOGIN_REDIRECT_URL = "billing:debtor_list"
LOGOUT_REDIRECT_URL = "billing:login"
STATIC_ROOT = env.path("STATIC_ROOT", default=str(VAR_DIR / "static"))
# Compressed but not manifest storage: a manifest would make every page fail (tests, runserver)
# until collectstatic has run.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Email -----------------------------------------------------------------------------
# EMAIL_URL: smtp://user:password@host:587/?tls=True, or filemail:///var/mail for .eml files.
EMAIL_URL = env.str("EMAIL_URL", default="filemail:///var/mail")
vars().update(env.email_url_config(EMAIL_URL))
if EMAIL_URL.startswith("filemail:"):
    # One standard .eml file per message instead of Django's concatenated .log files.
    EMAIL_BACKEND = "dispatch.mail.EmlFileBackend"
    # django-environ drops the path's leading slash (filemail:///var/mail gives "var/mail"):
    # read it relative to the project, not to whatever directory the process started in;
    # filemail:////srv/mail (four slashes) stays absolute.
    EMAIL_FILE_PATH = str(BASE_DIR / EMAIL_FILE_PATH)  # noqa: F821 (set by email_url_config)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="facturation@hotel-billing.localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Celery ----------------------------------------------------------------------------
# Without a broker the demo runs tasks in-process; production sets redis://.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://")
CELERY_TASK_ALWAYS_EAGER = env.bool(
    "CELERY_TASK_ALWAYS_EAGER", default=CELERY_BROKER_URL.startswith("memory://")
)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
# A worker that dies must not lose its message: acknowledge after the task, not before.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=120)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=180)
# Redis re-delivers an unacknowledged message after this many seconds; it must exceed
# the longest task so a slow task is not delivered twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# --- The module -------------------------------------------------------------------------
BILLING = {
    # Base URL used in links and Message-ID domains of outgoing letters.
    "MESSAGE_ID_DOMAIN": env.str("MESSAGE_ID_DOMAIN", default="hotel-billing.localhost"),
    # Transient send failures are retried at most this many attempts in all.
    "MAX_SEND_ATTEMPTS": env.int("MAX_SEND_ATTEMPTS", default=6),
    # First retry delay in seconds, doubled at each attempt, capped below.
    "RETRY_BASE_SECONDS": env.int("RETRY_BASE_SECONDS", default=60),
    "RETRY_MAX_SECONDS": env.int("RETRY_MAX_SECONDS", default=3600),
}

# Fernet keys that encrypt integration credentials at rest, newest first (rotation: put
# the new key first, keep the old ones until `manage.py rotate_credentials` has run).
# The demo derives one from SECRET_KEY; production must set them.
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])
if not FIELD_ENCRYPTION_KEYS and not DEBUG:
    raise environ.ImproperlyConfigured("FIELD_ENCRYPTION_KEYS must be set when DEBUG is off.")

# E-invoicing platforms: HTTP timeouts (connect, read) in seconds, and where the sandbox
# connector writes documents when an integration names no folder.
EINVOICING_HTTP_TIMEOUT = (
    env.float("EINVOICING_CONNECT_TIMEOUT", default=5.0),
    env.float("EINVOICING_READ_TIMEOUT", default=30.0),
)
EINVOICING_SANDBOX_DIR = env.str("EINVOICING_SANDBOX_DIR", default=str(VAR_DIR / "einvoices"))
# Webhook signatures older or newer than this are refused (replay protection).
WEBHOOK_TOLERANCE_SECONDS = env.int("WEBHOOK_TOLERANCE_SECONDS", default=300)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
}
