"""What the customer paid in the portal stays paid while the billing system has not heard:
an invoice sent again with nothing paid is not reopened (it could be paid twice), and a
payment sent again without the application a customer made in the portal keeps it (its
credit could be applied twice). Once the billing system reports them, its figures rule;
it still voids an invoice."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.actions import Actor
from portal.actions.credits import Source, apply_credit
from portal.models import BillGroup, Invoice, PaymentApplication
from tests.api.conftest import invoice_body, push_bill_group
from tests.factories import add_portal_payment

TOTAL = 36900  # invoice_body()'s 300.00 + 69.00 tax
UNAPPLIED = {
    "bill_group": "bg-1",
    "amount_minor": 5000,
    "currency": "EUR",
    "status": "succeeded",
    "received_at": "2026-11-20T10:00:00Z",
    "applications": [],
}


@pytest.fixture
def pushed(api):
    push_bill_group(api)
    return api


def paid_by_card_in_portal(db, amount: int) -> Invoice:
    """The pay flow's outcome: a portal payment applied to inv-1."""
    invoice = db.scalar(select(Invoice).where(Invoice.external_id == "inv-1"))
    payment = add_portal_payment(db, invoice.bill_group, amount)
    payment.applications.append(PaymentApplication(invoice=invoice, amount_minor=amount))
    invoice.amount_paid_minor += amount
    db.commit()
    return invoice


@pytest.mark.db
def test_an_invoice_paid_in_the_portal_is_not_reopened_by_a_stale_put(db, pushed):
    paid_by_card_in_portal(db, TOTAL)
    stale = pushed.put("/invoices/inv-1", invoice_body()).get_json()
    assert (stale["status"], stale["amount_paid_minor"], stale["balance_minor"]) == (
        "paid",
        TOTAL,
        0,
    )
    # The billing system has recorded it: the same figures, nothing rewritten.
    heard = pushed.put("/invoices/inv-1", invoice_body(status="paid", amount_paid_minor=TOTAL))
    assert heard.status_code == 200 and heard.get_json()["updated_at"] == stale["updated_at"]
    # It may still void the invoice.
    void = pushed.put("/invoices/inv-1", invoice_body(status="void")).get_json()
    assert void["status"] == "void"


@pytest.mark.db
def test_a_part_paid_in_the_portal_stays_and_the_billing_systems_larger_figure_wins(db, pushed):
    paid_by_card_in_portal(db, 10000)
    stale = pushed.put("/invoices/inv-1", invoice_body()).get_json()
    assert (stale["status"], stale["amount_paid_minor"]) == ("open", 10000)
    more = pushed.put("/invoices/inv-1", invoice_body(amount_paid_minor=15000)).get_json()
    assert (more["status"], more["amount_paid_minor"]) == ("open", 15000)


def test_a_failed_portal_payment_holds_nothing_up(db, pushed):
    invoice = db.scalar(select(Invoice).where(Invoice.external_id == "inv-1"))
    add_portal_payment(db, invoice.bill_group, TOTAL, status="failed")
    db.commit()
    body = pushed.put("/invoices/inv-1", invoice_body()).get_json()
    assert (body["status"], body["amount_paid_minor"]) == ("open", 0)


@pytest.mark.db
def test_a_payment_applied_in_the_portal_keeps_its_application(app, db, pushed):
    assert pushed.put("/payments/pay-1", UNAPPLIED).status_code == 201
    with app.app_context():
        group = db.scalar(select(BillGroup))
        payment_id = group.payments[0].id
        apply_credit(
            db,
            Actor.customer("ap@acme.com"),
            group,
            source=Source("payment", payment_id),
            invoice_id=None,
            amount_minor=3000,
        )
        db.commit()
    # The nightly sync, before the credit.applied webhook was read.
    stale = pushed.put("/payments/pay-1", UNAPPLIED).get_json()
    assert stale["applications"] == [{"invoice": "inv-1", "amount_minor": 3000}]
    assert pushed.get("/invoices/inv-1").get_json()["amount_paid_minor"] == 3000
    # More than the payment, counting the portal's: refused, nothing written.
    over = UNAPPLIED | {"applications": [{"invoice": "inv-2", "amount_minor": 2001}]}
    pushed.put("/invoices/inv-2", invoice_body("INV-1002"))
    refused = pushed.put("/payments/pay-1", over)
    assert refused.status_code == 409
    assert refused.get_json()["error"]["field"] == "applications"
    # Reported by the billing system: its row now, no longer the portal's.
    heard = UNAPPLIED | {"applications": [{"invoice": "inv-1", "amount_minor": 3000}]}
    assert pushed.put("/payments/pay-1", heard).status_code == 200
    db.expire_all()
    [row] = db.scalars(select(PaymentApplication)).all()
    assert (row.amount_minor, row.applied_by) == (3000, None)
