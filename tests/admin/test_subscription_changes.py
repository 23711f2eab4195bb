"""Subscription changes on the staff side: the seller's switches (admins only, audited),
every request on the bill group page and the list, and answering by hand (once; the
customer is emailed, read back from the SMTP server)."""

from __future__ import annotations

import html

import pytest
from sqlalchemy import func, select

from portal.actions import Actor
from portal.actions.subscriptions import request_change
from portal.models import (
    AuditEvent,
    Entity,
    OutboxMessage,
    RequestState,
    StaffRole,
    SubscriptionChangeRequest,
)
from tests.admin.conftest import post_form
from tests.conftest import run_worker
from tests.factories import make_bill_group, make_changeable_subscription
from tests.portal.pages_helpers import flashes, plain_text

CUSTOMER = "ap@acme.com"


@pytest.fixture
def group(db):
    found = make_bill_group(db)
    db.commit()
    return found


@pytest.fixture
def waiting(app, db, group) -> SubscriptionChangeRequest:
    sub = make_changeable_subscription(db, group)
    db.commit()
    with app.app_context():
        made = request_change(
            db,
            Actor.customer(CUSTOMER),
            group,
            sub.id,
            "cancel_now",
            reason="not_using",
            comment="Project ended",
        )
        db.commit()
    return made


def test_admins_switch_kinds_of_change_for_the_seller(db, staff_client, group):
    client = staff_client(StaffRole.ADMIN)
    page = f"/admin/bill-groups/{group.id}/subscription-settings"
    form = client.get(page)
    assert form.status_code == 200
    assert "Cancel now" in form.text
    # Everything but cancelling now stays on.
    on = {
        kind: "y"
        for kind in (
            "plan",
            "quantity",
            "pause",
            "resume",
            "convert_trial",
            "extend_trial",
            "cancel_at_term_end",
        )
    }
    response = post_form(client, page, **on)
    assert response.status_code == 303
    db.expire_all()
    entity = db.get(Entity, group.entity_id)
    assert entity.allow_change_cancel_now is False and entity.allow_change_pause is True
    (row,) = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "entity.subscription_settings")
    )
    assert row.actor.startswith("admin-") and "cancel_now" in row.detail
    assert "Nothing changed." in flashes(
        client.get(post_form(client, page, **on).headers["Location"]).text
    )


@pytest.mark.parametrize("role", [StaffRole.ACCOUNT_MANAGER, StaffRole.VIEWER])
def test_only_admins_change_the_switches(db, staff_client, group, role):
    client = staff_client(role)
    page = f"/admin/bill-groups/{group.id}/subscription-settings"
    assert client.get(page).status_code == 403
    assert (
        "Change the subscription settings" not in client.get(f"/admin/bill-groups/{group.id}").text
    )


def test_staff_answer_by_hand_and_the_customer_is_emailed(
    app, db, staff_client, group, waiting, smtp
):
    client = staff_client(StaffRole.ACCOUNT_MANAGER)
    page = f"/admin/bill-groups/{group.id}"
    shown = html.unescape(client.get(page).text)
    assert "Cancel now (We do not use it enough): “Project ended”" in shown
    assert CUSTOMER in shown
    response = post_form(
        client,
        page,
        f"/admin/subscription-change-requests/{waiting.id}/answer",
        decision="accept",
        reason="Ends today",
    )
    assert response.status_code == 303
    assert flashes(client.get(page).text) == ["Answer saved; the customer is emailed."]
    db.expire_all()
    found = db.get(SubscriptionChangeRequest, waiting.id)
    assert (found.state, found.answer_reason) == (RequestState.ACCEPTED, "Ends today")
    assert found.answered_by.startswith("account_manager-")
    smtp.clear()
    run_worker(app)
    (mail,) = smtp.to(CUSTOMER)
    assert "accepted" in mail["Subject"] and "Ends today" in plain_text(mail)
    # Twice: refused with a clear message, nothing written.
    mails = db.scalar(select(func.count(OutboxMessage.id)))
    again = post_form(
        client,
        page,
        f"/admin/subscription-change-requests/{waiting.id}/answer",
        decision="refuse",
        reason="No",
    )
    assert again.status_code == 303
    assert "answered already" in flashes(client.get(page).text)[0]
    db.expire_all()
    assert db.get(SubscriptionChangeRequest, waiting.id).state == RequestState.ACCEPTED
    assert db.scalar(select(func.count(OutboxMessage.id))) == mails


def test_a_refusal_by_hand_needs_a_reason(db, staff_client, group, waiting):
    client = staff_client(StaffRole.ADMIN)
    page = f"/admin/bill-groups/{group.id}"
    action = f"/admin/subscription-change-requests/{waiting.id}/answer"
    post_form(client, page, action, decision="refuse")
    assert "Say why the change is refused" in flashes(client.get(page).text)[0]
    post_form(client, page, action)
    assert flashes(client.get(page).text) == ["Choose accept or refuse."]
    assert client.post(action, data={"decision": "accept"}).status_code == 400  # no CSRF token
    db.expire_all()
    assert db.get(SubscriptionChangeRequest, waiting.id).state == RequestState.REQUESTED


def test_a_viewer_sees_requests_but_cannot_answer(db, staff_client, group, waiting):
    client = staff_client(StaffRole.VIEWER)
    page = client.get(f"/admin/bill-groups/{group.id}").text
    assert "Waiting for the billing system" in page and 'name="decision"' not in page
    response = post_form(
        client,
        f"/admin/bill-groups/{group.id}",
        f"/admin/subscription-change-requests/{waiting.id}/answer",
        decision="accept",
    )
    assert response.status_code == 403


def test_the_list_of_every_request(db, staff_client, group, waiting):
    client = staff_client(StaffRole.VIEWER)
    listed = client.get("/admin/subscription-change-requests?state=requested")
    assert listed.status_code == 200
    assert group.name in listed.text and "Cancel now" in listed.text
    none = client.get("/admin/subscription-change-requests?state=accepted").text
    assert "No change requests in this state." in none
    assert client.get("/admin/subscription-change-requests?state=bogus&page=x").status_code == 200
    assert client.post(
        "/admin/subscription-change-requests/999999/answer", data={}
    ).status_code in (400, 404)
