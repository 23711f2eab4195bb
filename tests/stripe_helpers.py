"""Helpers for the Stripe gateway's tests: a gateway on localstripe, cards saved the way
Stripe.js saves them, and webhooks signed the way Stripe signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from portal.gateways.stripe import StripeGateway
from portal.payments import ChargeRequest
from tests.localstripe import LocalStripe

SECRET_KEY = "sk_test_portal_tests"
PUBLISHABLE_KEY = "pk_test_portal_tests"
WEBHOOK_SECRET = "whsec_portal_tests_" + "w" * 24

# Stripe's test cards, as localstripe knows them.
GOOD = "4242424242424242"
DECLINED_ON_CHARGE = "4000000000000341"  # saves, then every charge is declined
DECLINED_ON_SAVE = "4000000000000002"
THREE_D_SECURE = "4000002760003184"


# The settings of an app on the Stripe gateway that only takes webhooks in (no API call).
WEBHOOK_SETTINGS: dict[str, Any] = {
    "PAYMENT_GATEWAY": "stripe",
    "STRIPE_SECRET_KEY": SECRET_KEY,
    "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
    "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
}
WEBHOOK_URL = "/payments/webhooks/stripe"


def stripe_settings(localstripe: LocalStripe) -> dict[str, Any]:
    """The settings of an app on the Stripe gateway, on localstripe."""
    return WEBHOOK_SETTINGS | {
        "STRIPE_API_BASE": localstripe.url,
        "STRIPE_JS_URL": localstripe.js_url,
        "STRIPE_TIMEOUT": 10,
    }


def gateway(localstripe: LocalStripe, **over: Any) -> StripeGateway:
    options: dict[str, Any] = {
        "secret_key": SECRET_KEY,
        "publishable_key": PUBLISHABLE_KEY,
        "webhook_secret": WEBHOOK_SECRET,
        "api_base": localstripe.url,
        "js_url": localstripe.js_url,
        "timeout": 10,
    }
    options.update(over)
    return StripeGateway(**options)


def confirm_setup(
    localstripe: LocalStripe, client_secret: str, number: str, name: str | None = "Ann Example"
) -> Any:
    """What Stripe.js's confirmCardSetup does with the card Element's value: confirm
    the SetupIntent from the browser, with the publishable key only (localstripe's
    stand-in asks for 3-D Secure again by confirming a second time)."""
    intent_id = client_secret.split("_secret_")[0]
    card = {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"}
    body = {
        "key": PUBLISHABLE_KEY,
        "use_stripe_sdk": True,
        "client_secret": client_secret,
        "payment_method_data": {
            "type": "card",
            "card": card,
            "billing_details": {"name": name} if name else {},
        },
    }
    path = f"/v1/setup_intents/{intent_id}/confirm"
    intent = localstripe.post(path, body, key=None)
    if intent["status"] == "requires_action":
        again = {"key": PUBLISHABLE_KEY, "use_stripe_sdk": True, "client_secret": client_secret}
        intent = localstripe.post(path, again, key=None)
    return intent


def saved_card(localstripe: LocalStripe, number: str = GOOD) -> tuple[StripeGateway, str, str]:
    """A customer with a card saved through a SetupIntent and attached: the gateway,
    the customer id and the PaymentMethod id."""
    gw = gateway(localstripe)
    customer = gw.create_customer("bg_" + secrets.token_hex(6), "Acme Ltd")
    intent = confirm_setup(localstripe, gw.setup_intent(customer), number)
    attached = gw.attach("bg", {"payment_method": intent["payment_method"], "customer": customer})
    return gw, customer, attached.gateway_token


def ask(token: str, customer: str | None, key: str | None = None, **over: Any) -> ChargeRequest:
    fields: dict[str, Any] = {
        "idempotency_key": key or secrets.token_urlsafe(32),
        "method_token": token,
        "customer_ref": customer,
        "amount_minor": 12_345,
        "currency": "GBP",
        "description": "Invoices INV-1 " + secrets.token_hex(4),
        "return_url": "https://portal.example.test/p/bg/pay/back",
    }
    fields.update(over)
    return ChargeRequest(**fields)


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """A Stripe-Signature header: t=<unix time>,v1=HMAC-SHA256(secret, "t.payload")."""
    stamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), b"%d." % stamp + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def event_body(kind: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    """A Stripe event as the webhook sends it."""
    event = {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }
    return json.dumps(event).encode()


def intent_object(
    reference: str = "pi_test", status: str = "succeeded", **over: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": reference,
        "object": "payment_intent",
        "amount": 12_345,
        "currency": "gbp",
        "status": status,
        "client_secret": reference + "_secret_x",
        "latest_charge": "ch_test",
        "last_payment_error": None,
        "next_action": None,
    }
    obj.update(over)
    return obj


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 303 itself is the answer under test


def press_3ds(url: str, outcome: str) -> tuple[int, str]:
    """A browser on the 3-D Secure page (tests/localstripe.py's stand-in for Stripe's):
    the page, then one of its two buttons ("complete" or "fail"); the status and the
    Location it answers. HTTPError when the page refuses."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    with direct.open(url, timeout=10) as page:
        assert page.status == 200
        assert f'value="{outcome}"' in page.read().decode()
    body = urllib.parse.urlencode({"outcome": outcome}).encode()
    try:
        direct.open(urllib.request.Request(url, data=body, method="POST"), timeout=10)
    except urllib.error.HTTPError as answer:
        with answer:
            if answer.code == 303:
                return answer.code, answer.headers["Location"]
            raise
    raise AssertionError("the page did not send the browser back")
