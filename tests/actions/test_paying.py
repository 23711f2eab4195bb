"""Paying, rule by rule, through portal.actions.paying on a real database and the real
sandbox gateway: what the customer may pay, what a confirm charges (once), and what each
gateway answer does to the attempt, the payments and the invoices. Beside each rule, the
abuse that tries to break it."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import db as portal_db
from portal import payments, receipts
from portal.actions import Actor, Invalid, NotFound, paying
from portal.config import settings_of
from portal.models import (
    AttemptState,
    AuditEvent,
    BillGroup,
    Invoice,
    InvoiceStatus,
    OutboxMessage,
    Payment,
    PaymentApplication,
    PaymentAttempt,
    PaymentSource,
    PaymentStatus,
    ReceiptDue,
    SandboxCharge,
    WebhookEvent,
)
from portal.payments import Charge, ChargeStatus, GatewayEvent, GatewayUnavailable
from tests.clock import MIDDAY
from tests.factories import TODAY, make_bill_group, make_invoice, make_payment_method
from tests.settings import change_settings

ME = Actor.customer("ap@acme.com")
URL = "https://portal.example.test/return"


@contextmanager
def session(app: Flask) -> Iterator[Session]:
    """The app's own request session, as a view has it."""
    with app.test_request_context():
        yield portal_db.session()


@pytest.fixture
def world(app: Flask, db: Session) -> dict[str, int]:
    """A EUR bill group with two open invoices (120.00 due first, then 60.00), a paid
    one, a void one, and a card; another group with its own invoice and card."""
    group = make_bill_group(db)
    older = make_invoice(db, group, issue_date=TODAY - dt.timedelta(days=40))
    newer = make_invoice(db, group, lines=[("Support", "1", 5000, 2000)])
    paid = make_invoice(db, group, status=InvoiceStatus.PAID)
    void = make_invoice(db, group, status=InvoiceStatus.VOID)
    card = make_payment_method(db, group, gateway_token="sandbox_pm_good", is_default=True)
    other = make_bill_group(db)
    theirs = make_invoice(db, other)
    their_card = make_payment_method(db, other, gateway_token="sandbox_pm_theirs")
    db.commit()
    return {
        "group": group.id,
        "older": older.id,
        "newer": newer.id,
        "paid": paid.id,
        "void": void.id,
        "card": card.id,
        "other": other.id,
        "theirs": theirs.id,
        "their_card": their_card.id,
    }


def group_of(s: Session, world: dict[str, int], name: str = "group") -> BillGroup:
    found = s.get(BillGroup, world[name])
    assert found is not None
    return found


def prepare(app: Flask, world: dict[str, int], **kwargs) -> tuple[str, int]:
    """A committed attempt in REVIEW: its key and amount."""
    kwargs.setdefault("invoice_ids", None)
    kwargs.setdefault("amount_minor", None)
    kwargs.setdefault("method_id", world["card"])
    with session(app) as s:
        attempt = paying.prepare(s, ME, group_of(s, world), **kwargs)
        s.commit()
        return attempt.key, attempt.amount_minor


def confirm(app: Flask, world: dict[str, int], key: str, amount: int, **kwargs) -> PaymentAttempt:
    with session(app) as s:
        gateway = kwargs.pop("gateway", None) or payments.SandboxGateway()
        attempt = paying.confirm(
            s,
            ME,
            group_of(s, world, kwargs.pop("group", "group")),
            key,
            expected_amount_minor=amount,
            gateway=gateway,
            return_url=URL,
        )
        s.expunge_all()
        return attempt


def counts(db: Session) -> dict[str, int]:
    db.expire_all()

    def count(model) -> int:
        return db.scalar(select(func.count()).select_from(model)) or 0

    return {
        "charges": count(SandboxCharge),
        "payments": count(Payment),
        "applications": count(PaymentApplication),
    }


def paid_amounts(db: Session, world: dict[str, int]) -> dict[str, tuple[int, str]]:
    db.expire_all()
    out = {}
    for name in ("older", "newer"):
        invoice = db.get(Invoice, world[name])
        assert invoice is not None
        out[name] = (invoice.amount_paid_minor, invoice.status.value)
    return out


def with_card(db: Session, world: dict[str, int], token: str) -> int:
    group = db.get(BillGroup, world["group"])
    method = make_payment_method(db, group, gateway_token=token, last4="0341")
    db.commit()
    return method.id


# --- prepare ------------------------------------------------------------------------------


def test_the_whole_balance_goes_to_the_invoices_oldest_due_first(app, db, world):
    key, amount = prepare(app, world)
    assert amount == 12000 + 6000
    attempt = db.scalar(select(PaymentAttempt).where(PaymentAttempt.key == key))
    assert attempt.state == AttemptState.REVIEW
    assert len(key) >= 43 and attempt.currency == "EUR"
    assert attempt.expires_at == MIDDAY + dt.timedelta(seconds=900)
    assert [(line.invoice_id, line.amount_minor) for line in attempt.lines] == [
        (world["older"], 12000),
        (world["newer"], 6000),
    ]


def test_a_part_payment_fills_the_oldest_invoice_first(app, db, world):
    key, amount = prepare(app, world, amount_minor=15000)
    attempt = db.scalar(select(PaymentAttempt).where(PaymentAttempt.key == key))
    assert [(line.invoice_id, line.amount_minor) for line in attempt.lines] == [
        (world["older"], 12000),
        (world["newer"], 3000),
    ]


def test_the_review_page_lasts_as_long_as_the_setting_says(app, db, world):
    change_settings(app, PAYMENT_REVIEW_TTL_SECONDS=60)
    key, _ = prepare(app, world)
    attempt = db.scalar(select(PaymentAttempt).where(PaymentAttempt.key == key))
    assert attempt.expires_at == MIDDAY + dt.timedelta(seconds=60)


@pytest.mark.parametrize(
    ("which", "error", "message"),
    [
        ("paid", Invalid, "already paid"),
        ("void", Invalid, "void"),
        ("theirs", NotFound, "No such invoice"),
    ],
)
def test_only_this_groups_open_invoices_can_be_paid(app, db, world, which, error, message):
    with pytest.raises(error, match=message):
        prepare(app, world, invoice_ids=[world["older"], world[which]])
    assert db.scalar(select(func.count()).select_from(PaymentAttempt)) == 0


@pytest.mark.parametrize("bad", [0, -5, 2**63, True])
def test_an_invoice_id_that_cannot_exist_is_not_found(app, db, world, bad):
    with pytest.raises(NotFound):
        prepare(app, world, invoice_ids=[bad])


def test_a_draft_is_as_absent_as_another_groups_invoice(app, db, world):
    group = db.get(BillGroup, world["group"])
    draft = make_invoice(db, group, status=InvoiceStatus.DRAFT)
    db.commit()
    with pytest.raises(NotFound):
        prepare(app, world, invoice_ids=[draft.id])


def test_a_currency_other_than_the_groups_is_refused(app, db, world):
    with pytest.raises(Invalid, match="in EUR, not USD"):
        prepare(app, world, currency="USD")
    assert db.scalar(select(func.count()).select_from(PaymentAttempt)) == 0


@pytest.mark.parametrize("amount", [0, -1, 18001])
def test_the_amount_is_more_than_nothing_and_at_most_the_balance(app, db, world, amount):
    with pytest.raises(Invalid) as refused:
        prepare(app, world, amount_minor=amount)
    assert refused.value.field == "amount"
    assert db.scalar(select(func.count()).select_from(PaymentAttempt)) == 0


def test_over_the_balance_of_the_chosen_invoices_even_if_under_the_groups(app, db, world):
    with pytest.raises(Invalid, match="more than the balance"):
        prepare(app, world, invoice_ids=[world["newer"]], amount_minor=6001)


def test_a_part_payment_below_the_minimum_is_refused(app, db, world):
    group = db.get(BillGroup, world["group"])
    group.entity.min_partial_payment_minor = 5000
    db.commit()
    with pytest.raises(Invalid, match="at least €50.00"):
        prepare(app, world, amount_minor=4999)
    key, amount = prepare(app, world, amount_minor=5000)
    assert amount == 5000
    # The whole balance of an invoice smaller than the minimum is not a part payment.
    small = make_invoice(db, group, lines=[("Tiny", "1", 1000, 0)])
    db.commit()
    _key, amount = prepare(app, world, invoice_ids=[small.id], amount_minor=1000)
    assert amount == 1000


def test_no_part_payment_where_the_entity_does_not_allow_it(app, db, world):
    group = db.get(BillGroup, world["group"])
    group.entity.allow_partial_payments = False
    db.commit()
    with pytest.raises(Invalid, match="part payments are not accepted"):
        prepare(app, world, amount_minor=17999)
    assert prepare(app, world, amount_minor=18000)[1] == 18000


def test_the_method_must_be_the_groups(app, db, world):
    with pytest.raises(NotFound):
        prepare(app, world, method_id=world["their_card"])
    with pytest.raises(NotFound):
        prepare(app, world, method_id=0)


def test_nothing_to_pay_is_said(app, db, world):
    for name in ("older", "newer"):
        invoice = db.get(Invoice, world[name])
        invoice.amount_paid_minor = invoice.total_minor
        invoice.status = InvoiceStatus.PAID
    db.commit()
    with pytest.raises(Invalid, match="nothing to pay"):
        prepare(app, world)


# --- confirm ------------------------------------------------------------------------------


def test_a_confirm_charges_once_and_pays_the_invoices(app, db, world, smtp):
    endpoint_for(app, db, "payment.succeeded")
    key, amount = prepare(app, world)
    attempt = confirm(app, world, key, amount)
    assert attempt.state == AttemptState.SUCCEEDED
    assert counts(db) == {"charges": 1, "payments": 1, "applications": 2}
    assert paid_amounts(db, world) == {"older": (12000, "paid"), "newer": (6000, "paid")}
    payment = db.scalar(select(Payment))
    assert payment.status == PaymentStatus.SUCCEEDED and payment.source == PaymentSource.PORTAL
    assert payment.gateway == "sandbox" and payment.gateway_reference.startswith("sandbox_ch_")
    assert payment.reference == payment.gateway_reference
    assert payment.created_by == "ap@acme.com" and payment.payment_method_id == world["card"]
    audit = db.scalars(select(AuditEvent).where(AuditEvent.action == "payment.succeeded")).all()
    assert [(a.actor_type, a.actor) for a in audit] == [("customer", "ap@acme.com")]
    assert [e.type for e in db.scalars(select(WebhookEvent))] == ["payment.succeeded"]
    # The receipt is the worker's: marked in the charge's transaction, made once.
    assert db.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert db.scalars(select(ReceiptDue.payment_id)).all() == [payment.id]
    with app.app_context():
        assert receipts.send_due(db) == 1
        assert receipts.send_due(db) == 0
    [message] = db.scalars(select(OutboxMessage)).all()  # no billing contact
    assert (message.kind, message.to_address) == ("payment_receipt", "ap@acme.com")
    assert message.attachments and db.scalar(select(func.count(ReceiptDue.payment_id))) == 0

    # Again, from a reload or a back button: the first outcome, nothing more.
    again = confirm(app, world, key, amount)
    assert again.state == AttemptState.SUCCEEDED and again.payment_id == payment.id
    assert counts(db) == {"charges": 1, "payments": 1, "applications": 2}


def endpoint_for(app: Flask, db: Session, *events: str) -> None:
    from portal import webhooks

    with app.app_context():
        webhooks.create_endpoint(db, "https://hooks.example.com/in", set(events), "test", "test")
        db.commit()


def test_a_part_payment_leaves_the_newer_invoice_open(app, db, world):
    key, amount = prepare(app, world, amount_minor=15000)
    confirm(app, world, key, amount)
    assert paid_amounts(db, world) == {"older": (12000, "paid"), "newer": (3000, "open")}


def test_a_tampered_amount_charges_nothing(app, db, world):
    key, amount = prepare(app, world)
    with pytest.raises(Invalid, match="does not match"):
        confirm(app, world, key, amount - 1)
    assert counts(db) == {"charges": 0, "payments": 0, "applications": 0}
    db.expire_all()
    assert db.scalar(select(PaymentAttempt)).state == AttemptState.REVIEW


def test_another_groups_key_is_not_found(app, db, world):
    key, amount = prepare(app, world)
    with pytest.raises(NotFound):
        confirm(app, world, key, amount, group="other")
    with pytest.raises(NotFound):
        confirm(app, world, "no-such-key", amount)
    assert counts(db)["charges"] == 0


def test_a_stale_review_page_expires_and_charges_nothing(app, db, world, clock):
    key, amount = prepare(app, world)
    clock.advance(seconds=900)
    with pytest.raises(Invalid, match="out of date"):
        confirm(app, world, key, amount)
    db.expire_all()
    assert db.scalar(select(PaymentAttempt)).state == AttemptState.EXPIRED
    assert counts(db)["charges"] == 0
    # And stays so: a later confirm shows the outcome, charges nothing.
    assert confirm(app, world, key, amount).state == AttemptState.EXPIRED
    assert counts(db)["charges"] == 0


def test_an_invoice_paid_meanwhile_stops_the_confirm(app, db, world):
    key, amount = prepare(app, world)
    invoice = db.get(Invoice, world["newer"])
    invoice.amount_paid_minor = 1000  # the billing system recorded a bank transfer
    db.commit()
    with pytest.raises(Invalid, match="has changed"):
        confirm(app, world, key, amount)
    assert counts(db)["charges"] == 0


def test_a_declined_card_fails_the_attempt_and_applies_nothing(app, db, world):
    endpoint_for(app, db, "payment.failed")
    method = with_card(db, world, "sandbox_pm_decline.abc")
    key, amount = prepare(app, world, method_id=method)
    attempt = confirm(app, world, key, amount)
    assert attempt.state == AttemptState.FAILED
    assert attempt.failure_message == "Your card was declined."
    payment = db.scalar(select(Payment))
    assert payment.status == PaymentStatus.FAILED and payment.applications == []
    assert payment.failure_message == "Your card was declined."
    assert paid_amounts(db, world) == {"older": (0, "open"), "newer": (0, "open")}
    assert [e.type for e in db.scalars(select(WebhookEvent))] == ["payment.failed"]
    assert db.scalar(select(func.count()).select_from(OutboxMessage)) == 0


class Down:
    """A gateway that does not answer: the registry's, not a mock of our code."""

    name = "sandbox"  # the same processor, unreachable for a moment
    is_sandbox = True
    collects_card_details = True

    def charge(self, request):
        raise GatewayUnavailable("The payment service did not answer.")

    def retrieve(self, reference):
        raise GatewayUnavailable("The payment service did not answer.")


@pytest.fixture
def down_gateway(app):
    payments._GATEWAYS["down"] = lambda config: Down()  # type: ignore[assignment]
    yield "down"
    payments._GATEWAYS.pop("down", None)


def test_a_gateway_that_does_not_answer_applies_nothing_and_the_retry_charges_once(
    app, db, world, down_gateway
):
    change_settings(app, PAYMENT_GATEWAY=down_gateway)
    key, amount = prepare(app, world)
    down = payments.get_gateway(settings_of(app))  # what the pages would use
    assert isinstance(down, Down)
    attempt = confirm(app, world, key, amount, gateway=down)
    assert attempt.state == AttemptState.CHARGING and attempt.claimed_at is None
    assert attempt.failure_message == paying.UNAVAILABLE
    assert counts(db) == {"charges": 0, "payments": 0, "applications": 0}
    assert paid_amounts(db, world) == {"older": (0, "open"), "newer": (0, "open")}
    # Back up: the same key is sent again, and charged once.
    retried = confirm(app, world, key, amount)
    assert retried.state == AttemptState.SUCCEEDED
    assert counts(db) == {"charges": 1, "payments": 1, "applications": 2}
    charge = db.scalar(select(SandboxCharge))
    assert charge.idempotency_key == key


def test_a_confirm_that_died_mid_charge_is_finished_by_the_worker(app, db, world, clock):
    key, amount = prepare(app, world)
    with session(app) as s:
        claimed = paying.claim(s, ME, group_of(s, world), key, expected_amount_minor=amount)
        assert claimed.won
        s.commit()
    # Its process died here. A retried confirm within the lease only shows "processing".
    assert confirm(app, world, key, amount).state == AttemptState.CHARGING
    assert counts(db)["charges"] == 0
    clock.advance(seconds=61)
    with app.app_context():
        assert paying.settle_pending(portal_db.session(), payments.SandboxGateway()) == 1
    assert counts(db) == {"charges": 1, "payments": 1, "applications": 2}


# --- 3-D Secure and processing ------------------------------------------------------------


@pytest.mark.parametrize(("approve", "state"), [(True, "succeeded"), (False, "failed")])
def test_3ds_waits_for_the_customer_then_settles(app, db, world, approve, state):
    method = with_card(db, world, "sandbox_pm_3ds.abc")
    key, amount = prepare(app, world, method_id=method)
    attempt = confirm(app, world, key, amount)
    assert attempt.state == AttemptState.REQUIRES_ACTION
    assert counts(db)["payments"] == 0
    with app.app_context():
        payments.SandboxGateway().authenticate(attempt.gateway_reference, approve=approve)
    with session(app) as s:
        found = paying.find(s, group_of(s, world), key)
        paying.settle(s, payments.SandboxGateway(), found)
        s.commit()
        assert found.state.value == state
    expected = (12000, "paid") if approve else (0, "open")
    assert paid_amounts(db, world)["older"] == expected


def test_processing_is_pending_until_the_worker_settles_it(app, db, world, clock):
    method = with_card(db, world, "sandbox_pm_slow.abc")
    key, amount = prepare(app, world, method_id=method)
    attempt = confirm(app, world, key, amount)
    assert attempt.state == AttemptState.PROCESSING
    payment = db.scalar(select(Payment))
    assert payment.status == PaymentStatus.PENDING and payment.applications == []
    with app.app_context():
        assert paying.settle_pending(portal_db.session(), payments.SandboxGateway()) == 0
    clock.advance(seconds=6)
    with app.app_context():
        assert paying.settle_pending(portal_db.session(), payments.SandboxGateway()) == 1
    db.expire_all()
    assert db.get(Payment, payment.id).status == PaymentStatus.SUCCEEDED
    assert paid_amounts(db, world) == {"older": (12000, "paid"), "newer": (6000, "paid")}
    assert counts(db) == {"charges": 1, "payments": 1, "applications": 2}


def test_the_same_outcome_recorded_twice_applies_once(app, db, world):
    key, amount = prepare(app, world)
    attempt = confirm(app, world, key, amount)
    charge = Charge(attempt.gateway_reference, ChargeStatus.SUCCEEDED, amount, "EUR")
    with session(app) as s:
        found = paying.find(s, group_of(s, world), key)
        paying.record_charge(s, found, charge)
        paying.record_charge(s, found, charge)
        s.commit()
    assert counts(db) == {"charges": 1, "payments": 1, "applications": 2}
    assert paid_amounts(db, world)["older"] == (12000, "paid")


# --- gateway events -----------------------------------------------------------------------


def test_gateway_events_apply_once_and_unknown_charges_apply_nothing(app, db, world):
    method = with_card(db, world, "sandbox_pm_slow.abc")
    key, amount = prepare(app, world, method_id=method)
    attempt = confirm(app, world, key, amount)
    succeeded = GatewayEvent(
        "evt_1",
        "charge.succeeded",
        Charge(attempt.gateway_reference, ChargeStatus.SUCCEEDED, amount, "EUR"),
    )
    with session(app) as s:
        assert paying.apply_gateway_event(s, "sandbox", succeeded) == "applied"
        s.commit()
    with session(app) as s:
        assert paying.apply_gateway_event(s, "sandbox", succeeded) == "duplicate"
        s.commit()
    assert paid_amounts(db, world) == {"older": (12000, "paid"), "newer": (6000, "paid")}
    assert counts(db)["applications"] == 2

    unknown = GatewayEvent(
        "evt_2", "charge.succeeded", Charge("sandbox_ch_nope", ChargeStatus.SUCCEEDED, 1, "EUR")
    )
    with session(app) as s:
        assert paying.apply_gateway_event(s, "sandbox", unknown) == "unknown"
        s.commit()
    assert counts(db)["applications"] == 2

    refund = Charge(
        attempt.gateway_reference, ChargeStatus.SUCCEEDED, amount, "EUR", refunded_minor=5000
    )
    with session(app) as s:
        assert (
            paying.apply_gateway_event(
                s, "sandbox", GatewayEvent("evt_3", "charge.refunded", refund)
            )
            == "applied"
        )
        s.commit()
    db.expire_all()
    payment = db.scalar(select(Payment))
    assert (payment.refunded_minor, payment.status) == (5000, PaymentStatus.SUCCEEDED)
    full = Charge(
        attempt.gateway_reference, ChargeStatus.SUCCEEDED, amount, "EUR", refunded_minor=amount
    )
    with session(app) as s:
        assert (
            paying.apply_gateway_event(s, "sandbox", GatewayEvent("evt_4", "charge.refunded", full))
            == "applied"
        )
        s.commit()
    db.expire_all()
    payment = db.scalar(select(Payment))
    assert (payment.refunded_minor, payment.status) == (amount, PaymentStatus.REFUNDED)
    # The invoices stay paid: the billing system decides whether a refund reopens them.
    assert paid_amounts(db, world)["older"] == (12000, "paid")


def test_a_failed_event_fails_a_waiting_attempt(app, db, world):
    method = with_card(db, world, "sandbox_pm_3ds.abc")
    key, amount = prepare(app, world, method_id=method)
    attempt = confirm(app, world, key, amount)
    failed = Charge(
        attempt.gateway_reference, ChargeStatus.DECLINED, amount, "EUR", failure_message="No."
    )
    with session(app) as s:
        assert (
            paying.apply_gateway_event(s, "sandbox", GatewayEvent("e", "charge.failed", failed))
            == "applied"
        )
        s.commit()
    db.expire_all()
    assert db.scalar(select(PaymentAttempt)).state == AttemptState.FAILED
    assert db.scalar(select(Payment)).status == PaymentStatus.FAILED


# --- the race -----------------------------------------------------------------------------


@pytest.mark.db
def test_twenty_concurrent_confirms_make_one_charge(app, db, world):
    key, amount = prepare(app, world)
    start = threading.Barrier(20)
    states: list[str] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            start.wait()
            states.append(confirm(app, world, key, amount).state.value)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(states) == 20
    assert set(states) <= {"charging", "succeeded"} and "succeeded" in states
    assert counts(db) == {"charges": 1, "payments": 1, "applications": 2}
    assert paid_amounts(db, world) == {"older": (12000, "paid"), "newer": (6000, "paid")}
    db.expire_all()
    assert db.scalar(select(PaymentAttempt)).state == AttemptState.SUCCEEDED
