"""Generated requests to every operation of the API's own document, and stateful runs
along its links, with every schemathesis check and ours (tests/api/schemathesis_hooks.py):
no 5xx, only documented statuses, headers and shapes, schema-invalid requests refused,
schema-valid ones refused only for reasons no schema can state.

Bounded, so that the suite stays quick (about a minute): a few examples per operation,
derandomized, on one seeded SQLite database for the module. `make schemathesis`
(bench/api_fuzz.py) is the long run of the same.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis import GenerationMode

import tests.api.schemathesis_hooks as hooks
from api.openapi import document
from tests.api.fuzzing import PREFIX, fuzz_app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_PER_OPERATION = 12
STATEFUL_RUNS = 15
STATEFUL_STEPS = 8
BOUNDED = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    app, key = fuzz_app(Path(tmp_path_factory.mktemp("schemathesis")) / "portal.db")
    yield app, key
    from portal import db as portal_db

    with app.app_context():
        portal_db.engine().dispose()


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[Flask, str]) -> Any:
    """The served document, with schemathesis.toml's settings (the hooks module, the
    statuses left to our check) and the key as a configured header, so that the checks
    know it is a real credential (ignored_auth tries requests without it)."""
    app, key = fuzzed
    with (ROOT / "schemathesis.toml").open("rb") as file:
        config = tomllib.load(file)
    config["headers"] = {"Authorization": f"Bearer {key}"}
    return schemathesis.openapi.from_wsgi(
        f"{PREFIX}/openapi.json", app, config=schemathesis.Config.from_dict(config)
    )


# One test per documented operation (the document needs no app to be built).
OPERATIONS = [(method.upper(), path) for path, ops in document()["paths"].items() for method in ops]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_as_documented(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @BOUNDED
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate()

    run()


def test_the_stateful_phase_follows_the_links(api_schema: Any) -> None:
    """Sequences along the document's links (a bill group, then its contacts, rules and
    link; a rule, then its delete), every response checked."""
    assert api_schema.as_state_machine().bundles, "the document has no links to follow"

    run_state_machine_as_test(
        api_schema.as_state_machine(),
        settings=settings(BOUNDED, max_examples=STATEFUL_RUNS, stateful_step_count=STATEFUL_STEPS),
    )


def test_our_check_tells_a_refusal_the_schema_could_state_from_one_it_cannot() -> None:
    beyond = [
        (422, {"field": "bill_group", "message": "There is no bill group with external id 'x'."}),
        (422, {"field": "lines.0.product", "message": "There is no product with external id 'p'."}),
        (422, {"field": "vat_number", "message": "That is not a valid VAT number for Germany."}),
        (422, {"field": None, "message": "due_date is before issue_date."}),
        (400, {"field": "cursor", "message": "That cursor is not one this API gave out; ..."}),
    ]
    stateable = [
        (422, {"field": "name", "message": "Enter the name."}),
        (422, {"field": "currency", "message": "'EURO' is not an ISO 4217 currency code."}),
        (400, {"field": "name", "message": "Text in the body contains a NUL, ..."}),
        (400, {"field": None, "message": "The path, query string or form contains ..."}),
    ]
    assert all(hooks.refusal_beyond_the_schema(status, error) for status, error in beyond)
    assert not any(hooks.refusal_beyond_the_schema(status, error) for status, error in stateable)
