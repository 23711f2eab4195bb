"""Stripe, with the official `stripe` library: SetupIntents and Stripe.js Elements to
save a card (the number never reaches our server), PaymentIntents to charge it (the
payment attempt's idempotency key passed through), and signed webhooks in.

Each gateway has a `stripe.StripeClient` of its own (never the library's global
`stripe.api_key`), with a connect and read timeout and a bounded number of network
retries; STRIPE_API_BASE points it elsewhere than api.stripe.com (the tests' localstripe).

Errors: Stripe's card errors become `CardDeclined` with Stripe's message for the
customer; its other refusals `GatewayError` with a message of ours (Stripe's may name
parameters); a connection error or a timeout `GatewayUnavailable`. Nothing of a card
but what Stripe returns for display (brand, last four digits, expiry) is seen here.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import stripe
from stripe.params import PaymentIntentCreateParams

from portal.config import Settings
from portal.models import PaymentMethodType
from portal.payments import (
    CardDeclined,
    Charge,
    ChargeRequest,
    ChargeStatus,
    GatewayError,
    GatewayEvent,
    GatewayUnavailable,
    PaymentMethodDetails,
    WebhookRejected,
)

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.stripe.com"
DEFAULT_JS_URL = "https://js.stripe.com/v3/"
# Seconds to connect, and to wait for an answer, per try.
CONNECT_TIMEOUT = 5.0
# Seconds a webhook's signature stays acceptable (Stripe's library default).
WEBHOOK_TOLERANCE = 300

# What the customer reads when Stripe refuses something for a reason that is not the
# card's (a bad id, our request): Stripe's own message may name API parameters.
_REFUSED = "The card could not be saved. Try again, or use another card."
_UNAVAILABLE = "The card processor could not be reached. Nothing was charged; try again."
_CHARGE_REFUSED = "The payment could not be made. Nothing was charged; try again later."

# The webhook kinds the portal applies, and what each becomes.
_EVENT_KINDS = {
    "payment_intent.succeeded": "charge.succeeded",
    "payment_intent.payment_failed": "charge.failed",
    "charge.refunded": "charge.refunded",
}


class StripeGateway:
    """The `Gateway` protocol on Stripe. `collects_card_details` is False: the add-card
    page mounts Stripe's card Element (`js_url`, `publishable_key`), confirms a
    SetupIntent (`setup_intent`) for the bill group's Stripe customer (`create_customer`)
    in the browser, and posts back only the PaymentMethod id."""

    name = "stripe"
    collects_card_details = False

    def __init__(
        self,
        *,
        secret_key: str,
        publishable_key: str,
        webhook_secret: str,
        api_base: str = DEFAULT_API_BASE,
        js_url: str = DEFAULT_JS_URL,
        timeout: float = 20.0,
        max_network_retries: int = 2,
        webhook_tolerance: int = WEBHOOK_TOLERANCE,
    ) -> None:
        self.is_sandbox = not secret_key.startswith("sk_live_")
        self.publishable_key = publishable_key
        self.js_url = js_url
        self._webhook_secret = webhook_secret
        self._tolerance = webhook_tolerance
        http = stripe.RequestsClient(timeout=(min(CONNECT_TIMEOUT, timeout), timeout))
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base.rstrip("/")},
            max_network_retries=max_network_retries,
            http_client=http,
        )

    @classmethod
    def from_settings(cls, config: Settings) -> StripeGateway:
        return cls(
            secret_key=config.STRIPE_SECRET_KEY,
            publishable_key=config.STRIPE_PUBLISHABLE_KEY,
            webhook_secret=config.STRIPE_WEBHOOK_SECRET,
            api_base=config.STRIPE_API_BASE,
            js_url=config.STRIPE_JS_URL,
            timeout=config.STRIPE_TIMEOUT,
            max_network_retries=config.STRIPE_MAX_NETWORK_RETRIES,
        )

    # --- saving a card ---------------------------------------------------------------

    def create_customer(self, bill_group_ref: str, name: str) -> str:
        """A Stripe customer for a bill group; its id goes in gateway_customer_ref. The
        idempotency key is the bill group's, so a retry (or a second worker that lost
        the race for the bill group's lock) gets the same customer back."""
        with _errors(_REFUSED):
            customer = self._client.v1.customers.create(
                params={"name": name[:256], "metadata": {"bill_group": bill_group_ref}},
                options={"idempotency_key": f"portal-customer-{bill_group_ref}"},
            )
        log.info("stripe: created customer %s for bill group %s", customer.id, bill_group_ref)
        return customer.id

    def setup_intent(self, customer_ref: str) -> str:
        """A SetupIntent for saving a card to the customer; its client secret, for
        Stripe.js's confirmCardSetup in the page."""
        with _errors(_REFUSED):
            intent = self._client.v1.setup_intents.create(
                params={
                    "customer": customer_ref,
                    "usage": "off_session",
                }
            )
        if not intent.client_secret:
            raise GatewayError(_REFUSED)
        return intent.client_secret

    def attach(self, bill_group_ref: str, submitted: Mapping[str, str]) -> PaymentMethodDetails:
        """`submitted["payment_method"]`: the PaymentMethod id Stripe.js posted;
        `submitted["customer"]`: the bill group's Stripe customer, put there by the
        server (never taken from the browser). A PaymentMethod of another customer is
        refused; one of none is attached to this customer."""
        pm_id = str(submitted.get("payment_method") or "").strip()
        customer = str(submitted.get("customer") or "")
        if not pm_id.startswith("pm_") or len(pm_id) > 255 or not customer:
            raise GatewayError(_REFUSED)
        with _errors(_REFUSED):
            method = self._client.v1.payment_methods.retrieve(pm_id)
            owner = _id_of(method.customer)
            if owner is not None and owner != customer:
                log.warning("stripe: %s belongs to another customer, refused", pm_id)
                raise GatewayError(_REFUSED)
            if owner is None:
                method = self._client.v1.payment_methods.attach(
                    pm_id, params={"customer": customer}
                )
        return self._details(pm_id, method.to_dict(), customer)

    def _details(
        self, pm_id: str, method: Mapping[str, Any], customer: str
    ) -> PaymentMethodDetails:
        """What we store of a card PaymentMethod (as a dict: Stripe leaves out fields
        it has no value for, such as a name nobody entered)."""
        card = method.get("card")
        last4 = card.get("last4") if isinstance(card, Mapping) else None
        if method.get("type") != "card" or not isinstance(card, Mapping):
            raise GatewayError("Only cards can be saved here.")
        if not isinstance(last4, str) or len(last4) != 4:
            raise GatewayError(_REFUSED)
        billing = method.get("billing_details")
        name = billing.get("name") if isinstance(billing, Mapping) else None
        log.info("stripe: attached %s to %s", pm_id, customer)
        return PaymentMethodDetails(
            type=PaymentMethodType.CARD,
            brand=_text(card.get("brand")),
            last4=last4,
            exp_month=_number(card.get("exp_month")),
            exp_year=_number(card.get("exp_year")),
            holder_name=(_text(name) or "")[:200] or None,
            gateway=self.name,
            gateway_token=pm_id,
        )

    def detach(self, token: str) -> None:
        with _errors(_REFUSED):
            self._client.v1.payment_methods.detach(token)
        log.info("stripe: detached %s", token)

    # --- charging ----------------------------------------------------------------------

    def charge(self, request: ChargeRequest) -> Charge:
        """A PaymentIntent, confirmed at once, with the attempt's idempotency key: asking
        again with the key answers the first PaymentIntent (Stripe keeps keys 24 hours)."""
        params: PaymentIntentCreateParams = {
            "amount": request.amount_minor,
            "currency": request.currency.lower(),
            "payment_method": request.method_token,
            "confirm": True,
            "off_session": False,
            "return_url": request.return_url,
            "description": request.description[:1000],
            "expand": ["latest_charge"],
        }
        if request.customer_ref:
            params["customer"] = request.customer_ref
        try:
            with _errors(_CHARGE_REFUSED, charging=True):
                intent = self._client.v1.payment_intents.create(
                    params=params,
                    options={"idempotency_key": request.idempotency_key},
                )
        except _Declined as declined:
            return declined.charge(request, self._intent_of_charge)
        charge = _charge_of(intent.to_dict())
        log.info("stripe: PaymentIntent %s is %s", charge.reference, charge.status)
        return charge

    def _intent_of_charge(self, charge_id: str) -> str | None:
        """The PaymentIntent of a declined charge, when the error named only the charge."""
        try:
            with _errors(_CHARGE_REFUSED):
                return _id_of(self._client.v1.charges.retrieve(charge_id).payment_intent)
        except GatewayError:
            return None

    def retrieve(self, reference: str) -> Charge:
        if not reference.startswith("pi_"):
            raise GatewayError("No such charge.")
        with _errors("No such charge."):
            intent = self._client.v1.payment_intents.retrieve(
                reference, params={"expand": ["latest_charge"]}
            )
        return _charge_of(intent.to_dict())

    # --- webhooks ----------------------------------------------------------------------

    def parse_event(self, payload: bytes, headers: Mapping[str, str]) -> GatewayEvent | None:
        """Verify Stripe-Signature (Stripe's scheme: HMAC-SHA256 of "t.payload" with the
        endpoint's secret, within the tolerance), then read the event."""
        signature = _header(headers, "Stripe-Signature")
        if not signature:
            raise WebhookRejected("no Stripe-Signature header")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookRejected("the body is not UTF-8") from None
        try:
            stripe.WebhookSignature.verify_header(
                text, signature, self._webhook_secret, self._tolerance
            )
        except stripe.SignatureVerificationError as exc:
            # The library's message says which check failed; it never holds the secret.
            raise WebhookRejected(f"bad signature: {exc.user_message}") from None
        try:
            event = json.loads(text)
            event_id, kind = event["id"], event["type"]
            obj = event["data"]["object"]
        except (ValueError, KeyError, TypeError):
            raise WebhookRejected("a signed body that is not a Stripe event") from None
        if not isinstance(event_id, str) or not isinstance(obj, dict):
            raise WebhookRejected("a signed body that is not a Stripe event")
        ours = _EVENT_KINDS.get(kind)
        if ours is None:
            log.info("stripe: ignored event %s of kind %s", event_id, kind)
            return None
        try:
            if kind == "charge.refunded":
                charge = _refund_of(obj)
                if charge is None:
                    log.info(
                        "stripe: ignored refund %s of a charge without a PaymentIntent", event_id
                    )
                    return None
            else:
                charge = _charge_of(obj)
        except (KeyError, TypeError, ValueError):
            raise WebhookRejected(f"event {event_id}: the object is not readable") from None
        return GatewayEvent(id=event_id, kind=ours, charge=charge)


# --- reading Stripe's objects ----------------------------------------------------------


def _id_of(value: Any) -> str | None:
    """An expandable field's id, whether Stripe sent the id or the object."""
    if value is None or isinstance(value, str):
        return value
    found = value.get("id") if isinstance(value, Mapping) else getattr(value, "id", None)
    return found if isinstance(found, str) else None


def _charge_of(intent: Mapping[str, Any]) -> Charge:
    """A PaymentIntent (as a dict) as the portal's Charge."""
    status = intent["status"]
    amount = int(intent["amount"])
    currency = str(intent["currency"]).upper()
    latest = intent.get("latest_charge")
    refunded = int(latest.get("amount_refunded") or 0) if isinstance(latest, Mapping) else 0
    common: dict[str, Any] = {
        "reference": intent["id"],
        "amount_minor": amount,
        "currency": currency,
        "refunded_minor": refunded,
    }
    if status == "succeeded":
        return Charge(status=ChargeStatus.SUCCEEDED, **common)
    if status == "processing":
        return Charge(status=ChargeStatus.PROCESSING, **common)
    if status in ("requires_action", "requires_confirmation"):
        action = intent.get("next_action") or {}
        redirect = action.get("redirect_to_url") if isinstance(action, Mapping) else None
        url = redirect.get("url") if isinstance(redirect, Mapping) else None
        return Charge(
            status=ChargeStatus.REQUIRES_ACTION,
            action_url=url if isinstance(url, str) else None,
            client_secret=intent.get("client_secret"),
            **common,
        )
    # requires_payment_method (declined, or the 3-D Secure step failed), canceled.
    error = intent.get("last_payment_error") or {}
    message, code = _plain_decline(
        error.get("message"), error.get("decline_code") or error.get("code")
    )
    return Charge(
        status=ChargeStatus.DECLINED, failure_message=message, failure_code=code, **common
    )


def _refund_of(charge: Mapping[str, Any]) -> Charge | None:
    """A refunded Stripe charge as its PaymentIntent's Charge (our reference is the
    PaymentIntent's id); None for a charge made without one."""
    intent = _id_of(charge.get("payment_intent"))
    if intent is None:
        return None
    return Charge(
        reference=intent,
        status=ChargeStatus.SUCCEEDED,
        amount_minor=int(charge["amount"]),
        currency=str(charge["currency"]).upper(),
        refunded_minor=int(charge.get("amount_refunded") or 0),
    )


def _plain_decline(message: Any, code: Any) -> tuple[str, str | None]:
    """Stripe's message for the customer (written for them: "Your card has insufficient
    funds."), or ours when it gave none."""
    text = message if isinstance(message, str) and message.strip() else "Your card was declined."
    return text.strip(), code if isinstance(code, str) else None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


# --- errors ----------------------------------------------------------------------------


class _Declined(Exception):
    """A card error on creating a PaymentIntent: a decline, answered as a Charge."""

    def __init__(self, error: stripe.CardError) -> None:
        super().__init__(error.user_message)
        self.error = error

    def charge(self, request: ChargeRequest, intent_of: Callable[[str], str | None]) -> Charge:
        body = self.error.json_body or {}
        detail = body.get("error") if isinstance(body, Mapping) else None
        detail = detail if isinstance(detail, Mapping) else {}
        # Stripe names the PaymentIntent it made; localstripe only the charge, whose
        # PaymentIntent `intent_of` looks up.
        reference = _id_of(detail.get("payment_intent"))
        charge_id = detail.get("charge")
        if reference is None and isinstance(charge_id, str) and charge_id.startswith("ch_"):
            reference = intent_of(charge_id)
        message, code = _plain_decline(
            self.error.user_message, detail.get("decline_code") or self.error.code
        )
        log.info("stripe: declined (%s) for attempt key %.8s…", code, request.idempotency_key)
        return Charge(
            reference=str(reference or f"declined:{request.idempotency_key}"),
            status=ChargeStatus.DECLINED,
            amount_minor=request.amount_minor,
            currency=request.currency,
            failure_message=message,
            failure_code=code,
        )


class _errors:
    """Stripe's exceptions as ours: a card error as CardDeclined (or _Declined when
    charging), the network as GatewayUnavailable, anything else as GatewayError with
    `refused` for the customer. Logged by class and code, never with the request."""

    def __init__(self, refused: str, *, charging: bool = False) -> None:
        self.refused = refused
        self.charging = charging

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or not isinstance(exc, stripe.StripeError):
            return
        code = getattr(exc, "code", None)
        log.warning("stripe: %s (%s, HTTP %s)", type(exc).__name__, code, exc.http_status)
        if isinstance(exc, stripe.APIConnectionError):
            raise GatewayUnavailable(_UNAVAILABLE) from None
        if isinstance(exc, stripe.CardError):
            if self.charging:
                raise _Declined(exc) from None
            message, _code = _plain_decline(exc.user_message, code)
            raise CardDeclined(message) from None
        if isinstance(exc, stripe.RateLimitError) or (exc.http_status or 0) >= 500:
            raise GatewayUnavailable(_UNAVAILABLE) from None
        raise GatewayError(self.refused) from None


@functools.lru_cache(maxsize=8)
def gateway(config: Settings) -> StripeGateway:
    """The registry's factory (portal.payments._GATEWAYS): one gateway per settings, so
    its HTTP connections are kept between requests (the library keeps one session per
    thread, so one gateway serves every worker thread)."""
    return StripeGateway.from_settings(config)
