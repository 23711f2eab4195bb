"""apply_credit: a credit note's remainder or an unapplied payment applied to an open
invoice; refused for another group's credit or invoice, over the credit or the balance,
at the edge of BIGINT; never over-applied by racing requests (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from portal import billing, credits
from portal import db as portal_db
from portal.actions import Actor, Forbidden, Invalid, NotFound
from portal.actions.credits import Applied, Source, apply_credit
from portal.models import (
    AuditEvent,
    BillGroup,
    CreditApplication,
    CreditNote,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentApplication,
    PaymentStatus,
    WebhookEvent,
)
from portal.webhooks import create_endpoint
from tests.factories import (
    TODAY,
    add_payment,
    add_unapplied_payment,
    make_bill_group,
    make_credit_note,
    make_invoice,
)

CUSTOMER = Actor.customer("ap@acme.com")
DAY = dt.timedelta(days=1)


def apply(
    db: Session,
    group: BillGroup,
    source: CreditNote | Payment,
    invoice: Invoice | None,
    amount: int,
    actor: Actor = CUSTOMER,
) -> Applied:
    """apply_credit as the customer's form calls it, from the records themselves."""
    kind = "credit_note" if isinstance(source, CreditNote) else "payment"
    target = None if invoice is None else invoice.id
    return apply_credit(
        db, actor, group, source=Source(kind, source.id), invoice_id=target, amount_minor=amount
    )


@pytest.fixture(autouse=True)
def _in_app(app: Flask):
    """Actions run inside a request or a command: the app's clock and settings."""
    with app.app_context():
        yield


@pytest.fixture
def world(db: Session) -> tuple[BillGroup, Invoice]:
    group = make_bill_group(db)
    invoice = make_invoice(db, group)  # 120.00
    db.commit()
    return group, invoice


@pytest.mark.db
def test_a_credit_note_pays_part_then_all_of_an_invoice(db, world):
    group, invoice = world
    credit = make_credit_note(db, group, 20000)
    create_endpoint(db, "https://hooks.example.com/x", {"credit.applied"}, created_by="t")
    apply(db, group, credit, None, 2000)
    assert (invoice.amount_credited_minor, invoice.balance_minor) == (2000, 10000)
    assert invoice.status == InvoiceStatus.OPEN
    applied = apply(db, group, credit, invoice, 10000)
    db.commit()
    assert applied.invoice.status == InvoiceStatus.PAID and invoice.balance_minor == 0
    assert credit.amount_applied_minor == 12000 and credit.remaining_minor == 8000
    rows = db.scalars(select(CreditApplication).order_by(CreditApplication.id)).all()
    assert [(r.amount_minor, r.applied_by) for r in rows] == [(2000, "ap@acme.com")] * 1 + [
        (10000, "ap@acme.com")
    ]
    audit = db.scalars(select(AuditEvent).where(AuditEvent.action == "credit.apply")).all()
    assert [a.actor for a in audit] == ["ap@acme.com", "ap@acme.com"]
    assert "to invoice " + invoice.number in audit[-1].detail
    events = db.scalars(select(WebhookEvent).where(WebhookEvent.type == "credit.applied")).all()
    assert len(events) == 2


@pytest.mark.db
def test_an_unapplied_payment_is_credit_until_it_is_applied(db, world):
    group, invoice = world
    payment = add_unapplied_payment(db, group, 4000, refunded_minor=500)
    db.commit()
    assert [c.remaining_minor for c in credits.available(db, group)] == [3500]
    assert billing.summary(db, group, TODAY).credit_minor == 3500
    assert billing.summary(db, group, TODAY).balance_minor == 12000 - 3500
    apply(db, group, payment, invoice, 3000)
    db.commit()
    assert invoice.amount_paid_minor == 3000
    assert db.scalar(select(PaymentApplication.amount_minor)) == 3000
    assert [c.remaining_minor for c in credits.available(db, group)] == [500]
    # The same payment again, to the same invoice: one application row, grown.
    apply(db, group, payment, invoice, 500)
    db.commit()
    assert db.scalar(select(PaymentApplication.amount_minor)) == 3500
    assert credits.available(db, group) == []
    with pytest.raises(Invalid, match="Nothing is left"):
        apply(db, group, payment, invoice, 1)


def test_a_failed_or_pending_payment_is_no_credit(db, world):
    group, invoice = world
    for status in (PaymentStatus.FAILED, PaymentStatus.PENDING):
        payment = add_unapplied_payment(db, group, status=status)
        with pytest.raises(Invalid, match="Nothing is left"):
            apply(db, group, payment, invoice, 100)
    assert billing.summary(db, group, TODAY).credit_minor == 0


def test_a_paid_payment_has_nothing_left(db, world):
    group, invoice = world
    add_payment(db, invoice, 12000)
    assert credits.available(db, group) == []


def test_another_groups_credit_or_invoice_is_refused(db, world):
    group, invoice = world
    other = make_bill_group(db)
    theirs = make_credit_note(db, other, 5000)
    their_payment = add_unapplied_payment(db, other)
    their_invoice = make_invoice(db, other)
    mine = make_credit_note(db, group, 5000)
    with pytest.raises(NotFound):
        apply(db, group, theirs, invoice, 100)
    with pytest.raises(NotFound):
        apply(db, group, their_payment, invoice, 100)
    with pytest.raises(Invalid, match="not open"):
        apply(db, group, mine, their_invoice, 100)
    assert theirs.amount_applied_minor == mine.amount_applied_minor == 0
    assert their_invoice.amount_credited_minor == invoice.amount_credited_minor == 0


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (0, "greater than zero"),
        (-1, "greater than zero"),
        (-(2**63), "greater than zero"),
        (2**63 - 1, "more than any credit"),
        (2**63, "more than any credit"),
        (5001, "Only"),  # more than the credit note
        (True, "Enter an amount"),
    ],
)
def test_amounts_out_of_range_are_refused_and_nothing_is_written(db, world, amount, message):
    group, invoice = world
    credit = make_credit_note(db, group, 5000)
    db.commit()
    with pytest.raises(Invalid, match=message):
        apply(db, group, credit, invoice, amount)
    db.rollback()
    assert db.scalar(select(func.count(CreditApplication.id))) == 0
    assert db.get(Invoice, invoice.id).amount_credited_minor == 0


def test_more_than_the_invoice_balance_is_refused(db, world):
    group, invoice = world
    credit = make_credit_note(db, group, 50000)
    with pytest.raises(Invalid, match="left to pay"):
        apply(db, group, credit, invoice, 12001)


def test_void_paid_and_draft_invoices_and_void_notes_are_refused(db, world):
    group, _invoice = world
    credit = make_credit_note(db, group, 5000)
    for status in (InvoiceStatus.PAID, InvoiceStatus.VOID, InvoiceStatus.DRAFT):
        closed = make_invoice(db, group, status=status)
        with pytest.raises(Invalid, match="not open"):
            apply(db, group, credit, closed, 100)
    void = make_credit_note(db, group, 5000, voided_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    with pytest.raises(Invalid, match="Nothing is left"):
        apply(db, group, void, None, 100)


def test_a_currency_mismatch_is_refused(db, world):
    group, invoice = world
    credit = make_credit_note(db, group, 5000, currency="USD")
    with pytest.raises(Invalid, match="USD"):
        apply(db, group, credit, invoice, 100)


def test_oldest_open_invoice_first(db, world):
    group, newer = world
    older = make_invoice(db, group, issue_date=TODAY - 60 * DAY)
    credit = make_credit_note(db, group, 5000)
    applied = apply(db, group, credit, None, 100)
    assert applied.invoice.id == older.id != newer.id


def test_the_entity_can_keep_credit_application_to_itself(db, world):
    group, invoice = world
    group.entity.allow_credit_application = False
    credit = make_credit_note(db, group, 5000)
    with pytest.raises(Forbidden):
        apply(db, group, credit, invoice, 100)
    # Staff apply it for the customer all the same.
    apply(db, group, credit, invoice, 100, actor=Actor.staff("ops@staff.example.com"))
    assert invoice.amount_credited_minor == 100


@pytest.mark.parametrize(
    "token",
    ["", "credit_note", "credit_note:", "payment:x", "note:1", "payment:-1", "payment:" + "9" * 40],
)
def test_a_source_token_that_names_nothing_is_refused(token):
    with pytest.raises(Invalid):
        Source.parse(token)


def _race(
    app: Flask, group_id: int, source: Source, invoice_id: int, amount: int, n: int
) -> list[object]:
    with app.app_context():
        engine = portal_db.engine()
    factory = sessionmaker(engine, expire_on_commit=False)
    barrier = threading.Barrier(n)
    outcomes: list[object] = [None] * n

    def attempt(index: int) -> None:
        try:
            # All at once, then each as a request would: load its bill group and apply
            # (the pool has fewer connections than racers: the last wait for one).
            barrier.wait(timeout=30)
            with factory() as session:
                group = session.get(BillGroup, group_id)
                assert group is not None
                try:
                    with app.app_context():
                        apply_credit(
                            session,
                            CUSTOMER,
                            group,
                            source=source,
                            invoice_id=invoice_id,
                            amount_minor=amount,
                        )
                        session.commit()
                except Invalid as exc:
                    session.rollback()
                    outcomes[index] = exc.field
                else:
                    outcomes[index] = "applied"
        except Exception as exc:  # reported by the assertions
            outcomes[index] = exc

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


@pytest.mark.db
@pytest.mark.parametrize("kind", ["credit_note", "payment"])
def test_twenty_identical_applies_at_once_never_over_apply(app, db, kind):
    """The credit covers two of the twenty (30.00 of credit, 15.00 each, on a 120.00
    invoice): exactly two are applied, the rest told nothing is left."""
    group = make_bill_group(db)
    invoice = make_invoice(db, group)
    if kind == "credit_note":
        source = Source("credit_note", make_credit_note(db, group, 3000).id)
    else:
        source = Source("payment", add_unapplied_payment(db, group, 3000).id)
    group_id, invoice_id = group.id, invoice.id
    db.commit()
    db.close()  # no read transaction of the test's own in the racers' way
    outcomes = _race(app, group_id, source, invoice_id, 1500, 20)
    assert outcomes.count("applied") == 2, outcomes
    assert all(o in ("applied", "source", "amount") for o in outcomes), outcomes
    db.expire_all()
    fresh = db.get(Invoice, invoice_id)
    assert fresh.amount_credited_minor + fresh.amount_paid_minor == 3000
    assert fresh.balance_minor == 9000
    if kind == "credit_note":
        applied = db.scalar(select(func.sum(CreditApplication.amount_minor)))
        assert applied == 3000 == db.get(CreditNote, source.id).amount_applied_minor
    else:
        assert db.scalar(select(func.sum(PaymentApplication.amount_minor))) == 3000
    assert (
        db.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == "credit.apply")) == 2
    )
