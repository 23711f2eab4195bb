"""Receipts are the worker's: a succeeded payment is marked in its own transaction and the
worker renders its PDF and queues its emails once, to the payer and the billing contact;
a receipt that fails to render is tried again and never touches the payment; two
workers racing for the same receipts make each once (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import db as portal_db
from portal import receipts
from portal.models import ContactKind, OutboxMessage, Payment, PaymentStatus, ReceiptDue
from tests.conftest import run_worker
from tests.factories import add_portal_payment, make_bill_group, make_contact
from tests.portal.signin_helpers import race


def paid(db: Session, n: int = 1, **overrides: object) -> list[Payment]:
    group = make_bill_group(db)
    found = [add_portal_payment(db, group, 1000 + i, **overrides) for i in range(n)]
    for payment in found:
        receipts.queue(db, payment)
    db.commit()
    return found


def outbox(db: Session) -> list[tuple[str, str]]:
    rows = db.execute(select(OutboxMessage.kind, OutboxMessage.to_address))
    return sorted((kind, to) for kind, to in rows)


def test_the_worker_makes_the_receipt_for_the_payer_and_the_billing_contact(app, db, smtp):
    [payment] = paid(db)
    make_contact(db, payment.bill_group, kind=ContactKind.BILLING, email="billing@acme.com")
    db.commit()
    run_worker(app)
    subjects = sorted((m["To"], m["Subject"]) for m in smtp.messages)
    assert [to for to, _subject in subjects] == ["ap@acme.com", "billing@acme.com"]
    assert all("Receipt for your payment" in subject for _to, subject in subjects)
    assert db.scalar(select(func.count(ReceiptDue.payment_id))) == 0
    run_worker(app)  # nothing left to make
    assert len(smtp.messages) == 2


def test_a_payment_no_longer_succeeded_gets_no_receipt(app, db):
    [payment] = paid(db, status=PaymentStatus.FAILED)
    with app.app_context():
        assert receipts.send_due(db) == 1  # the mark is spent
    assert outbox(db) == [] and db.get(ReceiptDue, payment.id) is None


def test_a_receipt_that_cannot_be_rendered_waits_and_the_payment_stays(app, db, monkeypatch):
    [payment] = paid(db)

    def broken(*_args: object, **_kwargs: object) -> bytes:
        raise RuntimeError("reportlab fell over")

    monkeypatch.setattr(receipts, "render_pdf", broken)
    with app.app_context():
        assert receipts.send_due(db) == 0
    db.expire_all()
    assert outbox(db) == []
    assert db.get(ReceiptDue, payment.id) is not None  # tried again next pass
    assert db.get(Payment, payment.id).status == PaymentStatus.SUCCEEDED
    monkeypatch.undo()
    with app.app_context():
        assert receipts.send_due(db) == 1
    assert outbox(db) == [("payment_receipt", "ap@acme.com")]


@pytest.mark.db
def test_racing_workers_make_each_receipt_once(app: Flask, db: Session) -> None:
    payments = paid(db, 6)
    db.close()

    def worker(_job: int) -> int:
        with app.app_context(), Session(portal_db.engine()) as session:
            return receipts.send_due(session)

    made = race(list(range(5)), worker)
    assert sum(made) == len(payments)
    assert outbox(db) == [("payment_receipt", "ap@acme.com")] * len(payments)
    assert db.scalar(select(func.count(ReceiptDue.payment_id))) == 0
