"""The Stripe gateway against localstripe (a stateful local Stripe server, started once
per run on a loopback port: tests/localstripe.py): customers, cards saved through a
SetupIntent as Stripe.js saves them, charges (success, decline, 3-D Secure, processing),
idempotency keys, refunds, timeouts, and webhook signatures built with the secret."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from portal.config import Settings
from portal.gateways.stripe import StripeGateway
from portal.models import PaymentMethodType
from portal.payments import (
    CardDeclined,
    ChargeStatus,
    GatewayError,
    GatewayUnavailable,
    WebhookRejected,
    get_gateway,
)
from tests.localstripe import LocalStripe
from tests.stripe_helpers import (
    DECLINED_ON_CHARGE,
    DECLINED_ON_SAVE,
    GOOD,
    PUBLISHABLE_KEY,
    SECRET_KEY,
    THREE_D_SECURE,
    WEBHOOK_SECRET,
    ask,
    confirm_setup,
    event_body,
    gateway,
    intent_object,
    press_3ds,
    saved_card,
    sign,
)


def test_the_registry_builds_the_stripe_gateway_from_settings() -> None:
    config = Settings(
        PAYMENT_GATEWAY="stripe",
        STRIPE_SECRET_KEY=SECRET_KEY,
        STRIPE_PUBLISHABLE_KEY=PUBLISHABLE_KEY,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    found = get_gateway(config)
    assert isinstance(found, StripeGateway)
    assert found.name == "stripe" and found.is_sandbox and not found.collects_card_details
    assert found.publishable_key == PUBLISHABLE_KEY
    assert found.js_url == "https://js.stripe.com/v3/"
    assert get_gateway(config) is found  # kept: its connections are reused
    live = StripeGateway(secret_key="sk_live_x", publishable_key="pk_live_x", webhook_secret="w")
    assert not live.is_sandbox


# --- customers and saving a card -------------------------------------------------------


def test_a_customer_is_made_once_per_bill_group(localstripe: LocalStripe) -> None:
    gw = gateway(localstripe)
    first = gw.create_customer("bg_once", "Acme Ltd")
    again = gw.create_customer("bg_once", "Acme Ltd")  # a retry, or the loser of a race
    other = gw.create_customer("bg_other", "Other Ltd")
    assert first.startswith("cus_") and first == again and other != first
    stored = localstripe.get(f"/v1/customers/{first}")
    assert stored["name"] == "Acme Ltd" and stored["metadata"] == {"bill_group": "bg_once"}


def test_a_card_saved_through_a_setup_intent_is_attached(localstripe: LocalStripe) -> None:
    gw = gateway(localstripe)
    customer = gw.create_customer("bg_attach", "Acme Ltd")
    secret = gw.setup_intent(customer)
    assert secret.startswith("seti_") and "_secret_" in secret
    intent = confirm_setup(localstripe, secret, GOOD)
    assert intent["status"] == "succeeded"
    details = gw.attach(
        "bg_attach", {"payment_method": intent["payment_method"], "customer": customer}
    )
    assert details.type == PaymentMethodType.CARD
    assert (details.brand, details.last4, details.exp_month, details.exp_year) == (
        "visa",
        "4242",
        12,
        2031,
    )
    assert details.holder_name == "Ann Example"
    assert details.gateway == "stripe" and details.gateway_token == intent["payment_method"]
    method = localstripe.get(f"/v1/payment_methods/{details.gateway_token}")
    assert method["customer"] == customer


def test_a_card_saved_without_a_name_has_none(localstripe: LocalStripe) -> None:
    gw = gateway(localstripe)
    customer = gw.create_customer("bg_nameless", "Acme Ltd")
    intent = confirm_setup(localstripe, gw.setup_intent(customer), GOOD, name=None)
    submitted = {"payment_method": intent["payment_method"], "customer": customer}
    details = gw.attach("bg_nameless", submitted)
    assert details.holder_name is None and details.last4 == "4242"


def test_a_card_of_another_customer_is_refused(localstripe: LocalStripe) -> None:
    gw, _customer, token = saved_card(localstripe)
    stranger = gw.create_customer("bg_stranger", "Stranger Ltd")
    with pytest.raises(GatewayError) as refused:
        gw.attach("bg_stranger", {"payment_method": token, "customer": stranger})
    assert not isinstance(refused.value, CardDeclined)
    assert "could not be saved" in refused.value.message


def test_a_card_the_issuer_declines_is_not_saved(localstripe: LocalStripe) -> None:
    gw = gateway(localstripe)
    customer = gw.create_customer("bg_declined", "Acme Ltd")
    card = {"number": DECLINED_ON_SAVE, "exp_month": 12, "exp_year": 2031, "cvc": "123"}
    method = localstripe.post("/v1/payment_methods", {"type": "card", "card": card})
    with pytest.raises(CardDeclined) as declined:
        gw.attach("bg_declined", {"payment_method": method["id"], "customer": customer})
    assert declined.value.message == "Your card was declined."
    assert localstripe.get(f"/v1/payment_methods/{method['id']}")["customer"] is None


@pytest.mark.parametrize("pm_id", ["", "card_1", "pm_doesnotexist", "pm_" + "x" * 300])
def test_a_bad_payment_method_id_is_a_gateway_error(localstripe: LocalStripe, pm_id: str) -> None:
    gw = gateway(localstripe)
    customer = gw.create_customer("bg_bad", "Acme Ltd")
    with pytest.raises(GatewayError) as refused:
        gw.attach("bg_bad", {"payment_method": pm_id, "customer": customer})
    assert not isinstance(refused.value, (CardDeclined, GatewayUnavailable))


def test_detach_releases_the_card(localstripe: LocalStripe) -> None:
    gw, _customer, token = saved_card(localstripe)
    gw.detach(token)
    assert localstripe.get(f"/v1/payment_methods/{token}")["customer"] is None


# --- charges ---------------------------------------------------------------------------


def test_a_good_card_is_charged(localstripe: LocalStripe) -> None:
    gw, customer, token = saved_card(localstripe)
    request = ask(token, customer)
    charge = gw.charge(request)
    assert charge.status == ChargeStatus.SUCCEEDED
    assert charge.reference.startswith("pi_")
    assert (charge.amount_minor, charge.currency, charge.refunded_minor) == (12_345, "GBP", 0)
    intent = localstripe.get(f"/v1/payment_intents/{charge.reference}")
    # Stripe's currencies are lower case; the customer and the description go with it.
    assert (intent["currency"], intent["customer"]) == ("gbp", customer)
    assert intent["description"] == request.description
    assert intent["return_url"] == request.return_url
    assert gw.retrieve(charge.reference) == charge


def test_a_decline_is_a_declined_charge_in_plain_words(localstripe: LocalStripe) -> None:
    gw, customer, token = saved_card(localstripe, DECLINED_ON_CHARGE)
    charge = gw.charge(ask(token, customer))
    assert charge.status == ChargeStatus.DECLINED
    assert charge.failure_message == "Your card was declined."
    assert charge.failure_code == "card_declined"
    assert charge.reference.startswith("pi_")
    assert gw.retrieve(charge.reference).status == ChargeStatus.DECLINED


def authenticate(localstripe: LocalStripe, reference: str, secret: str, success: bool) -> Any:
    """What localstripe's stand-in Stripe.js does in confirmCardPayment (its 3-D Secure
    dialog): authenticate the PaymentIntent from the browser, publishable key only."""
    path = f"/v1/payment_intents/{reference}/_authenticate?success={str(success).lower()}"
    return localstripe.post(path, {"key": PUBLISHABLE_KEY, "client_secret": secret}, key=None)


def test_3d_secure_requires_action_then_succeeds(localstripe: LocalStripe) -> None:
    gw, customer, token = saved_card(localstripe, THREE_D_SECURE)
    charge = gw.charge(ask(token, customer))
    assert charge.status == ChargeStatus.REQUIRES_ACTION
    assert charge.client_secret and charge.client_secret.startswith(charge.reference + "_secret_")
    # Confirmed on the server with a return_url: Stripe's redirect (the launcher's page).
    assert charge.action_url == f"{localstripe.url}/hooks.stripe.com/3d_secure/{charge.reference}"
    assert gw.retrieve(charge.reference).status == ChargeStatus.REQUIRES_ACTION
    authenticate(localstripe, charge.reference, charge.client_secret, success=True)
    done = gw.retrieve(charge.reference)
    assert done.status == ChargeStatus.SUCCEEDED and done.reference == charge.reference


def test_3d_secure_failed_is_declined(localstripe: LocalStripe) -> None:
    gw, customer, token = saved_card(localstripe, THREE_D_SECURE)
    charge = gw.charge(ask(token, customer))
    assert charge.client_secret
    authenticate(localstripe, charge.reference, charge.client_secret, success=False)
    done = gw.retrieve(charge.reference)
    assert done.status == ChargeStatus.DECLINED
    assert done.failure_message == "The provided PaymentMethod has failed authentication."
    assert done.failure_code == "payment_intent_authentication_failure"


@pytest.mark.parametrize(
    ("outcome", "status", "redirect_status"),
    [("complete", ChargeStatus.SUCCEEDED, "succeeded"), ("fail", ChargeStatus.DECLINED, "failed")],
)
def test_the_3d_secure_page_authenticates_and_sends_the_browser_back(
    localstripe: LocalStripe, outcome: str, status: ChargeStatus, redirect_status: str
) -> None:
    gw, customer, token = saved_card(localstripe, THREE_D_SECURE)
    request = ask(token, customer, return_url="https://portal.example.test/p/bg/back?x=1")
    charge = gw.charge(request)
    assert charge.action_url and charge.client_secret
    code, location = press_3ds(charge.action_url, outcome)
    assert code == 303
    back, _, query = location.partition("?x=1&")
    assert back == "https://portal.example.test/p/bg/back"
    assert urllib.parse.parse_qs(query) == {
        "payment_intent": [charge.reference],
        "payment_intent_client_secret": [charge.client_secret],
        "redirect_status": [redirect_status],
    }
    assert gw.retrieve(charge.reference).status == status
    # Done: the page refuses a second press, and the PaymentIntent stays as it is.
    with pytest.raises(urllib.error.HTTPError) as again:
        press_3ds(charge.action_url, "complete")
    with again.value:
        assert again.value.code == 400
    assert gw.retrieve(charge.reference).status == status


def test_without_a_return_url_3d_secure_stays_with_stripe_js(localstripe: LocalStripe) -> None:
    """The redirect is for a PaymentIntent confirmed with a return_url, as Stripe's."""
    gw, customer, token = saved_card(localstripe, THREE_D_SECURE)
    intent = gw._client.v1.payment_intents.create(
        params={
            "amount": 500,
            "currency": "gbp",
            "customer": customer,
            "payment_method": token,
            "confirm": True,
        }
    )
    assert intent.status == "requires_action"
    assert intent.next_action is not None and intent.next_action.type == "use_stripe_sdk"


def test_a_redirect_next_action_becomes_the_action_url() -> None:
    from portal.gateways.stripe import _charge_of

    url = "https://hooks.stripe.com/3d_secure_2/hosted?x=1"
    intent = intent_object(
        status="requires_action",
        next_action={"type": "redirect_to_url", "redirect_to_url": {"url": url}},
    )
    charge = _charge_of(intent)
    assert charge.status == ChargeStatus.REQUIRES_ACTION and charge.action_url == url


def test_processing_is_pending() -> None:
    """localstripe never answers "processing" (its SEPA debits succeed at once too): the
    status as Stripe sends it, read by the same code as every answer."""
    from portal.gateways.stripe import _charge_of

    charge = _charge_of(intent_object(status="processing"))
    assert charge.status == ChargeStatus.PROCESSING and charge.failure_message is None


def intents_described(localstripe: LocalStripe, description: str) -> list[dict[str, Any]]:
    listed = localstripe.list_all("/v1/payment_intents")
    return [intent for intent in listed if intent.get("description") == description]


@pytest.mark.parametrize("number", [GOOD, DECLINED_ON_CHARGE, THREE_D_SECURE])
def test_one_key_is_one_payment_intent(localstripe: LocalStripe, number: str) -> None:
    gw, customer, token = saved_card(localstripe, number)
    request = ask(token, customer)
    first = gw.charge(request)
    again = gw.charge(request)  # a double click, a reload, a retried request
    assert again == first
    assert len(intents_described(localstripe, request.description)) == 1
    other = gw.charge(ask(token, customer, description=request.description))
    assert other.reference != first.reference  # another key: another PaymentIntent


def test_a_key_reused_with_other_parameters_is_refused(localstripe: LocalStripe) -> None:
    gw, customer, token = saved_card(localstripe)
    request = ask(token, customer)
    first = gw.charge(request)
    with pytest.raises(GatewayError) as refused:
        gw.charge(ask(token, customer, key=request.idempotency_key, amount_minor=99))
    assert not isinstance(refused.value, GatewayUnavailable)
    assert len(intents_described(localstripe, request.description)) == 1
    assert gw.retrieve(first.reference).amount_minor == 12_345


def test_refunds_are_read_from_the_latest_charge(localstripe: LocalStripe) -> None:
    gw, customer, token = saved_card(localstripe)
    charge = gw.charge(ask(token, customer))
    localstripe.post("/v1/refunds", {"payment_intent": charge.reference, "amount": 2_345})
    assert gw.retrieve(charge.reference).refunded_minor == 2_345
    localstripe.post("/v1/refunds", {"payment_intent": charge.reference, "amount": 10_000})
    assert gw.retrieve(charge.reference).refunded_minor == 12_345


def test_retrieve_of_an_unknown_reference_is_a_gateway_error(localstripe: LocalStripe) -> None:
    gw = gateway(localstripe)
    for reference in ("pi_doesnotexist", "sandbox_ch_x", ""):
        with pytest.raises(GatewayError) as refused:
            gw.retrieve(reference)
        assert not isinstance(refused.value, GatewayUnavailable)


# --- the gateway down or slow ----------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A socket that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"  # closed when this returns


@pytest.mark.parametrize("where", ["closed", "silent"])
def test_a_gateway_down_or_slow_is_unavailable(
    silent_server: str, where: str, localstripe: LocalStripe
) -> None:
    _gw, customer, token = saved_card(localstripe)
    base = closed_port() if where == "closed" else silent_server
    down = gateway(localstripe, api_base=base, timeout=1, max_network_retries=1)
    started = time.monotonic()
    for call in (
        lambda: down.charge(ask(token, customer)),
        lambda: down.retrieve("pi_x"),
        lambda: down.create_customer("bg_down", "Acme"),
        lambda: down.setup_intent(customer),
        lambda: down.attach("bg", {"payment_method": token, "customer": customer}),
    ):
        with pytest.raises(GatewayUnavailable) as unavailable:
            call()
        assert "could not be reached" in unavailable.value.message
    # Five calls, each one try and one bounded retry of at most a second each, with
    # the library's back-off between them: never the library's default 80 seconds.
    assert time.monotonic() - started < 30


# --- webhooks --------------------------------------------------------------------------


def test_a_signed_payment_intent_succeeded_is_read() -> None:
    body = event_body("payment_intent.succeeded", intent_object("pi_paid"), "evt_paid")
    event = StripeGateway(
        secret_key=SECRET_KEY, publishable_key=PUBLISHABLE_KEY, webhook_secret=WEBHOOK_SECRET
    ).parse_event(body, {"Stripe-Signature": sign(body)})
    assert event is not None
    assert (event.id, event.kind) == ("evt_paid", "charge.succeeded")
    assert event.charge.reference == "pi_paid"
    assert event.charge.status == ChargeStatus.SUCCEEDED
    assert (event.charge.amount_minor, event.charge.currency) == (12_345, "GBP")


def offline() -> StripeGateway:
    return StripeGateway(
        secret_key=SECRET_KEY, publishable_key=PUBLISHABLE_KEY, webhook_secret=WEBHOOK_SECRET
    )


def test_a_failed_payment_is_read_with_the_reason() -> None:
    error = {"code": "card_declined", "decline_code": "insufficient_funds",
             "message": "Your card has insufficient funds."}  # fmt: skip
    obj = intent_object("pi_failed", "requires_payment_method", last_payment_error=error)
    body = event_body("payment_intent.payment_failed", obj)
    event = offline().parse_event(body, {"stripe-signature": sign(body)})  # any case
    assert event is not None and event.kind == "charge.failed"
    assert event.charge.status == ChargeStatus.DECLINED
    assert event.charge.failure_message == "Your card has insufficient funds."
    assert event.charge.failure_code == "insufficient_funds"


def test_a_refund_is_read_against_its_payment_intent() -> None:
    obj = {"id": "ch_1", "object": "charge", "amount": 12_345, "currency": "gbp",
           "amount_refunded": 2_000, "payment_intent": "pi_refunded"}  # fmt: skip
    body = event_body("charge.refunded", obj)
    event = offline().parse_event(body, {"Stripe-Signature": sign(body)})
    assert event is not None and event.kind == "charge.refunded"
    assert (event.charge.reference, event.charge.refunded_minor) == ("pi_refunded", 2_000)
    without = event_body("charge.refunded", {**obj, "payment_intent": None})
    assert offline().parse_event(without, {"Stripe-Signature": sign(without)}) is None


def test_other_kinds_are_none() -> None:
    body = event_body("customer.created", {"id": "cus_1", "object": "customer"})
    assert offline().parse_event(body, {"Stripe-Signature": sign(body)}) is None


def good_body() -> bytes:
    return event_body("payment_intent.succeeded", intent_object())


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param(lambda b: {}, good_body(), id="no header"),
        pytest.param(lambda b: {"Stripe-Signature": ""}, good_body(), id="empty header"),
        pytest.param(
            lambda b: {"Stripe-Signature": sign(b, "whsec_other")}, good_body(), id="another secret"
        ),  # fmt: skip
        pytest.param(
            lambda b: {"Stripe-Signature": sign(b + b" ")}, good_body(), id="body changed"
        ),
        pytest.param(
            lambda b: {"Stripe-Signature": sign(b, at=int(time.time()) - 301)},
            good_body(),
            id="too old",
        ),  # fmt: skip
        pytest.param(lambda b: {"Stripe-Signature": "t=1,v0=abc"}, good_body(), id="no v1"),
        pytest.param(lambda b: {"Stripe-Signature": "garbage"}, good_body(), id="garbage header"),
        pytest.param(lambda b: {"Stripe-Signature": sign(b)}, b"not json", id="signed garbage"),
        pytest.param(
            lambda b: {"Stripe-Signature": sign(b)}, b'{"id": 1}', id="signed not an event"
        ),
        pytest.param(lambda b: {"Stripe-Signature": sign(b)}, b"\xff\xfe", id="not utf-8"),
        pytest.param(
            lambda b: {"Stripe-Signature": sign(b)},
            event_body("payment_intent.succeeded", {"id": "pi_1"}),
            id="signed, object unreadable",
        ),
    ],
)
def test_a_bad_webhook_is_rejected(headers: Any, body: bytes) -> None:
    with pytest.raises(WebhookRejected) as rejected:
        offline().parse_event(body, headers(body))
    assert WEBHOOK_SECRET not in str(rejected.value)


class _Catcher(http.server.BaseHTTPRequestHandler):
    caught: list[tuple[bytes, dict[str, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).caught.append((body, dict(self.headers.items())))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_webhook_localstripe_sends_is_verified(localstripe: LocalStripe) -> None:
    """localstripe signs and delivers its payment_intent.succeeded as Stripe does."""
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Catcher)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        localstripe.webhook(
            "portal-tests", f"http://127.0.0.1:{receiver.server_address[1]}/", WEBHOOK_SECRET
        )
        gw, customer, token = saved_card(localstripe)
        charge = gw.charge(ask(token, customer))
        deadline = time.monotonic() + 10
        found = None
        while found is None and time.monotonic() < deadline:
            for body, headers in list(_Catcher.caught):
                event = gw.parse_event(body, headers)
                if event is not None and event.charge.reference == charge.reference:
                    found = event
            time.sleep(0.2)
        assert found is not None, "localstripe delivered no payment_intent.succeeded"
        assert found.kind == "charge.succeeded" and found.id.startswith("evt_")
        assert found.charge.status == ChargeStatus.SUCCEEDED
    finally:
        localstripe.post(
            "/_config/webhooks/portal-tests", {"url": "http://127.0.0.1:9/", "secret": "x"}
        )
        receiver.shutdown()
        receiver.server_close()
