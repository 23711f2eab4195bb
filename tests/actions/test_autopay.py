"""set_autopay on every face: the customer's switch on the overview, the API's bill-group
upsert; each audited with who, evented as autopay.changed and announced to the billing
contact. Turning it on needs a default payment method; the expiry warning."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from portal.actions import Actor, Invalid
from portal.actions.autopay import expires_on, expiry_warning, set_autopay
from portal.models import AuditEvent, BillGroup, NoticeChange, WebhookEvent
from portal.webhooks import create_endpoint
from tests.actions.conftest import EXTERNAL_ID
from tests.factories import TODAY, make_bill_group, make_payment_method
from tests.portal.pages_helpers import csrf_token, flashes, url

CUSTOMER = "ap@acme.com"


def _audit(db, group: BillGroup) -> list[tuple[str, str, str | None]]:
    db.expire_all()
    return [
        (row.actor_type, row.actor, row.detail)
        for row in db.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "autopay.change", AuditEvent.bill_group_id == group.id)
            .order_by(AuditEvent.id)
        )
    ]


def _events(db) -> list[dict]:
    return [
        json.loads(e.payload)["data"]
        for e in db.scalars(
            select(WebhookEvent)
            .where(WebhookEvent.type == "autopay.changed")
            .order_by(WebhookEvent.id)
        )
    ]


def _switch(customer, group: BillGroup, enabled: str):
    page = customer.get(url(group, "/overview"))
    return customer.post(
        url(group, "/autopay"),
        data={"csrf_token": csrf_token(page.text), "enabled": enabled},
    )


@pytest.fixture
def hooked(app, db):
    with app.app_context():
        create_endpoint(db, "https://hooks.example.com/x", {"autopay.changed"}, created_by="t")
    db.commit()


@pytest.mark.db
def test_the_customer_turns_it_on_and_off(app, db, group, customer, hooked):
    make_payment_method(db, group, is_default=True)
    db.commit()
    response = _switch(customer, group, "on")
    assert response.status_code == 303
    assert flashes(customer.get(url(group, "/overview")).text) == ["Automatic payment is on."]
    db.expire_all()
    assert db.get(BillGroup, group.id).auto_pay is True
    assert _switch(customer, group, "off").status_code == 303
    db.expire_all()
    assert db.get(BillGroup, group.id).auto_pay is False
    assert _audit(db, group) == [
        ("customer", CUSTOMER, "automatic payment turned on"),
        ("customer", CUSTOMER, "automatic payment turned off"),
    ]
    data = _events(db)
    assert [d["object"]["auto_pay"] for d in data] == [True, False]
    assert data[0]["actor"] == {"type": "customer", "email": CUSTOMER}
    assert data[0]["object"]["payment_method"]["last4"] == "4242"
    notices = db.scalars(
        select(NoticeChange).where(NoticeChange.bill_group_id == group.id).order_by(NoticeChange.id)
    ).all()
    # Each switch is told to the billing contact and to the customer who made it, old
    # and new in the history row behind it.
    assert [n.what for n in notices] == ["automatic payment"] * 4
    assert CUSTOMER in {n.recipient for n in notices}
    assert [json.loads(n.change.changes) for n in notices[::2]] == [
        [["automatic payment", "off", "on"]],
        [["automatic payment", "on", "off"]],
    ]


def test_not_without_a_default_payment_method(db, group, customer, hooked):
    response = _switch(customer, group, "on")
    assert response.status_code == 303
    page = customer.get(url(group, "/overview")).text
    assert any("Add a payment method" in message for message in flashes(page))
    db.expire_all()
    assert db.get(BillGroup, group.id).auto_pay is False
    assert _audit(db, group) == [] and _events(db) == []
    # The button says so before it is pressed.
    assert "Needs a" in page and "disabled" in page


@pytest.mark.parametrize("value", ["", "yes", "true", "1", "on\x00"])
def test_anything_but_on_or_off_is_400(db, group, customer, value):
    make_payment_method(db, group, is_default=True)
    db.commit()
    assert _switch(customer, group, value).status_code == 400
    db.expire_all()
    assert db.get(BillGroup, group.id).auto_pay is False


def test_without_the_csrf_token_nothing_changes(db, group, customer):
    make_payment_method(db, group, is_default=True)
    db.commit()
    response = customer.post(url(group, "/autopay"), data={"enabled": "on"})
    assert response.status_code == 400
    db.expire_all()
    assert db.get(BillGroup, group.id).auto_pay is False


@pytest.mark.db
def test_the_api_upsert_goes_through_the_same_action(db, group, api, hooked):
    body = api.get(f"/bill-groups/{EXTERNAL_ID}").get_json()
    assert body["auto_pay"] is False
    writable = {
        key: body[key]
        for key in (
            "name",
            "currency",
            "billing_frequency",
            "contract_start",
            "contract_end",
            "next_billing_date",
            "portal_enabled",
            "po_number",
            "vat_number",
            "registration_number",
        )
    }
    writable |= {"account": "acc-x", "entity": "ent-x"}
    group.account.external_id, group.entity.external_id = "acc-x", "ent-x"
    db.commit()
    response = api.put(f"/bill-groups/{EXTERNAL_ID}", writable | {"auto_pay": True})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["auto_pay"] is True
    # The same body again: nothing changes, nothing is sent.
    assert api.put(f"/bill-groups/{EXTERNAL_ID}", writable | {"auto_pay": True}).status_code == 200
    actor = _audit(db, group)
    assert len(actor) == 1 and actor[0][0] == "api"
    data = _events(db)
    assert len(data) == 1 and data[0]["actor"]["type"] == "api"
    assert data[0]["object"]["auto_pay"] is True


def test_the_preview_shows_the_switch_disabled_and_cannot_post(db, group, staff_client):
    make_payment_method(db, group, is_default=True)
    db.commit()
    staff = staff_client()
    page = staff.get(f"/admin/preview/{group.public_id}/overview")
    assert page.status_code == 200
    assert "Turn on" in page.text and "disabled" in page.text.split("Turn on")[0][-300:]
    posted = staff.post(
        f"/admin/preview/{group.public_id}/autopay",
        data={"csrf_token": csrf_token(page.text), "enabled": "on"},
    )
    assert posted.status_code == 403
    db.expire_all()
    assert db.get(BillGroup, group.id).auto_pay is False


def test_expiry_warning(app, db):
    with app.app_context():
        group = make_bill_group(db, next_billing_date=dt.date(2027, 3, 1))
        assert expiry_warning(group, TODAY) is None  # no card at all
        make_payment_method(db, group, is_default=True, exp_month=2, exp_year=2027)
        db.expire(group, ["default_payment_method"])
        assert expires_on(group.default_payment_method) == dt.date(2027, 2, 28)
        assert "before the next billing date" in expiry_warning(group, TODAY)
        group.next_billing_date = dt.date(2027, 2, 28)
        assert expiry_warning(group, TODAY) is None
        group.default_payment_method.exp_year = 2025
        assert "expired" in expiry_warning(group, TODAY)
        december = make_payment_method(db, make_bill_group(db), exp_month=12, exp_year=2030)
        assert expires_on(december) == dt.date(2030, 12, 31)


def test_a_card_that_expires_first_is_warned_of_on_the_overview(db, group, customer):
    group.next_billing_date = dt.date(2027, 6, 1)
    group.auto_pay = True
    make_payment_method(db, group, is_default=True, exp_month=1, exp_year=2027)
    db.commit()
    page = customer.get(url(group, "/overview")).text
    assert "expires (01/27) before the next billing date" in page


def test_set_autopay_refuses_what_is_not_a_bool(app, db):
    with app.app_context():
        group = make_bill_group(db)
        with pytest.raises(Invalid):
            set_autopay(db, Actor.staff("ops@staff.example.com"), group, "on")  # type: ignore[arg-type]
