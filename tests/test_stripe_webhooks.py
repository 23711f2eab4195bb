"""POST /payments/webhooks/<gateway>: what is refused (a bad, missing or old signature, a
body that is not an event, another gateway's name) answers 400 or 404, is logged without
the body and applies nothing. Applying a verified event is the pay flow's
(tests/test_stripe_webhooks_apply.py)."""

from __future__ import annotations

import logging
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.models import GatewayEventSeen, Payment, PaymentAttempt
from tests.settings import change_settings
from tests.stripe_helpers import (
    WEBHOOK_SECRET,
    WEBHOOK_SETTINGS,
    WEBHOOK_URL,
    event_body,
    intent_object,
    sign,
)

URL = WEBHOOK_URL


@pytest.fixture
def stripe_app(app: Flask) -> Flask:
    change_settings(app, **WEBHOOK_SETTINGS)
    return app


def nothing_applied(db: Session) -> bool:
    counts = [
        db.scalar(select(func.count()).select_from(model))
        for model in (GatewayEventSeen, Payment, PaymentAttempt)
    ]
    return counts == [0, 0, 0]


def post(client: FlaskClient, body: bytes, signature: str | None, url: str = URL):  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return client.post(url, data=body, headers=headers)


def succeeded() -> bytes:
    return event_body("payment_intent.succeeded", intent_object("pi_hook"), "evt_hook")


@pytest.mark.parametrize(
    "case", ["no header", "another secret", "changed", "too old", "garbage", "signed garbage"]
)
def test_a_refused_webhook_is_400_logged_and_applies_nothing(
    stripe_app: Flask, client: FlaskClient, db: Session, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    body = succeeded()
    signature: str | None = {
        "no header": None,
        "another secret": sign(body, "whsec_not_ours"),
        "changed": sign(body + b" "),
        "too old": sign(body, at=int(time.time()) - 600),
        "garbage": "t=garbage",
        "signed garbage": None,
    }[case]
    if case == "signed garbage":
        body = b"{not json"
        signature = sign(body)
    with caplog.at_level(logging.INFO, logger="portal.gateway_webhooks"):
        response = post(client, body, signature)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "rejected"
    [line] = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert line.startswith("gateway webhook (stripe) rejected: ")
    assert WEBHOOK_SECRET not in caplog.text and "pi_hook" not in caplog.text
    assert "evt_hook" not in caplog.text
    assert nothing_applied(db)


def test_a_kind_the_portal_does_not_use_is_acknowledged(
    stripe_app: Flask, client: FlaskClient, db: Session
) -> None:
    """Signed, so no CSRF token is asked for; 200, so Stripe stops retrying it."""
    body = event_body("customer.created", {"id": "cus_1", "object": "customer"})
    response = post(client, body, sign(body))
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "outcome": "ignored"}
    assert nothing_applied(db)


@pytest.mark.parametrize("name", ["sandbox", "paypal", "Stripe"])
def test_another_gateways_name_is_404(
    stripe_app: Flask, client: FlaskClient, db: Session, name: str
) -> None:
    body = succeeded()
    response = post(client, body, sign(body), url=f"/payments/webhooks/{name}")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    assert nothing_applied(db)


def test_no_gateway_no_webhooks(app: Flask, client: FlaskClient, db: Session) -> None:
    change_settings(app, PAYMENT_GATEWAY="none")
    body = succeeded()
    assert post(client, body, sign(body), url="/payments/webhooks/none").status_code == 404
    assert post(client, body, sign(body)).status_code == 404


def test_the_sandbox_sends_none(app: Flask, client: FlaskClient, db: Session) -> None:
    body = succeeded()
    assert post(client, body, sign(body), url="/payments/webhooks/sandbox").status_code == 400
    assert nothing_applied(db)


def test_only_post(stripe_app: Flask, client: FlaskClient) -> None:
    assert client.get(URL).status_code == 405


def test_a_body_over_the_limit_is_413(stripe_app: Flask, client: FlaskClient, db: Session) -> None:
    body = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    response = post(client, body, sign(body))
    assert response.status_code == 413
    assert nothing_applied(db)


def test_bad_signatures_are_budgeted_per_client(
    stripe_app: Flask, client: FlaskClient, db: Session
) -> None:
    change_settings(stripe_app, GATEWAY_WEBHOOK_FAILURE_LIMIT="2 per 15 minutes")
    body = succeeded()
    good = event_body("customer.created", {"id": "cus_1"})
    for _ in range(5):  # valid ones are never counted
        assert post(client, good, sign(good)).status_code == 200
    assert post(client, body, "t=1,v1=00").status_code == 400
    assert post(client, body, "t=1,v1=00").status_code == 400
    refused = post(client, body, "t=1,v1=00")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    # From another client the budget is whole.
    other = client.post(
        URL,
        data=body,
        headers={"Stripe-Signature": "t=1,v1=00"},
        environ_base={"REMOTE_ADDR": "192.0.2.9"},
    )
    assert other.status_code == 400
    assert nothing_applied(db)
