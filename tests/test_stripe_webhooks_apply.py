"""A verified Stripe webhook is applied once: `portal.actions.paying.apply_gateway_event`
behind POST /payments/webhooks/stripe."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.models import AttemptState, GatewayEventSeen, PaymentAttempt, PaymentAttemptLine
from tests.factories import make_bill_group, make_invoice, make_payment_method
from tests.settings import change_settings
from tests.stripe_helpers import (
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


def pending_attempt(db: Session, reference: str) -> PaymentAttempt:
    """An attempt whose PaymentIntent waited for 3-D Secure, for one open invoice."""
    group = make_bill_group(db)
    invoice = make_invoice(db, group)
    method = make_payment_method(db, group, gateway="stripe", gateway_token="pm_hook")
    attempt = PaymentAttempt(
        bill_group=group,
        key="attempt-key-" + reference,
        state=AttemptState.REQUIRES_ACTION,
        amount_minor=invoice.total_minor - invoice.amount_paid_minor,
        currency=invoice.currency,
        payment_method=method,
        created_by="ann@example.com",
        expires_at=dt.datetime(2099, 1, 1, tzinfo=dt.UTC),
        gateway="stripe",
        gateway_reference=reference,
    )
    attempt.lines.append(PaymentAttemptLine(invoice=invoice, amount_minor=attempt.amount_minor))
    db.add(attempt)
    db.commit()
    return attempt


def test_a_signed_payment_intent_succeeded_is_applied_once(
    stripe_app: Flask, client: FlaskClient, db: Session
) -> None:
    attempt = pending_attempt(db, "pi_applied")
    obj = intent_object(
        "pi_applied", amount=attempt.amount_minor, currency=attempt.currency.lower()
    )
    body = event_body("payment_intent.succeeded", obj, "evt_applied")
    headers = {"Stripe-Signature": sign(body), "Content-Type": "application/json"}

    first = client.post(URL, data=body, headers=headers)
    assert first.status_code == 200
    assert first.get_json() == {"received": True, "outcome": "applied"}
    db.expire_all()
    assert db.get(PaymentAttempt, attempt.id).state == AttemptState.SUCCEEDED  # type: ignore[union-attr]
    seen = db.scalars(select(GatewayEventSeen)).all()
    assert [(row.gateway, row.event_id) for row in seen] == [("stripe", "evt_applied")]

    # Stripe retries a delivery it thinks failed: the same event id, signed anew.
    replay = client.post(URL, data=body, headers={**headers, "Stripe-Signature": sign(body)})
    assert replay.status_code == 200
    assert replay.get_json() == {"received": True, "outcome": "duplicate"}
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(GatewayEventSeen)) == 1
    payments_after = db.get(PaymentAttempt, attempt.id)
    assert payments_after is not None and payments_after.state == AttemptState.SUCCEEDED


def test_an_event_for_no_attempt_is_unknown(
    stripe_app: Flask, client: FlaskClient, db: Session
) -> None:
    body = event_body("payment_intent.succeeded", intent_object("pi_nobody"), "evt_nobody")
    response = client.post(URL, data=body, headers={"Stripe-Signature": sign(body)})
    assert response.status_code == 200
    assert response.get_json()["outcome"] == "unknown"
