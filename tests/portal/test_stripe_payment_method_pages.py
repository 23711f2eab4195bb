"""The add-card page in Stripe mode, against localstripe: the page carries a SetupIntent
for the bill group's Stripe customer (made once, also when two first requests race),
Stripe.js's part is played as localstripe's stand-in plays it, and only the
PaymentMethod id is posted; what is refused stores nothing."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal import db as portal_db
from portal.actions import payment_methods as actions
from portal.models import BillGroup
from tests.localstripe import LocalStripe
from tests.portal.pages_helpers import audit_rows, flashes, methods_of, url
from tests.portal.signin_helpers import race
from tests.settings import change_settings
from tests.stripe_helpers import (
    DECLINED_ON_SAVE,
    GOOD,
    PUBLISHABLE_KEY,
    confirm_setup,
    gateway,
    stripe_settings,
)

pytestmark = pytest.mark.usefixtures("clock", "stripe_app")


@pytest.fixture
def stripe_app(app: Flask, localstripe: LocalStripe) -> Flask:
    change_settings(app, **stripe_settings(localstripe))
    return app


def client_secret(html: str) -> str:
    found = re.search(r'data-client-secret="([^"]*)"', html)
    assert found, "no data-client-secret on the page"
    return found.group(1)


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert found
    return found.group(1)


def card_error(html: str) -> str:
    found = re.search(r'<p class="error-message" id="card-errors" role="alert">([^<]*)</p>', html)
    assert found, "no card error on the page"
    return found.group(1)


def open_page(customer: FlaskClient, group: BillGroup) -> tuple[str, str]:
    response = customer.get(url(group, "/payment-methods/new"))
    assert response.status_code == 200, response.text
    return response.text, client_secret(response.text)


def test_the_page_carries_a_setup_intent_and_no_card_fields(db, group, customer, localstripe):
    html, secret = open_page(customer, group)
    assert secret.startswith("seti_")
    assert f'data-publishable-key="{PUBLISHABLE_KEY}"' in html
    assert f'<script src="{localstripe.js_url}" defer></script>' in html
    assert "stripe_card.js" in html and "<script>" not in html  # no inline script (CSP)
    for name in ("number", "cvc", "exp_month", "exp_year"):
        assert f'name="{name}"' not in html
    db.expire_all()
    customer_ref = group.gateway_customer_ref
    assert customer_ref and customer_ref.startswith("cus_")
    intent = localstripe.get(f"/v1/setup_intents/{secret.split('_secret_')[0]}")
    assert intent["customer"] == customer_ref
    assert localstripe.get(f"/v1/customers/{customer_ref}")["metadata"] == {
        "bill_group": group.public_id
    }
    # Again: the same customer, a new SetupIntent.
    _html, again = open_page(customer, group)
    db.expire_all()
    assert group.gateway_customer_ref == customer_ref and again != secret


def test_the_list_offers_to_add_a_card(group, customer):
    page = customer.get(url(group, "/payment-methods")).text
    assert url(group, "/payment-methods/new") in page


def test_a_card_confirmed_by_stripe_js_is_saved(db, group, customer, localstripe):
    html, secret = open_page(customer, group)
    intent = confirm_setup(localstripe, secret, GOOD)  # what Stripe.js does in the browser
    response = customer.post(
        url(group, "/payment-methods/new"),
        data={
            "csrf_token": csrf(html),
            "payment_method": intent["payment_method"],
            "holder_name": "Ann Example",
            "make_default": "y",
        },
    )
    assert response.status_code == 303
    [method] = methods_of(db, group)
    assert (method.gateway, method.gateway_token) == ("stripe", intent["payment_method"])
    assert (method.brand, method.last4, method.exp_month, method.exp_year) == (
        "visa",
        "4242",
        12,
        2031,
    )
    assert method.is_default
    assert len(audit_rows(db, "payment_method.add")) == 1
    assert localstripe.get(f"/v1/payment_methods/{method.gateway_token}")["customer"] == (
        group.gateway_customer_ref
    )
    assert flashes(customer.get(url(group, "/payment-methods")).text) == [
        "Visa ending 4242 has been added."
    ]


def post_method(customer: FlaskClient, group: BillGroup, html: str, pm_id: str):  # type: ignore[no-untyped-def]
    return customer.post(
        url(group, "/payment-methods/new"),
        data={"csrf_token": csrf(html), "payment_method": pm_id},
    )


def test_another_customers_card_is_refused(db, group, customer, localstripe):
    html, _secret = open_page(customer, group)
    other = gateway(localstripe)
    stranger = other.create_customer("bg_stranger_page", "Stranger")
    theirs = confirm_setup(localstripe, other.setup_intent(stranger), GOOD)["payment_method"]
    other.attach("bg", {"payment_method": theirs, "customer": stranger})
    response = post_method(customer, group, html, theirs)
    assert response.status_code == 400
    assert "The card could not be saved" in response.text
    assert methods_of(db, group) == []
    assert localstripe.get(f"/v1/payment_methods/{theirs}")["customer"] == stranger


def test_a_declined_card_is_not_saved(db, group, customer, localstripe):
    html, _secret = open_page(customer, group)
    card = {"number": DECLINED_ON_SAVE, "exp_month": 12, "exp_year": 2031, "cvc": "123"}
    method = localstripe.post("/v1/payment_methods", {"type": "card", "card": card})
    response = post_method(customer, group, html, method["id"])
    assert response.status_code == 400
    assert "Your card was declined." in response.text
    assert client_secret(response.text).startswith("seti_")  # a new one, to try again
    assert methods_of(db, group) == []


@pytest.mark.parametrize("pm_id", ["", "4242424242424242", "pm_<script>", "pm_" + "x" * 300])
def test_anything_but_a_payment_method_id_is_refused(db, group, customer, pm_id):
    html, _secret = open_page(customer, group)
    response = post_method(customer, group, html, pm_id)
    assert response.status_code == 400
    assert card_error(response.text) in (
        "Enter your card details.",
        "Enter your card details again.",
    )
    assert methods_of(db, group) == []
    assert pm_id not in response.text or pm_id == ""


def test_no_csrf_token_no_card(db, group, customer, localstripe):
    _html, secret = open_page(customer, group)
    intent = confirm_setup(localstripe, secret, GOOD)
    response = customer.post(
        url(group, "/payment-methods/new"), data={"payment_method": intent["payment_method"]}
    )
    assert response.status_code == 400
    assert methods_of(db, group) == []


def test_stripe_unreachable_says_so_and_stores_nothing(app, db, group, customer):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    change_settings(app, STRIPE_API_BASE=closed, STRIPE_TIMEOUT=1, STRIPE_MAX_NETWORK_RETRIES=0)
    response = customer.get(url(group, "/payment-methods/new"))
    assert response.status_code == 503
    assert "could not be reached" in response.text
    assert client_secret(response.text) == ""
    assert "<fieldset disabled>" in response.text
    db.expire_all()
    assert group.gateway_customer_ref is None


@pytest.mark.db
def test_two_first_requests_make_one_customer(app: Flask, db: Session, group: BillGroup) -> None:
    """Under the bill group's lock the second request waits, then finds the first's."""
    made: list[str] = []
    lock = threading.Lock()

    def create() -> str:
        with lock:
            made.append(f"cus_{len(made)}")
            ref = made[-1]
        time.sleep(0.3)  # the gateway's round trip, while the other request waits
        return ref

    group_id = group.id
    db.commit()

    def first_use(_job: int) -> str:
        with app.app_context(), Session(portal_db.engine()) as session:
            found = session.get(BillGroup, group_id)
            assert found is not None
            ref = actions.gateway_customer(session, found, create)
            session.commit()
            return ref

    refs = race([1, 2], first_use)
    assert made == ["cus_0"] and refs == ["cus_0", "cus_0"]
    db.expire_all()
    assert db.get(BillGroup, group_id).gateway_customer_ref == "cus_0"  # type: ignore[union-attr]
