"""Payment-method gateways (the sandbox, the registry) and storing what they return.

The sandbox tests need no database. The tests that use the `db` fixture run on SQLite
and, with PORTAL_TEST_DATABASE_URL set and `-m db`, on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from portal import payments
from portal.config import Settings, settings_of
from portal.models import BillGroup, PaymentMethod, PaymentMethodType
from portal.payments import (
    CardDeclined,
    CardDetails,
    Gateway,
    GatewayError,
    PaymentMethodDetails,
    SandboxGateway,
    add_payment_method,
    get_gateway,
    set_default,
)
from tests.clock import Clock
from tests.factories import make_bill_group, make_payment_method

TODAY = dt.date(2026, 11, 21)


def sandbox(today: dt.date = TODAY) -> SandboxGateway:
    return SandboxGateway(today=lambda: today)


def form(**overrides: str) -> dict[str, str]:
    return {
        "number": "4242 4242 4242 4242",
        "exp_month": "12",
        "exp_year": "2030",
        "cvc": "123",
        "holder_name": "Ada Lovelace",
    } | overrides


def luhn_complete(prefix: str, length: int) -> str:
    """A Luhn-valid number of `length` digits starting with `prefix` (zeros between)."""
    body = prefix.ljust(length - 1, "0")
    total = 0
    for index, char in enumerate(reversed(body)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return body + str(-total % 10)


def refused(gateway: SandboxGateway, **overrides: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        gateway.attach("bg-1", form(**overrides))
    return caught.value


def test_luhn_helper_agrees_with_known_numbers() -> None:
    # The helper the tables below rely on, checked against published test numbers.
    assert luhn_complete("424242424242424", 16) == "4242424242424242"
    assert luhn_complete("37828224631000", 15) == "378282246310005"
    assert luhn_complete("601111111111111", 16) == "6011111111111117"


# --- the sandbox: numbers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "cvc", "brand", "last4"),
    [
        ("4242424242424242", "123", "visa", "4242"),
        ("5555555555554444", "123", "mastercard", "4444"),
        ("378282246310005", "1234", "amex", "0005"),
        ("6011111111111117", "123", "discover", "1117"),
    ],
)
def test_succeeding_test_numbers(number: str, cvc: str, brand: str, last4: str) -> None:
    details = sandbox().attach("bg-1", form(number=number, cvc=cvc))
    assert details == PaymentMethodDetails(
        type=PaymentMethodType.CARD,
        brand=brand,
        last4=last4,
        exp_month=12,
        exp_year=2030,
        holder_name="Ada Lovelace",
        gateway="sandbox",
        gateway_token=details.gateway_token,
    )
    assert re.fullmatch(r"sandbox_pm_[A-Za-z0-9_-]{24}", details.gateway_token)


@pytest.mark.parametrize(
    ("number", "error", "message", "field"),
    [
        ("4000000000000002", CardDeclined, "Your card was declined.", None),
        ("4000000000009995", CardDeclined, "Your card has insufficient funds.", None),
        ("4000000000000069", CardDeclined, "Your card has expired.", None),
        ("4000000000000127", GatewayError, "Your card's security code is incorrect.", "cvc"),
    ],
)
def test_failing_test_numbers(
    number: str, error: type[GatewayError], message: str, field: str | None
) -> None:
    exc = refused(sandbox(), number=number)
    assert type(exc) is error
    assert (exc.message, exc.field, str(exc)) == (message, field, message)


def test_declines_come_after_validation() -> None:
    # A processor checks the form before it asks the issuer.
    exc = refused(sandbox(), number="4000000000000002", cvc="12")
    assert type(exc) is GatewayError
    assert exc.field == "cvc"


@pytest.mark.parametrize(
    "number",
    ["4242-4242-4242-4242", " 4242 4242 4242 4242 ", "4242424242424242", "4242 - 4242 4242-4242"],
)
def test_spaces_and_dashes_are_ignored(number: str) -> None:
    assert sandbox().attach("bg-1", form(number=number)).last4 == "4242"


@pytest.mark.parametrize(
    "number",
    [
        pytest.param("4111111111111111", id="visa"),
        pytest.param("5105105105105100", id="mastercard"),
        pytest.param(luhn_complete("4", 13), id="13-digit"),
        pytest.param(luhn_complete("35", 16), id="jcb-as-card"),
        pytest.param(luhn_complete("62", 19), id="19-digit"),
        pytest.param(luhn_complete("9", 12), id="12-digit"),
    ],
)
def test_any_other_luhn_valid_number_succeeds(number: str) -> None:
    details = sandbox().attach("bg-1", form(number=number))
    assert details.last4 == number[-4:]


@pytest.mark.parametrize(
    "number",
    [
        pytest.param("", id="empty"),
        pytest.param("    ", id="blank"),
        pytest.param("4242424242424241", id="luhn"),
        pytest.param("4242424242424243", id="luhn-2"),
        pytest.param("4242 4242 4242 4224", id="transposed"),
        pytest.param(luhn_complete("4", 11), id="11-digits"),
        pytest.param(luhn_complete("4", 20), id="20-digits"),
        pytest.param("4242abcd42424242", id="letters"),
        pytest.param("4242 4242 4242 424x", id="trailing-letter"),
        pytest.param("4242.4242.4242.4242", id="dots"),
        pytest.param("4242_4242_4242_4242", id="underscores"),
        pytest.param("+4242424242424242", id="sign"),
        pytest.param("٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢", id="arabic-indic-digits"),
        pytest.param("４２４２４２４２４２４２４２４２", id="fullwidth-digits"),
        pytest.param(luhn_complete("34", 16), id="amex-16-digits"),
        pytest.param(luhn_complete("37", 14), id="amex-14-digits"),
    ],
)
def test_invalid_numbers(number: str) -> None:
    exc = refused(sandbox(), number=number)
    assert type(exc) is GatewayError
    assert (exc.message, exc.field) == ("Enter a valid card number.", "number")


@pytest.mark.parametrize(
    ("prefix", "length", "brand"),
    [
        ("41", 16, "visa"),
        ("4", 13, "visa"),
        ("4", 19, "visa"),
        ("51", 16, "mastercard"),
        ("53", 16, "mastercard"),
        ("55", 16, "mastercard"),
        ("50", 16, "card"),
        ("56", 16, "card"),
        ("2221", 16, "mastercard"),
        ("2500", 16, "mastercard"),
        ("2720", 16, "mastercard"),
        ("2220", 16, "card"),
        ("2721", 16, "card"),
        ("34", 15, "amex"),
        ("37", 15, "amex"),
        ("35", 16, "card"),
        ("36", 14, "card"),
        ("6011", 16, "discover"),
        ("6010", 16, "card"),
        ("6012", 16, "card"),
        ("65", 16, "discover"),
        ("644", 16, "discover"),
        ("649", 16, "discover"),
        ("643", 16, "card"),
        ("1", 16, "card"),
    ],
)
def test_brand_by_iin(prefix: str, length: int, brand: str) -> None:
    cvc = "1234" if brand == "amex" else "123"
    details = sandbox().attach("bg-1", form(number=luhn_complete(prefix, length), cvc=cvc))
    assert details.brand == brand


# --- the sandbox: expiry, security code, name -------------------------------------------


@pytest.mark.parametrize(
    ("month", "year", "stored"),
    [
        ("11", "2026", (11, 2026)),  # this month still works
        ("12", "2026", (12, 2026)),
        ("1", "2027", (1, 2027)),
        ("01", "27", (1, 2027)),
        ("11", "26", (11, 2026)),
        (" 7 ", " 2030 ", (7, 2030)),
        ("12", "2046", (12, 2046)),  # twenty years ahead
    ],
)
def test_valid_expiry(month: str, year: str, stored: tuple[int, int]) -> None:
    details = sandbox().attach("bg-1", form(exp_month=month, exp_year=year))
    assert (details.exp_month, details.exp_year) == stored


@pytest.mark.parametrize(
    ("month", "year", "field", "message"),
    [
        ("10", "2026", "exp_month", "Your card's expiry date is in the past."),
        ("10", "26", "exp_month", "Your card's expiry date is in the past."),
        ("12", "2025", "exp_year", "Your card's expiry year is in the past."),
        ("12", "25", "exp_year", "Your card's expiry year is in the past."),
        ("12", "1999", "exp_year", "Your card's expiry year is in the past."),
        ("0", "2030", "exp_month", "Enter a valid expiry month (1 to 12)."),
        ("00", "2030", "exp_month", "Enter a valid expiry month (1 to 12)."),
        ("13", "2030", "exp_month", "Enter a valid expiry month (1 to 12)."),
        ("012", "2030", "exp_month", "Enter a valid expiry month (1 to 12)."),
        ("", "2030", "exp_month", "Enter a valid expiry month (1 to 12)."),
        ("ab", "2030", "exp_month", "Enter a valid expiry month (1 to 12)."),
        ("-1", "2030", "exp_month", "Enter a valid expiry month (1 to 12)."),
        ("1.5", "2030", "exp_month", "Enter a valid expiry month (1 to 12)."),
        ("٣", "2030", "exp_month", "Enter a valid expiry month (1 to 12)."),
        ("12", "", "exp_year", "Enter a valid expiry year."),
        ("12", "7", "exp_year", "Enter a valid expiry year."),
        ("12", "203", "exp_year", "Enter a valid expiry year."),
        ("12", "20300", "exp_year", "Enter a valid expiry year."),
        ("12", "20ab", "exp_year", "Enter a valid expiry year."),
        ("12", "2047", "exp_year", "Enter a valid expiry year."),
        ("12", "9999", "exp_year", "Enter a valid expiry year."),
    ],
)
def test_invalid_expiry(month: str, year: str, field: str, message: str) -> None:
    exc = refused(sandbox(), exp_month=month, exp_year=year)
    assert type(exc) is GatewayError
    assert (exc.field, exc.message) == (field, message)


def test_expiry_is_judged_against_the_injected_today() -> None:
    card = form(exp_month="12", exp_year="2030")
    assert sandbox(dt.date(2030, 12, 31)).attach("bg-1", card).exp_year == 2030
    assert refused(sandbox(dt.date(2031, 1, 1)), **card).field == "exp_year"
    assert refused(sandbox(dt.date(2030, 12, 31)), exp_month="11").field == "exp_month"


@pytest.mark.parametrize(
    ("number", "cvc", "ok"),
    [
        ("4242424242424242", "123", True),
        ("4242424242424242", " 123 ", True),
        ("4242424242424242", "12", False),
        ("4242424242424242", "1234", False),
        ("4242424242424242", "", False),
        ("4242424242424242", "12a", False),
        ("4242424242424242", "١٢٣", False),
        ("378282246310005", "1234", True),
        ("378282246310005", "123", False),
        ("378282246310005", "12345", False),
        ("6011111111111117", "1234", False),
        ("5555555555554444", "999", True),
    ],
)
def test_security_code(number: str, cvc: str, ok: bool) -> None:
    if ok:
        assert sandbox().attach("bg-1", form(number=number, cvc=cvc)).last4 == number[-4:]
    else:
        exc = refused(sandbox(), number=number, cvc=cvc)
        assert type(exc) is GatewayError
        assert exc.field == "cvc"
        assert ("4-digit" if number.startswith("37") else "3-digit") in exc.message


@pytest.mark.parametrize(
    ("submitted", "stored"),
    [("  Ada   Lovelace ", "Ada Lovelace"), ("", None), ("   ", None), ("Zoë Ñúñez", "Zoë Ñúñez")],
)
def test_holder_name_is_tidied(submitted: str, stored: str | None) -> None:
    assert sandbox().attach("bg-1", form(holder_name=submitted)).holder_name == stored


def test_holder_name_may_be_left_out() -> None:
    submitted = form()
    del submitted["holder_name"]
    assert sandbox().attach("bg-1", submitted).holder_name is None


@pytest.mark.parametrize("name", ["x" * 201, "Ada\x00Lovelace", "Ada\u200bLovelace"])
def test_invalid_holder_name(name: str) -> None:
    assert refused(sandbox(), holder_name=name).field == "holder_name"


def test_missing_fields_are_refused_not_crashed() -> None:
    with pytest.raises(GatewayError) as caught:
        sandbox().attach("bg-1", {})
    assert caught.value.field == "number"


# --- the sandbox: tokens and secrets ----------------------------------------------------


def test_tokens_are_random_and_never_derived_from_the_card() -> None:
    gateway = sandbox()
    number = "5555555555554444"
    tokens = {gateway.attach("bg-1", form(number=number)).gateway_token for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert number not in token
        assert number[-8:] not in token


def test_token_comes_from_secrets_and_is_redrawn_if_it_shows_the_card(monkeypatch) -> None:
    draws = iter(["abcd42424242xxxxxxxxxxxx", "A" * 24])
    monkeypatch.setattr(payments.secrets, "token_urlsafe", lambda nbytes: next(draws))
    details = sandbox().attach("bg-1", form())
    assert details.gateway_token == "sandbox_pm_" + "A" * 24


CARD_ERRORS: list[dict[str, str]] = [
    {"number": "4000000000000002"},
    {"number": "4000000000000127"},
    {"number": "4242424242424241"},
    {"exp_month": "13"},
    {"exp_month": "ab"},
    {"exp_year": "2020"},
    {"exp_year": "20ab"},
    {"cvc": "98"},
    {"holder_name": "x" * 300},
]


@pytest.mark.parametrize("overrides", CARD_ERRORS)
def test_errors_never_carry_the_card(overrides: dict[str, str]) -> None:
    card = form(**overrides)
    exc = refused(sandbox(), **card)
    shown = " ".join([str(exc), repr(exc), exc.message, repr(exc.args)])
    digits = re.sub(r"[ -]", "", card["number"])
    assert digits not in shown
    assert digits[-8:] not in shown
    assert card["cvc"] not in shown
    assert exc.__cause__ is None
    assert exc.__context__ is None


def test_card_details_repr_masks_the_number_cvc_and_expiry() -> None:
    card = CardDetails(
        number="5555 5555 5555 4444",
        exp_month="07",
        exp_year="2039",
        cvc="987",
        holder_name="Ada Lovelace",
    )
    for shown in (repr(card), str(card), f"{card}", repr([card])):
        assert "4444" in shown
        assert "Ada Lovelace" in shown
        digits = re.sub(r"[^0-9]", "", shown)
        assert "555555554444" not in digits
        assert "5555 5555 5555" not in shown
        assert "987" not in shown
        assert "2039" not in shown
        assert "07" not in shown


def test_card_details_repr_of_a_short_number_shows_none_of_it() -> None:
    assert "12345" not in repr(CardDetails("12345", "1", "30", "123"))


def test_card_details_from_form() -> None:
    card = CardDetails.from_form({"number": "4242", "cvc": "1", "unrelated": "x"})
    assert (card.number, card.exp_month, card.exp_year, card.cvc, card.holder_name) == (
        "4242",
        "",
        "",
        "1",
        "",
    )


def test_logs_never_contain_the_card(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = sandbox()
    number = "5555555555554444"
    card = form(number=number, cvc="987", exp_month="07", exp_year="2039")
    gateway.attach("bg-1", card)
    for overrides in CARD_ERRORS:
        with pytest.raises(GatewayError):
            gateway.attach("bg-1", card | overrides)
    gateway.detach("sandbox_pm_x")
    records = [r for r in caplog.records if r.name == "portal.payments"]
    assert len(records) >= 1 + len(CARD_ERRORS)  # the sandbox does log; none of the card
    for record in caplog.records:
        message = record.getMessage()
        for secret in (number, number[-8:], "4000000000000002", "4242424242424241"):
            assert secret not in message
        assert "987" not in message
        assert "2039" not in message


def test_the_gateway_keeps_no_card_state() -> None:
    gateway = sandbox()
    gateway.attach("bg-1", form())
    assert not hasattr(gateway, "__dict__")
    assert SandboxGateway.__slots__ == ("_today",)


def test_sandbox_satisfies_the_protocol() -> None:
    gateway = sandbox()
    assert isinstance(gateway, Gateway)
    assert (gateway.name, gateway.is_sandbox, gateway.collects_card_details) == (
        "sandbox",
        True,
        True,
    )
    assert gateway.detach("sandbox_pm_anything") is None


def test_details_refuse_anything_but_four_last_digits() -> None:
    with pytest.raises(ValueError, match="four") as caught:
        PaymentMethodDetails(
            PaymentMethodType.CARD, "visa", "4242424242424242", 1, 2030, None, "x", "t"
        )
    assert "4242" not in str(caught.value)


def test_gateway_errors_carry_message_and_field() -> None:
    exc = CardDeclined("No.")
    assert isinstance(exc, GatewayError)
    assert (exc.message, exc.field, str(exc)) == ("No.", None, "No.")
    assert GatewayError("Bad.", field="cvc").field == "cvc"


# --- the registry -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sandbox", ""])
def test_get_gateway_defaults_to_the_sandbox(name: str) -> None:
    assert isinstance(get_gateway(Settings(PAYMENT_GATEWAY=name)), SandboxGateway)


@pytest.mark.parametrize("name", ["paypal", "Sandbox", "sandbox ", "Stripe", 1])
def test_get_gateway_refuses_an_unknown_name(name: object) -> None:
    with pytest.raises(ValueError) as caught:
        get_gateway(Settings(PAYMENT_GATEWAY=name))
    message = str(caught.value)
    assert "PAYMENT_GATEWAY" in message
    assert repr(name) in message
    assert "sandbox" in message


def test_default_clock_outside_the_app_is_utc_today() -> None:
    today = dt.datetime.now(dt.UTC).date()
    last_month = today.replace(day=1) - dt.timedelta(days=1)
    gateway = SandboxGateway()
    this_month = form(exp_month=str(today.month), exp_year=str(today.year))
    assert gateway.attach("bg-1", this_month).exp_year == today.year
    expired = form(exp_month=str(last_month.month), exp_year=str(last_month.year))
    assert refused(gateway, **expired).message.startswith("Your card's expiry")


def test_default_clock_is_the_apps_inside_it(app) -> None:
    # The app's clock (which tests move) decides, not the wall clock.
    Clock(dt.datetime(2031, 1, 1, tzinfo=dt.UTC)).install(app)
    with app.app_context():
        exc = refused(get_gateway(settings_of(app)), exp_month="12", exp_year="2030")
    assert exc.field == "exp_year"


# --- storing payment methods ------------------------------------------------------------


def details(last4: str = "4242", **overrides: Any) -> PaymentMethodDetails:
    values: dict[str, Any] = {
        "type": PaymentMethodType.CARD,
        "brand": "visa",
        "last4": last4,
        "exp_month": 12,
        "exp_year": 2030,
        "holder_name": "Ada Lovelace",
        "gateway": "sandbox",
        "gateway_token": "sandbox_pm_" + secrets.token_urlsafe(18),
    }
    return PaymentMethodDetails(**(values | overrides))


def defaults(db: Session, group: BillGroup) -> list[int]:
    return list(
        db.scalars(
            select(PaymentMethod.id)
            .where(PaymentMethod.bill_group_id == group.id, PaymentMethod.is_default.is_(True))
            .order_by(PaymentMethod.id)
        )
    )


def test_the_first_method_becomes_default_regardless(db: Session) -> None:
    group = make_bill_group(db)
    first = add_payment_method(db, group, details("1111"), make_default=False)
    second = add_payment_method(db, group, details("2222"), make_default=False)
    db.commit()
    assert (first.is_default, second.is_default) == (True, False)
    assert defaults(db, group) == [first.id]
    assert group.default_payment_method is first
    assert [m.id for m in group.payment_methods] == [first.id, second.id]


def test_adding_with_make_default_moves_the_default(db: Session) -> None:
    group = make_bill_group(db)
    first = add_payment_method(db, group, details("1111"), make_default=True)
    assert group.default_payment_method is first
    second = add_payment_method(db, group, details("2222"), make_default=True)
    db.commit()
    assert defaults(db, group) == [second.id]
    assert (first.is_default, second.is_default) == (False, True)
    assert group.default_payment_method is second


def test_add_stores_every_detail(db: Session) -> None:
    group = make_bill_group(db)
    given = details(
        "3000",
        type=PaymentMethodType.SEPA_DEBIT,
        brand="Deutsche Bank",
        exp_month=None,
        exp_year=None,
        holder_name=None,
    )
    method_id = add_payment_method(db, group, given, make_default=False).id
    db.commit()
    db.expunge_all()
    stored = db.get(PaymentMethod, method_id)
    assert stored is not None
    assert stored.bill_group_id == group.id
    assert (
        PaymentMethodDetails(
            stored.type,
            stored.brand,
            stored.last4,
            stored.exp_month,
            stored.exp_year,
            stored.holder_name,
            stored.gateway,
            stored.gateway_token,
        )
        == given
    )


def test_add_and_set_default_leave_the_commit_to_the_caller(db: Session) -> None:
    group = make_bill_group(db)
    db.commit()
    first = add_payment_method(db, group, details("1111"), make_default=True)
    first_id = first.id
    db.commit()
    add_payment_method(db, group, details("2222"), make_default=True)
    db.rollback()
    assert defaults(db, group) == [first_id]
    assert db.scalar(select(PaymentMethod.id).where(PaymentMethod.last4 == "2222")) is None
    second_id = add_payment_method(db, group, details("2222"), make_default=False).id
    db.commit()
    set_default(db, group, second_id)
    db.rollback()
    assert defaults(db, group) == [first_id]


def test_set_default_switches_exactly_one_default(db: Session) -> None:
    group = make_bill_group(db)
    a, b, c = (add_payment_method(db, group, details(n * 4), make_default=False) for n in "123")
    db.commit()
    assert defaults(db, group) == [a.id]
    assert group.default_payment_method is a
    # Towards a higher id, then back towards a lower one: the index must never see two.
    for target in (c, a, b, b):
        assert set_default(db, group, target.id) is target
        db.commit()
        assert defaults(db, group) == [target.id]
        assert group.default_payment_method is target
        assert [m.is_default for m in (a, b, c)] == [m is target for m in (a, b, c)]


def test_set_default_is_scoped_to_the_bill_group(db: Session) -> None:
    mine, theirs = make_bill_group(db), make_bill_group(db)
    my_default = make_payment_method(db, mine, is_default=True)
    my_other = make_payment_method(db, mine)
    their_default = make_payment_method(db, theirs, is_default=True)
    their_other = make_payment_method(db, theirs)
    db.commit()
    missing = their_other.id + 1000
    for foreign in (their_other.id, their_default.id, missing, 2**63, 2**80, 0, -1):
        with pytest.raises(LookupError):
            set_default(db, mine, foreign)
        assert not db.dirty and not db.new
        db.commit()
        db.expire_all()
        assert defaults(db, mine) == [my_default.id]
        assert defaults(db, theirs) == [their_default.id]
    assert my_other.is_default is False
    assert their_other.is_default is False


def test_set_default_wants_an_int(db: Session) -> None:
    group = make_bill_group(db)
    method = make_payment_method(db, group, is_default=True)
    for wrong in (str(method.id), True, float(method.id), None):
        with pytest.raises(TypeError):
            set_default(db, group, wrong)  # type: ignore[arg-type]


def test_stored_row_has_last4_only(db: Session) -> None:
    group = make_bill_group(db)
    number = "5555555555554444"
    found = sandbox().attach(group.public_id, form(number=number, cvc="987"))
    add_payment_method(db, group, found, make_default=True)
    db.commit()
    rows = db.execute(text("SELECT * FROM payment_methods")).mappings().all()
    assert len(rows) == 1
    row = rows[0]
    assert row["last4"] == "4444"
    assert row["gateway"] == "sandbox"
    assert row["gateway_token"] == found.gateway_token
    everything = " ".join(str(value) for value in row.values())
    assert number not in everything
    assert number[-8:] not in everything
    assert number[:6] not in everything
