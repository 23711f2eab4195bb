"""Payment-method gateways and the domain operations that store what they return.

We store a gateway's token and display details (brand, last four digits, expiry, holder
name), never a card number or security code. A gateway turns what the customer submitted
into a `PaymentMethodDetails`; `add_payment_method` and `set_default` store it.

The `Gateway` protocol is small so a real processor can be plugged in beside the sandbox:
attach/detach a payment method, charge it (with the payment attempt's idempotency key),
retrieve a charge, and parse a signed webhook. Two implement it:

- `SandboxGateway` (here): test cards posted to our own form; local development only.
- `portal.gateways.stripe.StripeGateway` (`PAYMENT_GATEWAY = "stripe"`): SetupIntents
  and Stripe.js Elements, so `collects_card_details = False` and the card number never
  reaches our server; the page gets a SetupIntent's client secret (`setup_intent`, for
  the bill group's Stripe customer, `create_customer`), Stripe.js confirms it and posts
  back the PaymentMethod id, which `attach` checks, attaches and describes. Charges are
  PaymentIntents; webhooks are verified with Stripe-Signature. README, "Stripe".

Register a gateway in `_GATEWAYS` (imported only when PAYMENT_GATEWAY names it).
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from flask import has_app_context
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal import clock
from portal.config import Settings
from portal.db import utcnow
from portal.locks import lock_bill_group
from portal.models import BillGroup, PaymentMethod, PaymentMethodType, SandboxCharge

log = logging.getLogger(__name__)

# The names of the fields a card form posts to a gateway that collects card details.
CARD_FORM_FIELDS = ("number", "exp_month", "exp_year", "cvc", "holder_name")
HOLDER_NAME_MAX = 200  # PaymentMethod.holder_name
EXPIRY_YEARS_AHEAD = 20  # furthest expiry year we accept, counted from today
_MAX_ID = 2**63 - 1  # BIGINT: a larger id cannot exist and would fail on PostgreSQL


# --- values -------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class CardDetails:
    """The card fields as a browser form posted them to the sandbox, unvalidated.

    repr() and str() mask the number, the security code and the expiry, so a card that
    ends up in a log line or a traceback shows no more than what we store.
    """

    number: str
    exp_month: str
    exp_year: str
    cvc: str
    holder_name: str = ""

    @classmethod
    def from_form(cls, submitted: Mapping[str, Any]) -> CardDetails:
        """From a posted form (a MultiDict or any mapping); missing fields are empty."""

        def field(name: str) -> str:
            value = submitted.get(name)
            return "" if value is None else str(value)

        return cls(
            number=field("number"),
            exp_month=field("exp_month"),
            exp_year=field("exp_year"),
            cvc=field("cvc"),
            holder_name=field("holder_name"),
        )

    def __repr__(self) -> str:
        digits = re.sub(r"[^0-9]", "", self.number)
        number = f"•••• {digits[-4:]}" if len(digits) >= 12 else "••••"
        return (
            f"CardDetails(number={number!r}, exp='••/••', cvc='•••', "
            f"holder_name={self.holder_name!r})"
        )


@dataclass(frozen=True)
class PaymentMethodDetails:
    """What a gateway returns and we store: a token and what people need to see."""

    type: PaymentMethodType
    brand: str | None
    last4: str
    exp_month: int | None
    exp_year: int | None
    holder_name: str | None
    gateway: str
    gateway_token: str

    def __post_init__(self) -> None:
        # The column holds four characters; refuse anything else here, where the message
        # cannot echo a number that a buggy gateway might pass.
        if len(self.last4) != 4:
            raise ValueError("last4 must be exactly four characters")


class GatewayError(Exception):
    """The gateway refused the payment method. `message` is for the customer; `field`
    names the form field to show it beside (None: a message for the whole form)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class CardDeclined(GatewayError):
    """The card is valid, but its issuer (or the sandbox) declined it."""


# --- the protocol -------------------------------------------------------------------


class GatewayUnavailable(GatewayError):
    """The gateway could not be reached or did not answer in time. Nothing is known to
    have been charged; asking again with the same idempotency key is safe."""


class WebhookRejected(Exception):
    """A webhook from the gateway that we refuse: a bad or missing signature, too old,
    or not parseable. The message is for the log, never for the sender."""


class ChargeStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"  # the issuer or the gateway refused: nothing was charged
    REQUIRES_ACTION = "requires_action"  # 3-D Secure: the customer must authenticate
    PROCESSING = "processing"  # accepted; the gateway confirms later (retrieve, webhook)


@dataclass(frozen=True)
class ChargeRequest:
    """What the portal asks a gateway to charge. `idempotency_key` is the payment
    attempt's key: asking twice with one key must charge once and answer the same."""

    idempotency_key: str
    method_token: str  # PaymentMethod.gateway_token
    customer_ref: str | None  # BillGroup.gateway_customer_ref
    amount_minor: int
    currency: str
    description: str  # shown on the customer's statement and in the gateway's dashboard
    # Where a 3-D Secure step sends the browser back to.
    return_url: str


@dataclass(frozen=True)
class Charge:
    """A gateway's answer about one charge, then or later (`retrieve`)."""

    reference: str  # the gateway's id for the charge (PaymentIntent id, sandbox id)
    status: ChargeStatus
    amount_minor: int
    currency: str
    # DECLINED: why, in plain words for the customer, and the gateway's code for it.
    failure_message: str | None = None
    failure_code: str | None = None
    # REQUIRES_ACTION: where the browser goes to authenticate (the sandbox's page), or
    # the client secret Stripe.js needs to run the step in our page.
    action_url: str | None = None
    client_secret: str | None = None
    # How much the gateway reports refunded so far.
    refunded_minor: int = 0


@dataclass(frozen=True)
class GatewayEvent:
    """A verified webhook from the gateway, reduced to what the portal applies."""

    id: str  # the gateway's event id: an event seen before is not applied again
    kind: str  # "charge.succeeded", "charge.failed" or "charge.refunded"
    charge: Charge


# --- the protocol -------------------------------------------------------------------


@runtime_checkable
class Gateway(Protocol):
    """A payment processor: stores payment methods as tokens and charges them."""

    # Stored in PaymentMethod.gateway beside the token.
    name: str
    # Test mode: the page should say so; nothing real is ever charged.
    is_sandbox: bool
    # True: our form renders and posts the card fields (CARD_FORM_FIELDS). False: the
    # processor's own script collects them in the browser and only a token is posted.
    collects_card_details: bool

    def attach(self, bill_group_ref: str, submitted: Mapping[str, str]) -> PaymentMethodDetails:
        """Validate and tokenise; raise GatewayError (or CardDeclined) on refusal."""
        ...

    def detach(self, token: str) -> None:
        """Tell the processor we no longer use this payment method."""
        ...

    def charge(self, request: ChargeRequest) -> Charge:
        """Charge a stored method. The same idempotency key gives the same charge and
        answer. GatewayUnavailable when the gateway is down or slow; a decline is a
        Charge with status DECLINED, not an exception."""
        ...

    def retrieve(self, reference: str) -> Charge:
        """The charge's state now (after a 3-D Secure step, or while processing)."""
        ...

    def parse_event(self, payload: bytes, headers: Mapping[str, str]) -> GatewayEvent | None:
        """Verify a webhook's signature and read it; None for an event kind the portal
        does not use. WebhookRejected when the signature or the body is bad."""
        ...


# --- the sandbox --------------------------------------------------------------------


def _default_today() -> dt.date:
    """The app's clock (which tests can move) inside the app, else UTC today."""
    return clock.today() if has_app_context() else utcnow().date()


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_brand(digits: str) -> str:
    """The brand by issuer identification number; "card" when we do not know it."""
    if digits.startswith("4"):
        return "visa"
    if digits[:2] in ("34", "37"):
        return "amex"
    if "51" <= digits[:2] <= "55" or "2221" <= digits[:4] <= "2720":
        return "mastercard"
    if digits.startswith(("6011", "65")) or "644" <= digits[:3] <= "649":
        return "discover"
    return "card"


_DIGITS = re.compile(r"[0-9]+")  # ASCII only: \d would admit other scripts' digits
_INVALID_NUMBER = "Enter a valid card number."

# Stripe's test numbers that fail: (exception, message, field). Every other valid
# number succeeds, as in Stripe's test mode.
_TEST_FAILURES: dict[str, tuple[type[GatewayError], str, str | None, str]] = {
    "4000000000000002": (CardDeclined, "Your card was declined.", None, "generic_decline"),
    "4000000000009995": (
        CardDeclined,
        "Your card has insufficient funds.",
        None,
        "insufficient_funds",
    ),
    "4000000000000069": (CardDeclined, "Your card has expired.", None, "expired_card"),
    "4000000000000127": (
        GatewayError,
        "Your card's security code is incorrect.",
        "cvc",
        "incorrect_cvc",
    ),
}


@dataclass(frozen=True, repr=False)
class _ValidCard:
    number: str
    brand: str
    exp_month: int
    exp_year: int
    holder_name: str | None


class SandboxGateway:
    """A stand-in processor that validates like a real one and stores nothing.

    Use Stripe's test numbers: 4242424242424242 (visa), 5555555555554444 (mastercard),
    378282246310005 (amex) and 6011111111111117 (discover) succeed; 4000000000000002 is
    declined, 4000000000009995 has insufficient funds, 4000000000000069 has expired and
    4000000000000127 fails the security-code check. When charged, 4000000000000341 is
    declined, 4000002760003184 and 4000000000003220 ask for a 3-D Secure step (the
    sandbox's page at /sandbox/authenticate/<reference>), and 4000000000000259 is
    processing for SANDBOX_PROCESSING_TIME, then succeeds.

    The card number, security code and expiry are never logged, never put in an
    exception, and never kept on this object (its only state is the clock).
    """

    __slots__ = ("_today",)

    name = "sandbox"
    is_sandbox = True
    collects_card_details = True

    def __init__(self, today: Callable[[], dt.date] = _default_today) -> None:
        self._today = today

    def attach(self, bill_group_ref: str, submitted: Mapping[str, str]) -> PaymentMethodDetails:
        card = _validate(CardDetails.from_form(submitted), self._today())
        failure = _TEST_FAILURES.get(card.number)
        if failure is not None:
            error, message, field, code = failure
            log.info("sandbox: card refused (%s)", code)
            raise error(message, field=field)
        token = _new_token(card.number)
        log.info("sandbox: attached a %s card", card.brand)
        return PaymentMethodDetails(
            type=PaymentMethodType.CARD,
            brand=card.brand,
            last4=card.number[-4:],
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            holder_name=card.holder_name,
            gateway=self.name,
            gateway_token=token,
        )

    def detach(self, token: str) -> None:
        """Nothing to release: the sandbox remembers no tokens."""
        log.debug("sandbox: detached a payment method")

    # Charging. The card's behaviour is in its token (see _CHARGE_BEHAVIOURS); the
    # sandbox's record of each charge is a SandboxCharge row, written in a session of
    # its own, as a processor's records are outside our transaction.

    def charge(self, request: ChargeRequest) -> Charge:
        with _sandbox_db() as db:
            existing = db.scalar(
                select(SandboxCharge).where(
                    SandboxCharge.idempotency_key == request.idempotency_key
                )
            )
            if existing is not None:
                return self._settled(db, existing)
            behaviour = _behaviour(request.method_token)
            now = self._now()
            row = SandboxCharge(
                reference="sandbox_ch_" + secrets.token_urlsafe(18),
                idempotency_key=request.idempotency_key,
                status=behaviour,
                amount_minor=request.amount_minor,
                currency=request.currency,
                created_at=now,
            )
            if behaviour == ChargeStatus.DECLINED:
                row.failure_message, row.failure_code = "Your card was declined.", "card_declined"
            if behaviour == ChargeStatus.PROCESSING:
                row.settles_at = now + SANDBOX_PROCESSING_TIME
            db.add(row)
            try:
                db.commit()
            except IntegrityError:  # the same key raced in from another request
                db.rollback()
                first = db.scalars(
                    select(SandboxCharge).where(
                        SandboxCharge.idempotency_key == request.idempotency_key
                    )
                ).one()
                return self._settled(db, first)
            log.info("sandbox: charge %s is %s", row.reference, row.status)
            return _charge_of(row, request.return_url)

    def retrieve(self, reference: str) -> Charge:
        with _sandbox_db() as db:
            row = db.scalar(select(SandboxCharge).where(SandboxCharge.reference == reference))
            if row is None:
                raise GatewayError("No such charge.")
            return self._settled(db, row)

    def parse_event(self, payload: bytes, headers: Mapping[str, str]) -> GatewayEvent | None:
        """The sandbox sends no webhooks: its outcomes are read back with retrieve()."""
        raise WebhookRejected("the sandbox gateway sends no webhooks")

    def authenticate(self, reference: str, *, approve: bool) -> Charge:
        """The sandbox's 3-D Secure page: the customer approves (the charge succeeds) or
        fails the check (it is declined). Only a charge waiting for it changes."""
        with _sandbox_db() as db:
            row = db.scalar(select(SandboxCharge).where(SandboxCharge.reference == reference))
            if row is None:
                raise GatewayError("No such charge.")
            if row.status == ChargeStatus.REQUIRES_ACTION:
                if approve:
                    row.status = ChargeStatus.SUCCEEDED
                else:
                    row.status = ChargeStatus.DECLINED
                    row.failure_message = "The card's security check was not completed."
                    row.failure_code = "authentication_failed"
                db.commit()
            return _charge_of(row)

    def refund(self, reference: str, amount_minor: int) -> Charge:
        """Refund part or all of a succeeded charge, as staff would in a processor's
        dashboard; the portal hears of it through retrieve()."""
        with _sandbox_db() as db:
            row = db.scalar(select(SandboxCharge).where(SandboxCharge.reference == reference))
            if row is None or row.status != ChargeStatus.SUCCEEDED:
                raise GatewayError("Only a succeeded charge can be refunded.")
            if not 0 < amount_minor <= row.amount_minor - row.refunded_minor:
                raise GatewayError("The refund is more than what is left of the charge.")
            row.refunded_minor += amount_minor
            db.commit()
            return _charge_of(row)

    def _now(self) -> dt.datetime:
        return clock.now() if has_app_context() else utcnow()

    def _settled(self, db: Session, row: SandboxCharge) -> Charge:
        """A processing charge succeeds once its time has come."""
        if (
            row.status == ChargeStatus.PROCESSING
            and row.settles_at is not None
            and self._now() >= row.settles_at
        ):
            row.status = ChargeStatus.SUCCEEDED
            db.commit()
        return _charge_of(row)


# How long the sandbox's "processing" card takes to succeed.
SANDBOX_PROCESSING_TIME = dt.timedelta(seconds=5)

# Cards that attach but behave differently when charged (Stripe's test numbers where
# Stripe has one), written into the token so the sandbox needs no record of the card.
_CHARGE_BEHAVIOURS: dict[str, ChargeStatus] = {
    "4000000000000341": ChargeStatus.DECLINED,  # attaches, then every charge is declined
    "4000002760003184": ChargeStatus.REQUIRES_ACTION,  # 3-D Secure on every charge
    "4000000000003220": ChargeStatus.REQUIRES_ACTION,  # 3-D Secure 2
    "4000000000000259": ChargeStatus.PROCESSING,  # sandbox only: pending, then succeeds
}


def _behaviour(token: str) -> ChargeStatus:
    tag, dot, _ = token.removeprefix("sandbox_pm_").partition(".")  # "." is not urlsafe
    return {
        "decline": ChargeStatus.DECLINED,
        "3ds": ChargeStatus.REQUIRES_ACTION,
        "slow": ChargeStatus.PROCESSING,
    }.get(tag if dot else "", ChargeStatus.SUCCEEDED)


_TAGS = {
    ChargeStatus.DECLINED: "decline.",
    ChargeStatus.REQUIRES_ACTION: "3ds.",
    ChargeStatus.PROCESSING: "slow.",
}


def _charge_of(row: SandboxCharge, return_url: str | None = None) -> Charge:
    action_url = None
    if row.status == ChargeStatus.REQUIRES_ACTION:
        action_url = f"/sandbox/authenticate/{row.reference}"
    return Charge(
        reference=row.reference,
        status=ChargeStatus(row.status),
        amount_minor=row.amount_minor,
        currency=row.currency,
        failure_message=row.failure_message,
        failure_code=row.failure_code,
        action_url=action_url,
        refunded_minor=row.refunded_minor,
    )


def _sandbox_db() -> Session:
    """A session of the sandbox's own, on the app's database."""
    from portal import db as portal_db  # the app's engine; imported late (db imports config)

    return Session(portal_db.engine(), expire_on_commit=False)


def _refuse(message: str, field: str) -> GatewayError:
    log.debug("sandbox: rejected the %s field", field)
    return GatewayError(message, field=field)


def _validate(card: CardDetails, today: dt.date) -> _ValidCard:
    """The checks a processor makes before it asks the issuer, first failure first.

    Nothing here converts unchecked input (int() on a bad string would put the input in
    the exception that the GatewayError is chained to)."""
    number = re.sub(r"[ \-]", "", card.number.strip())
    if not _DIGITS.fullmatch(number) or not 12 <= len(number) <= 19 or not luhn_valid(number):
        raise _refuse(_INVALID_NUMBER, "number")
    brand = card_brand(number)
    if brand == "amex" and len(number) != 15:
        raise _refuse(_INVALID_NUMBER, "number")

    month_text, year_text = card.exp_month.strip(), card.exp_year.strip()
    if not (_DIGITS.fullmatch(month_text) and len(month_text) <= 2 and 1 <= int(month_text) <= 12):
        raise _refuse("Enter a valid expiry month (1 to 12).", "exp_month")
    if not (_DIGITS.fullmatch(year_text) and len(year_text) in (2, 4)):
        raise _refuse("Enter a valid expiry year.", "exp_year")
    month, year = int(month_text), int(year_text)
    if year < 100:
        year += 2000
    if year < today.year:
        raise _refuse("Your card's expiry year is in the past.", "exp_year")
    if year > today.year + EXPIRY_YEARS_AHEAD:
        raise _refuse("Enter a valid expiry year.", "exp_year")
    if (year, month) < (today.year, today.month):
        raise _refuse("Your card's expiry date is in the past.", "exp_month")

    cvc = card.cvc.strip()
    cvc_length = 4 if brand == "amex" else 3
    if not (_DIGITS.fullmatch(cvc) and len(cvc) == cvc_length):
        where = "front" if brand == "amex" else "back"
        raise _refuse(
            f"Enter the {cvc_length}-digit security code from the {where} of your card.", "cvc"
        )

    holder = " ".join(card.holder_name.split())
    if len(holder) > HOLDER_NAME_MAX:
        raise _refuse(
            f"Enter the name on the card in at most {HOLDER_NAME_MAX} characters.", "holder_name"
        )
    if any(unicodedata.category(char).startswith("C") for char in holder):
        raise _refuse("Enter the name as it appears on the card.", "holder_name")

    return _ValidCard(number, brand, month, year, holder or None)


def _new_token(number: str) -> str:
    """Random, never derived from the card, with the tag of how it behaves when charged
    (if it is one of _CHARGE_BEHAVIOURS); redrawn in the astronomically unlikely case
    that the random part happens to contain the card's last eight digits."""
    behaviour = _CHARGE_BEHAVIOURS.get(number)
    tag = _TAGS[behaviour] if behaviour is not None else ""
    while True:
        token = "sandbox_pm_" + tag + secrets.token_urlsafe(18)  # 18 bytes: 24 characters
        if number[-8:] not in token:
            return token


def method_label(method: PaymentMethod) -> str:
    """How pages, receipts and the history name a stored method: "Visa ending 4242"."""
    name = (method.brand or method.type.label).title() if method.brand else method.type.label
    return f"{name} ending {method.last4}"


# --- the registry -------------------------------------------------------------------


def _stripe(config: Settings) -> Gateway:
    from portal.gateways import stripe  # imports the stripe library only when chosen

    return stripe.gateway(config)


_GATEWAYS: dict[str, Callable[[Settings], Gateway]] = {
    "sandbox": lambda config: SandboxGateway(),
    "stripe": _stripe,
}


def get_gateway(config: Settings) -> Gateway:
    """The gateway PAYMENT_GATEWAY names ("sandbox" when unset)."""
    name = config.PAYMENT_GATEWAY or "sandbox"
    factory = _GATEWAYS.get(name) if isinstance(name, str) else None
    if factory is None:
        known = ", ".join(sorted(_GATEWAYS))
        raise ValueError(f"Unknown PAYMENT_GATEWAY {name!r}: use one of {known}.")
    return factory(config)


# --- domain operations (the caller commits and records the audit event) --------------


def _clear_default(db: Session, bill_group: BillGroup) -> None:
    """Unset the current default and flush, so the one-default unique index never sees
    two at once, whatever order the next flush writes rows in."""
    current = db.scalars(
        select(PaymentMethod).where(
            PaymentMethod.bill_group_id == bill_group.id, PaymentMethod.is_default.is_(True)
        )
    )
    for method in current:
        method.is_default = False
    db.flush()


def add_payment_method(
    db: Session, bill_group: BillGroup, details: PaymentMethodDetails, *, make_default: bool
) -> PaymentMethod:
    """Store a gateway's payment method in the bill group (which must be in `db`). It
    becomes the default if asked, or if the bill group has no payment method yet."""
    lock_bill_group(db, bill_group.id)
    has_any = (
        db.scalar(
            select(PaymentMethod.id).where(PaymentMethod.bill_group_id == bill_group.id).limit(1)
        )
        is not None
    )
    is_default = make_default or not has_any
    if is_default:
        _clear_default(db, bill_group)
    method = PaymentMethod(
        bill_group=bill_group,
        type=details.type,
        brand=details.brand,
        last4=details.last4,
        exp_month=details.exp_month,
        exp_year=details.exp_year,
        holder_name=details.holder_name,
        gateway=details.gateway,
        gateway_token=details.gateway_token,
        is_default=is_default,
    )
    db.add(method)
    db.flush()
    db.expire(bill_group, ["default_payment_method"])
    return method


def set_default(db: Session, bill_group: BillGroup, payment_method_id: int) -> PaymentMethod:
    """Make one of the bill group's payment methods its default.

    LookupError if no payment method with that id belongs to this bill group (whether or
    not it exists in another); nothing is changed then."""
    if isinstance(payment_method_id, bool) or not isinstance(payment_method_id, int):
        raise TypeError("payment_method_id must be an int")
    if not 0 < payment_method_id <= _MAX_ID:
        raise LookupError("No such payment method in this bill group.")
    lock_bill_group(db, bill_group.id)
    method = db.scalar(
        select(PaymentMethod).where(
            PaymentMethod.id == payment_method_id,
            PaymentMethod.bill_group_id == bill_group.id,
        )
    )
    if method is None:
        raise LookupError("No such payment method in this bill group.")
    if not method.is_default:
        _clear_default(db, bill_group)
        method.is_default = True
        db.flush()
        db.expire(bill_group, ["default_payment_method"])
    return method
