import pytest
from django.conf import settings as django_settings

# Connection attempts give up quickly: an unreachable service should stop the run at
# once with a message, not after the default TCP timeout of every test.
SERVICE_CHECK_TIMEOUT_SECONDS = 5


def _postgres_unreachable() -> str | None:
    """Return why the PostgreSQL server of the test settings cannot be used, or None."""
    import psycopg

    db = django_settings.DATABASES["default"]
    if "postgresql" not in db["ENGINE"]:
        return None
    where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}"
    try:
        # The maintenance database, as Django uses to create the test database: the
        # configured one need not exist yet.
        with psycopg.connect(
            dbname="postgres",
            host=db.get("HOST") or None,
            port=db.get("PORT") or None,
            user=db.get("USER") or None,
            password=db.get("PASSWORD") or None,
            connect_timeout=SERVICE_CHECK_TIMEOUT_SECONDS,
        ):
            return None
    except psycopg.OperationalError as exc:
        return (
            f"PostgreSQL at {where} is not reachable: run `make services` (or set "
            f"TEST_DATABASE_URL to a reachable server). Error: {str(exc).strip()}"
        )


def _redis_unreachable() -> str | None:
    """Return why the Redis server of the test settings cannot be used, or None."""
    import redis

    url = django_settings.TEST_REDIS_URL
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=SERVICE_CHECK_TIMEOUT_SECONDS,
        socket_timeout=SERVICE_CHECK_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return (
            f"Redis at {url} is not reachable: run `make services` (or set "
            f"TEST_REDIS_URL to a reachable server). Error: {exc}"
        )
    finally:
        client.close()


def pytest_sessionstart(session):
    # The suite runs against the real services; a missing one is an error to fix, never a
    # reason to skip tests.
    problems = [p for p in (_postgres_unreachable(), _redis_unreachable()) if p]
    if problems:
        pytest.exit("\n".join(problems), returncode=2)


@pytest.fixture(autouse=True)
def _media_and_mail(settings, tmp_path):
    settings.EMAIL_FILE_PATH = str(tmp_path / "mail")


@pytest.fixture(scope="session")
def httpserver_listen_address():
    # pytest-httpserver's default "localhost" may resolve to ::1; tests talk to 127.0.0.1.
    return ("127.0.0.1", 0)
