"""The sandbox gateway's charges: one charge per idempotency key (also when requests
race), each test card's outcome, the 3-D Secure step, processing then succeeded, and
refunds. Runs on SQLite and, with `-m db`, on PostgreSQL."""

from __future__ import annotations

import secrets
import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from portal.models import SandboxCharge
from portal.payments import (
    SANDBOX_PROCESSING_TIME,
    Charge,
    ChargeRequest,
    ChargeStatus,
    GatewayError,
    SandboxGateway,
    WebhookRejected,
)
from tests.clock import Clock
from tests.factories import TODAY

pytestmark = pytest.mark.db


def token_for(number: str) -> str:
    exp_year = str(TODAY.year + 2)
    submitted = {"number": number, "exp_month": "12", "exp_year": exp_year, "cvc": "123"}
    return SandboxGateway(today=lambda: TODAY).attach("bg", submitted).gateway_token


def ask(number: str = "4242424242424242", key: str | None = None, **over: Any) -> ChargeRequest:
    fields: dict[str, Any] = {
        "idempotency_key": key or secrets.token_urlsafe(32),
        "method_token": token_for(number),
        "customer_ref": None,
        "amount_minor": 12_345,
        "currency": "EUR",
        "description": "Invoices INV-1",
        "return_url": "http://portal.test/back",
    }
    fields.update(over)
    return ChargeRequest(**fields)


def charge(app: Flask, request: ChargeRequest) -> Charge:
    with app.app_context():
        return SandboxGateway().charge(request)


def test_a_good_card_is_charged_once_per_key(app: Flask) -> None:
    request = ask()
    first = charge(app, request)
    again = charge(app, request)
    assert first.status == ChargeStatus.SUCCEEDED
    assert (first.amount_minor, first.currency) == (12_345, "EUR")
    assert again == first
    other = charge(app, ask())
    assert other.reference != first.reference


@pytest.mark.parametrize(
    ("number", "status"),
    [
        ("4000000000000341", ChargeStatus.DECLINED),
        ("4000002760003184", ChargeStatus.REQUIRES_ACTION),
        ("4000000000003220", ChargeStatus.REQUIRES_ACTION),
        ("4000000000000259", ChargeStatus.PROCESSING),
        ("5555555555554444", ChargeStatus.SUCCEEDED),
    ],
)
def test_each_test_card_has_its_outcome(app: Flask, number: str, status: ChargeStatus) -> None:
    result = charge(app, ask(number))
    assert result.status == status
    if status == ChargeStatus.DECLINED:
        assert result.failure_message == "Your card was declined."
        assert result.failure_code == "card_declined"
    assert (result.action_url is not None) == (status == ChargeStatus.REQUIRES_ACTION)


def test_the_token_shows_neither_the_card_nor_more_than_its_behaviour() -> None:
    token = token_for("4000002760003184")
    assert token.startswith("sandbox_pm_3ds.")
    assert "4000002760003184"[-8:] not in token
    assert "." not in token_for("4242424242424242")


@pytest.mark.parametrize(("approve", "status"), [(True, "succeeded"), (False, "declined")])
def test_the_3ds_step_decides_the_charge(app: Flask, approve: bool, status: str) -> None:
    first = charge(app, ask("4000002760003184"))
    with app.app_context():
        gateway = SandboxGateway()
        done = gateway.authenticate(first.reference, approve=approve)
        assert done.status == status
        assert gateway.retrieve(first.reference).status == status
        # A second answer changes nothing.
        assert gateway.authenticate(first.reference, approve=not approve).status == status


def test_a_processing_charge_succeeds_when_its_time_has_come(app: Flask, clock: Clock) -> None:
    first = charge(app, ask("4000000000000259"))
    with app.app_context():
        gateway = SandboxGateway()
        assert gateway.retrieve(first.reference).status == ChargeStatus.PROCESSING
        clock.advance(seconds=SANDBOX_PROCESSING_TIME.total_seconds())
        assert gateway.retrieve(first.reference).status == ChargeStatus.SUCCEEDED


def test_refunds_are_bounded_by_the_charge(app: Flask) -> None:
    first = charge(app, ask())
    with app.app_context():
        gateway = SandboxGateway()
        assert gateway.refund(first.reference, 345).refunded_minor == 345
        with pytest.raises(GatewayError):
            gateway.refund(first.reference, 12_001)
        assert gateway.refund(first.reference, 12_000).refunded_minor == 12_345
        assert gateway.retrieve(first.reference).refunded_minor == 12_345
        with pytest.raises(GatewayError):
            gateway.retrieve("sandbox_ch_nonesuch")


def test_the_sandbox_takes_no_webhooks(app: Flask) -> None:
    with pytest.raises(WebhookRejected):
        SandboxGateway().parse_event(b"{}", {})


def test_twenty_racing_requests_with_one_key_make_one_charge(app: Flask) -> None:
    request = ask()
    start = threading.Barrier(20)
    results: list[Charge] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            start.wait()
            results.append(charge(app, request))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({result.reference for result in results}) == 1
    with app.app_context():
        from portal import db as portal_db

        with portal_db.engine().connect() as connection:
            count = connection.scalar(
                select(func.count())
                .select_from(SandboxCharge)
                .where(SandboxCharge.idempotency_key == request.idempotency_key)
            )
    assert count == 1
