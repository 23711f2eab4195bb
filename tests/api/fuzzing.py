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

PREFIX = "/api/v1"

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

# One of each record, so that reads, filters and the stateful phase find something.
SEED: tuple[tuple[str, dict[str, Any]], ...] = (
    ("/entities/ent-1", {"name": "Northwind Cloud", "support_email": "billing@northwind.example"}),
    ("/accounts/acc-1", {"name": "Acme Holdings"}),
    (
        "/bill-groups/bg-1",
        {
            "account": "acc-1",
            "entity": "ent-1",
            "name": "Acme EU",
            "currency": "EUR",
            "billing_frequency": "monthly",
            "contract_start": "2026-01-01",
        },
    ),
    (
        "/bill-groups/bg-1/contacts/billing",
        {"name": "Accounts Payable", "line1": "1 Main Street", "city": "Dublin", "country": "IE"},
    ),
    ("/products/prod-1", {"entity": "ent-1", "name": "Platform seat"}),
    (
        "/subscriptions/sub-1",
        {
            "bill_group": "bg-1",
            "status": "active",
            "period": "monthly",
            "start_date": "2026-01-01",
            "items": [{"product": "prod-1", "quantity": 2, "unit_price_minor": 2500}],
        },
    ),
    (
        "/invoices/inv-1",
        {
            "bill_group": "bg-1",
            "number": "INV-1",
            "status": "open",
            "issue_date": "2026-11-01",
            "due_date": "2026-12-01",
            "lines": [
                {
                    "description": "Seats",
                    "quantity": "2",
                    "unit_price_minor": 2500,
                    "amount_minor": 5000,
                }
            ],
        },
    ),
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
        key, _row = apikeys.create(portal_db.session(), "schemathesis", {"read", "write"}, "fuzz")
        portal_db.session().commit()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    for path, body in SEED:
        response = client.put(
            PREFIX + path, data=json.dumps(body), headers=headers, content_type="application/json"
        )
        assert response.status_code == 201, (path, response.get_json())
    return app, key
