"""The payment method rules through every face that can break them: one default per
bill group, whether the customer chooses it or the billing system sends it, and a
method of another bill group is never touched."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.actions import Actor, NotFound
from portal.actions.payment_methods import set_default
from portal.models import AuditEvent, PaymentMethod
from tests.actions.conftest import EXTERNAL_ID, state
from tests.factories import make_bill_group, make_payment_method
from tests.portal.pages_helpers import form_data, url


def defaults(db, group) -> list[str]:
    db.expire_all()
    return [
        m.last4
        for m in db.scalars(select(PaymentMethod).where(PaymentMethod.bill_group_id == group.id))
        if m.is_default
    ]


def test_one_default_whichever_face_chooses_it(app, db, group, customer, api):
    make_payment_method(db, group, last4="4242", is_default=True)
    second = make_payment_method(db, group, brand="mastercard", last4="4444")
    db.commit()

    page = url(group, "/payment-methods")
    response = customer.post(
        url(group, f"/payment-methods/{second.id}/default"), data=form_data(customer, page)
    )
    assert response.status_code == 303
    assert defaults(db, group) == ["4444"]

    body = {
        "bill_group": EXTERNAL_ID,
        "type": "card",
        "brand": "visa",
        "last4": "1111",
        "exp_month": 12,
        "exp_year": 2030,
        "gateway": "sandbox",
        "gateway_token": "tok_actions_1111",
        "is_default": True,
    }
    response = api.put("/payment-methods/pm-actions", body)
    assert response.status_code == 201, response.get_json()
    assert defaults(db, group) == ["1111"]


def test_another_bill_groups_method_is_not_found_and_nothing_is_written(app, db, group, customer):
    other = make_bill_group(db)
    theirs = make_payment_method(db, other, last4="9999", is_default=True)
    db.commit()
    before = state(db, group)

    page = url(group, "/payment-methods")
    response = customer.post(
        url(group, f"/payment-methods/{theirs.id}/default"), data=form_data(customer, page)
    )
    assert response.status_code == 404
    with app.app_context(), pytest.raises(NotFound):
        set_default(db, Actor.customer("ap@acme.com"), group, theirs.id)
    db.rollback()

    assert state(db, group) == before
    assert defaults(db, other) == ["9999"]
    assert (
        db.scalars(select(AuditEvent).where(AuditEvent.action.like("payment_method.%"))).all() == []
    )
