# The two commands of the README, and a few conveniences.
VENV ?= .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app wsgi

.PHONY: demo test test-e2e lint wheel-smoke install clean schemathesis

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## Run the portal with demo data on SQLite (http://127.0.0.1:5000), no outside services.
demo: install
	$(FLASK) --debug db upgrade
	$(FLASK) --debug demo
	$(FLASK) --debug run --port 5000

## Run the whole test suite (on SQLite; see README for PostgreSQL). It includes the
## browser tests in tests/e2e, which skip locally without Chromium or `npm ci`.
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund

## Only the browser tests: Debian's Chromium (apt-get install chromium) and axe-core.
test-e2e: install node_modules/.package-lock.json
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

## The long schemathesis run against the API's own document: every check, every phase
## (stateful included), SCHEMATHESIS_EXAMPLES per operation; prints requests and failures
## by check. The suite runs a bounded slice (tests/api/test_schemathesis.py).
SCHEMATHESIS_EXAMPLES ?= 500
schemathesis: install
	$(PY) bench/api_fuzz.py --max-examples $(SCHEMATHESIS_EXAMPLES) $(SCHEMATHESIS_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## Build the wheel, install it into a fresh venv outside the checkout, migrate, load the
## demo and serve a few pages with gunicorn: the README's production path.
wheel-smoke:
	.ci/wheel-smoke

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .hypothesis .schemathesis node_modules artifacts
