# The two commands: `make demo` (everything on an embedded SQLite database, letters written
# to var/mail/) and `make test` (the whole suite against real PostgreSQL and Redis).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# Marks the last install; rebuilt whenever pyproject.toml changes.
INSTALL_STAMP := $(VENV)/.installed-from-pyproject
# The demo always runs on the default settings, whatever the calling shell exported.
MANAGE := DJANGO_SETTINGS_MODULE=config.settings.base $(PY) manage.py

# What WeasyPrint needs to render PDFs, and gettext for compilemessages.
SYSTEM_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core gettext
# The browser tests drive Debian's chromium (never a downloaded browser); only `make test`
# needs it, so `make demo` does not install it.
TEST_SYSTEM_PACKAGES := $(SYSTEM_PACKAGES) chromium

# Created by `manage.py seed_demo`, which prints them too.
DEMO_USER := demo
DEMO_PASSWORD := demo-billing-2026
SERVE_ADDRESS := 127.0.0.1:8000

# Extra arguments for pytest, e.g. `make test PYTEST_ARGS="tests/dispatch -x"`.
PYTEST_ARGS ?=

# Prints where Django sends email, as "<kind> <where>", for the demo's closing summary.
define MAIL_DESTINATION_PY
import django
django.setup()
from django.conf import settings
url = settings.EMAIL_URL
if url.startswith("filemail:"):
    print("file", settings.EMAIL_FILE_PATH)
elif url.startswith("smtp"):
    print("smtp", f"{settings.EMAIL_HOST}:{settings.EMAIL_PORT}")
else:
    print("other", settings.EMAIL_BACKEND)
endef
export MAIL_DESTINATION_PY

.PHONY: help system-deps test-system-deps install-debian-packages install .venv messages demo serve services test lint

help:
	@echo "make demo      install everything, seed demo hotels on SQLite, send tonight's letters"
	@echo "make serve     open the admin on http://$(SERVE_ADDRESS)/admin/ (after make demo)"
	@echo "make test      start PostgreSQL and Redis if stopped, run the whole test suite"
	@echo "make lint      ruff check and ruff format --check"
	@echo "make services  check PostgreSQL and Redis for the tests, start local ones that are stopped"

# Installs only the Debian packages that are missing, so a machine that has them needs no root.
system-deps:
	@$(MAKE) --no-print-directory install-debian-packages PACKAGES="$(SYSTEM_PACKAGES)"

test-system-deps:
	@$(MAKE) --no-print-directory install-debian-packages PACKAGES="$(TEST_SYSTEM_PACKAGES)"

install-debian-packages:
	@if ! command -v dpkg-query >/dev/null; then \
	    echo "system-deps: not a Debian system; install by hand the equivalents of: $(PACKAGES)"; \
	    exit 0; \
	fi; \
	missing=(); \
	for package in $(PACKAGES); do \
	    status=$$(dpkg-query -W -f='$${Status}' "$$package" 2>/dev/null || true); \
	    [[ $$status == "install ok installed" ]] || missing+=("$$package"); \
	done; \
	if (( $${#missing[@]} )); then \
	    sudo=""; [[ $$(id -u) -eq 0 ]] || sudo="sudo"; \
	    echo "system-deps: installing $${missing[*]}"; \
	    $$sudo apt-get update -qq; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$${missing[@]}"; \
	fi

install: $(INSTALL_STAMP)
.venv: $(INSTALL_STAMP)

$(INSTALL_STAMP): pyproject.toml
	@is_311='import sys; sys.exit(sys.version_info[:2] != (3, 11))'; \
	if [[ -x $(PY) ]] && ! $(PY) -c "$$is_311"; then \
	    echo "install: $(VENV) is not Python 3.11; recreating it"; rm -rf $(VENV); \
	fi; \
	if [[ ! -x $(PY) ]]; then \
	    python=$$(command -v python3.11 || true); \
	    if [[ -z $$python ]] && command -v python3 >/dev/null && python3 -c "$$is_311"; then \
	        python=$$(command -v python3); \
	    fi; \
	    [[ -n $$python ]] || { echo "install: Python 3.11 is required (python3.11, or python3 being 3.11)" >&2; exit 1; }; \
	    echo "install: creating $(VENV) with $$python"; \
	    "$$python" -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# locale/ is filled by the translators; until it holds a .po file there is nothing to compile.
messages: system-deps install
	@if find locale -name '*.po' -print -quit 2>/dev/null | grep -q .; then \
	    $(MANAGE) compilemessages --ignore=$(VENV); \
	else \
	    echo "messages: no .po file in locale/ yet, nothing to compile"; \
	fi

demo: system-deps install messages
	@mkdir -p var
	$(MANAGE) migrate --noinput
	$(MANAGE) seed_demo
	@read -r kind where < <(DJANGO_SETTINGS_MODULE=config.settings.base $(PY) -c "$$MAIL_DESTINATION_PY"); \
	count_eml() { find "$$where" -maxdepth 1 -name '*.eml' 2>/dev/null | wc -l; }; \
	[[ $$kind == file ]] && before=$$(count_eml) || before=0; \
	echo '$(MANAGE) send_pending_invoices'; \
	$(MANAGE) send_pending_invoices; \
	echo; \
	echo "=== Demo ready ==="; \
	case $$kind in \
	    file) total=$$(count_eml); \
	          echo "Emails: $$((total - before)) new .eml file(s) in $$where/, $$total in all"; \
	          echo "        (open one in a mail client: HTML and text bodies, the PDF letter attached)";; \
	    smtp) echo "Emails: handed to the SMTP server at $$where (EMAIL_URL)";; \
	    *)    echo "Emails: sent through $$where (EMAIL_URL)";; \
	esac; \
	einvoices=$$(find var/einvoices -name '*.receipt.json' 2>/dev/null | wc -l); \
	echo "E-invoices: $$einvoices submitted to the sandbox platform, in var/einvoices/ (each PDF with its .receipt.json)"; \
	echo "Pages:  make serve, then http://$(SERVE_ADDRESS)/billing/ with user comptable, password $(DEMO_PASSWORD)"; \
	echo "Admin:  make serve, then http://$(SERVE_ADDRESS)/admin/ with user $(DEMO_USER), password $(DEMO_PASSWORD)"; \
	echo "Again:  make demo sends nothing new for the same business date"

serve: system-deps install messages
	@mkdir -p var
	$(MANAGE) migrate --noinput
	@echo "Accountants' pages: http://$(SERVE_ADDRESS)/billing/  user comptable (Paris) or direction, password $(DEMO_PASSWORD)"
	@echo "Admin: http://$(SERVE_ADDRESS)/admin/  user $(DEMO_USER), password $(DEMO_PASSWORD) (created by make demo)"
	$(MANAGE) runserver $(SERVE_ADDRESS)

services:
	@bash scripts/services.sh

# pytest takes config.settings.test from pyproject.toml; an exported DJANGO_SETTINGS_MODULE
# would override it. Exit code 5 means no test was collected, which is not a failure of
# the services or the code.
test: test-system-deps install messages services
	@rc=0; env -u DJANGO_SETTINGS_MODULE $(VENV)/bin/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [[ $$rc -eq 5 ]]; then echo "test: pytest collected no tests"; rc=0; fi; \
	exit $$rc

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
