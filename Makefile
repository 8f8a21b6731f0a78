# Latchkey: the commands a new user and CI need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test test-embedded test-services lint format stack bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	@echo ""
	@echo "  Latchkey is starting on http://localhost:$(PORT)/ (embedded defaults: SQLite, local memory, eager tasks, console email)"
	@echo "  Sign in as the demo owner: open http://localhost:$(PORT)/login/ and enter owner@demo.latchkey.test"
	@echo "  The sign-in link is printed in this terminal (console email). Passkeys need the localhost address."
	@echo ""
	SITE_URL="$${SITE_URL:-http://localhost:$(PORT)}" $(PY) manage.py runserver $(HOST):$(PORT)

# The whole suite on the embedded defaults, then again on PostgreSQL + Redis when configured.
test: $(STAMP)
	$(MAKE) --no-print-directory test-embedded
	@if [ -n "$$DATABASE_URL" ] && [ -n "$$REDIS_URL" ]; then \
		$(MAKE) --no-print-directory test-services; \
	else \
		echo "DATABASE_URL/REDIS_URL not set: skipped the PostgreSQL + Redis run."; \
	fi

test-embedded: $(STAMP)
	@echo "== test suite on the embedded defaults (SQLite, local memory) =="
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest $(PYTEST_ARGS)

test-services: $(STAMP)
	@echo "== test suite on PostgreSQL ($$DATABASE_URL) and Redis ($$REDIS_URL) =="
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	env -u DATABASE_URL -u REDIS_URL $(PY) manage.py makemigrations --check --dry-run

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# The production shape on this machine, in the foreground: PostgreSQL and Redis (Debian's
# packages, data under var/stack/, loopback), gunicorn with several workers, a Celery
# worker and Celery beat. Ctrl-C stops everything it started.
stack: $(STAMP)
	bash tools/stack.sh

# Throughput of GET /api/v1/me (one key; 200 keys of Growth orgs) and the gateway against
# GET /api/v1/ping on the stack, and
# key verification with 1,000 vs 1,000,000 keys. Figures: docs/performance.md.
bench: $(STAMP)
	$(PY) tools/bench.py
