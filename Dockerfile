# The production image: one image for web (gunicorn), worker and beat (celery), and the
# one-shot migrate service. See docker-compose.yml.
FROM python:3.11-slim-bookworm

# The code runs from /app (PYTHONPATH): settings find templates/, locale/ and var/ next to it.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.base \
    PYTHONPATH=/app

# WeasyPrint's libraries and fonts, and gettext for compilemessages.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core gettext \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, from the pinned list in pyproject.toml, so that a code change does not
# reinstall them. The project itself is not installed into site-packages: it runs from /app.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .

# Built with the embedded defaults: neither step touches the database or needs a secret.
RUN if find locale -name '*.po' -print -quit | grep -q .; then \
        python manage.py compilemessages --ignore=.venv; \
    fi \
    && python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p var/mail \
    && chown -R app:app var

USER app

EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
