"""What the schemathesis runs share, in the suite (tests/api/test_schemathesis.py) and at
length (bench/api_fuzz.py): the app's settings for a run, its seed records, and a key.

A run sends thousands of requests with one key, and the ignored_auth check sends some
with none: the budgets are raised so that the run tests the API, not the rate limits
(tests/api/test_api.py tests those)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Flask

from portal import apikeys
from portal import db as portal_db
from portal.app import create_app
from portal.db import Base
from tests.api.conftest import PREFIX, bill_group_records

FUZZ_CONFIG: dict[str, Any] = {
    "TESTING": True,
    "SECRET_KEY": "fuzz-secret-key-" + "x" * 32,
    "PORTAL_BASE_URL": "https://portal.example.test",
    "SERVER_NAME": None,
    "TRUSTED_HOSTS": [],
    "API_LIMIT_PER_KEY": "1000000 per minute",
    "API_AUTH_FAILURE_LIMIT": "1000000 per minute",
    # No webhook endpoint is registered; nothing is delivered anywhere.
    "WORKER_IN_PROCESS": False,
    "MAIL_TRANSPORT": "console",
}

# One of each record (tests/api/conftest.py's bill group, and a payment method and a
# payment), so that reads, filters and the stateful phase find something.
SEED: tuple[tuple[str, dict[str, Any]], ...] = (
    *bill_group_records(),
    (
        "/payment-methods/pm-1",
        {
            "bill_group": "bg-1",
            "type": "card",
            "last4": "4242",
            "gateway": "sandbox",
            "gateway_token": "tok_visa",
        },
    ),
    (
        "/payments/pay-1",
        {
            "bill_group": "bg-1",
            "amount_minor": 1000,
            "currency": "EUR",
            "status": "succeeded",
            "received_at": "2026-11-15T10:00:00Z",
        },
    ),
)


def fuzz_app(database: Path, **overrides: Any) -> tuple[Flask, str]:
    """A portal on a fresh SQLite file with the seed records, and a read-write key."""
    app = create_app({**FUZZ_CONFIG, "DATABASE_URL": f"sqlite:///{database}", **overrides})
    with app.app_context():
        Base.metadata.create_all(portal_db.engine())
        key, _row = apikeys.create(
            portal_db.session(), "schemathesis", {"read", "write", "sessions"}, "fuzz"
        )
        portal_db.session().commit()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    for path, body in SEED:
        response = client.put(
            PREFIX + path, data=json.dumps(body), headers=headers, content_type="application/json"
        )
        assert response.status_code == 201, (path, response.get_json())
    return app, key
