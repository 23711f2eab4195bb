"""Paying in Stripe mode through the pages, against localstripe: a charge that
succeeds, one declined, and Stripe's 3-D Secure redirect, which the confirm's POST does
not follow off the portal (CSP form-action 'self' holds for its redirect too, so the
browser would refuse it): the outcome page links to Stripe's page as Stripe gave it, and
Stripe's way back (the return URL with its query) settles the attempt."""

from __future__ import annotations

import html
import re
import secrets
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import payments
from portal.config import settings_of
from portal.models import BillGroup, PaymentAttempt
from portal.payments import Charge, ChargeStatus
from tests.factories import make_invoice, make_payment_method
from tests.localstripe import LocalStripe
from tests.portal.pages_helpers import url
from tests.portal.test_paying_pages import invoice_state, pay, review
from tests.settings import change_settings
from tests.stripe_helpers import (
    DECLINED_ON_CHARGE,
    GOOD,
    THREE_D_SECURE,
    confirm_setup,
    gateway,
    press_3ds,
    stripe_settings,
)

pytestmark = pytest.mark.usefixtures("clock", "stripe_app")

ACTION_RE = re.compile(r'<a class="button" href="([^"]+)">Continue to the security check</a>')


@pytest.fixture
def stripe_app(app: Flask, localstripe: LocalStripe) -> Flask:
    change_settings(app, **stripe_settings(localstripe))
    return app


@pytest.fixture
def invoice(db: Session, group: BillGroup) -> int:
    made = make_invoice(db, group, number="INV-STRIPE")
    db.commit()
    return made.id


def stripe_card(db: Session, group: BillGroup, localstripe: LocalStripe, number: str) -> int:
    """A card saved as the add-card page saves it (Stripe.js's part played as
    localstripe's stand-in plays it), for the group's own Stripe customer."""
    gw = gateway(localstripe)
    customer = gw.create_customer(f"{group.public_id}-{secrets.token_hex(4)}", group.name)
    group.gateway_customer_ref = customer
    intent = confirm_setup(localstripe, gw.setup_intent(customer), number)
    attached = gw.attach(
        group.public_id, {"payment_method": intent["payment_method"], "customer": customer}
    )
    method = make_payment_method(
        db,
        group,
        gateway="stripe",
        gateway_token=attached.gateway_token,
        last4=number[-4:],
        is_default=True,
    )
    db.commit()
    return method.id


def attempt_of(db: Session) -> PaymentAttempt:
    db.expire_all()
    found = db.scalar(select(PaymentAttempt))
    assert found is not None
    return found


def pay_by_stripe(db, group, customer, invoice, localstripe, number):
    """Save a card of `number`, review paying the invoice with it, confirm: the confirm's
    response and the attempt it made."""
    method = stripe_card(db, group, localstripe, number)
    page = review(customer, group, invoice, method=str(method))
    response = pay(customer, group, page.text)
    return response, attempt_of(db)


def test_a_stripe_charge_succeeds_and_pays_the_invoice(db, group, customer, invoice, localstripe):
    response, attempt = pay_by_stripe(db, group, customer, invoice, localstripe, GOOD)
    assert response.headers["Location"] == url(group, f"/pay/attempts/{attempt.id}")
    assert "Payment received" in customer.get(response.headers["Location"]).text
    assert attempt.gateway == "stripe" and (attempt.gateway_reference or "").startswith("pi_")
    intent = localstripe.get(f"/v1/payment_intents/{attempt.gateway_reference}")
    assert intent["status"] == "succeeded" and intent["amount"] == attempt.amount_minor
    assert invoice_state(db, invoice)[1] == "paid"


def test_a_stripe_decline_says_why_and_applies_nothing(db, group, customer, invoice, localstripe):
    response, _attempt = pay_by_stripe(
        db, group, customer, invoice, localstripe, DECLINED_ON_CHARGE
    )
    shown = customer.get(response.headers["Location"]).text
    assert "Payment declined" in shown and "Your card was declined." in shown
    assert invoice_state(db, invoice) == (0, "open")


@pytest.mark.parametrize(
    ("outcome", "heading", "state"),
    [("complete", "Payment received", "paid"), ("fail", "Payment declined", "open")],
)
def test_stripe_3d_secure_is_a_link_off_the_outcome_page_and_back(
    db, group, customer, invoice, localstripe, outcome, heading, state
):
    response, attempt = pay_by_stripe(db, group, customer, invoice, localstripe, THREE_D_SECURE)
    # Not off the portal: to the outcome page, which waits for the check.
    outcome_page = url(group, f"/pay/attempts/{attempt.id}")
    assert response.status_code == 303 and response.headers["Location"] == outcome_page
    waiting = customer.get(outcome_page).text
    assert "Security check needed" in waiting
    found = ACTION_RE.search(waiting)
    assert found, "no link to the security check"
    action = html.unescape(found.group(1))
    # Stripe's redirect URL as Stripe gave it: nothing of ours added to it.
    reference = attempt.gateway_reference
    assert action == f"{localstripe.url}/hooks.stripe.com/3d_secure/{reference}"
    assert invoice_state(db, invoice) == (0, "open")

    code, location = press_3ds(action, outcome)
    back = urlsplit(location)
    assert code == 303 and back.path == url(group, f"/pay/attempts/{attempt.id}/return")
    assert f"payment_intent={reference}" in back.query
    settled = customer.get(f"{back.path}?{back.query}")
    assert settled.status_code == 303 and settled.headers["Location"] == outcome_page
    assert heading in customer.get(outcome_page).text
    assert invoice_state(db, invoice)[1] == state
    intents = [
        i
        for i in localstripe.list_all("/v1/payment_intents")
        if i.get("customer") == group.gateway_customer_ref
    ]
    assert [i["id"] for i in intents] == [reference]  # one charge, however it ended


@pytest.mark.parametrize("action", ["javascript:alert(1)", "data:text/html,x", "//evil.example/"])
def test_an_action_url_that_is_not_a_web_page_is_not_linked(
    app, db, group, customer, invoice, localstripe, monkeypatch, action
):
    """A gateway's answer is not trusted to be a link: only http(s) pages elsewhere."""
    method = stripe_card(db, group, localstripe, THREE_D_SECURE)
    page = review(customer, group, invoice, method=str(method))
    found = payments.get_gateway(settings_of(app))

    def retrieve(reference: str) -> Charge:
        return Charge(
            reference=reference,
            status=ChargeStatus.REQUIRES_ACTION,
            amount_minor=100,
            currency=group.currency,
            action_url=action,
        )

    monkeypatch.setattr(found, "retrieve", retrieve)
    response = pay(customer, group, page.text)
    attempt = attempt_of(db)
    assert response.headers["Location"] == url(group, f"/pay/attempts/{attempt.id}")
    waiting = customer.get(response.headers["Location"]).text
    assert "Security check needed" in waiting and ACTION_RE.search(waiting) is None
    assert action not in waiting
    assert invoice_state(db, invoice) == (0, "open")
