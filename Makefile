# The two commands of the README, and a few conveniences.
VENV ?= .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app wsgi

.PHONY: demo test lint install clean

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

## Run the whole test suite (on SQLite; see README for PostgreSQL).
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .hypothesis
