"""The catalogue and subscription changes over the API: plans, what a subscription allows,
the change requests to poll, accept and refuse (once); and the signed webhook
`subscription.change_requested`, delivered to a real receiver and checked against the
document's webhooks section. Every response is checked against the OpenAPI document."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from portal import webhooks
from portal.actions import Actor
from portal.actions.subscriptions import request_change
from portal.models import (
    AuditEvent,
    BillGroup,
    OutboxMessage,
    RequestState,
    Subscription,
    SubscriptionChangeRequest,
)
from tests.api.conftest import SUBSCRIPTION, push_bill_group
from tests.conftest import run_worker

TEAM = {
    "entity": "ent-1",
    "name": "Team",
    "price_minor": 9900,
    "currency": "EUR",
    "period": "monthly",
}
BUSINESS = TEAM | {"name": "Business", "price_minor": 24900}
CHANGEABLE = SUBSCRIPTION | {
    "plan": "plan-team",
    "quantity": 5,
    "allowed_changes": {
        "plans": ["plan-team", "plan-business"],
        "quantity_min": 1,
        "quantity_max": 20,
        "pause": True,
        "cancel_at_term_end": True,
    },
}


@pytest.fixture
def catalogue(api):
    push_bill_group(api)
    for ext, body in (("plan-team", TEAM), ("plan-business", BUSINESS)):
        assert api.put(f"/plans/{ext}", body).status_code == 201
    response = api.put("/subscriptions/sub-1", CHANGEABLE)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def ask(app, db, kind="plan", **values) -> SubscriptionChangeRequest:
    group = db.scalar(select(BillGroup).where(BillGroup.external_id == "bg-1"))
    sub = db.scalar(select(Subscription).where(Subscription.external_id == "sub-1"))
    if kind == "plan" and not values:
        values = {"plan_id": next(p.id for p in sub.allowed_plans if p.name == "Business")}
    with app.app_context():
        made = request_change(db, Actor.customer("ap@acme.com"), group, sub.id, kind, **values)
        db.commit()
    return made


def counts(db) -> tuple[int, int, int]:
    db.expire_all()
    return (
        db.scalar(select(func.count(AuditEvent.id))) or 0,
        db.scalar(select(func.count(OutboxMessage.id))) or 0,
        db.scalar(
            select(func.count(SubscriptionChangeRequest.id)).where(
                SubscriptionChangeRequest.state == RequestState.REQUESTED
            )
        )
        or 0,
    )


def test_plans_and_what_a_subscription_allows(api, catalogue):
    assert catalogue["plan"] == "plan-team" and catalogue["quantity"] == 5
    assert catalogue["allowed_changes"] == {
        "plans": ["plan-team", "plan-business"],
        "quantity_min": 1,
        "quantity_max": 20,
        "cancel_now": False,
        "cancel_at_term_end": True,
        "pause": True,
        "resume": False,
        "convert_trial": False,
        "extend_trial": False,
    }
    plan = api.get("/plans/plan-business").get_json()
    assert (plan["name"], plan["price_minor"], plan["currency"], plan["period"]) == (
        "Business",
        24900,
        "EUR",
        "monthly",
    )
    assert [p["external_id"] for p in api.get("/plans").get_json()["data"]] == [
        "plan-team",
        "plan-business",
    ]
    # The same body again changes nothing.
    again = api.put("/subscriptions/sub-1", CHANGEABLE)
    assert again.status_code == 200 and again.get_json()["updated_at"] == catalogue["updated_at"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"plan": "plan-nope"}, "plan"),
        ({"allowed_changes": {"plans": ["plan-gbp"]}}, "allowed_changes.plans.0"),
        ({"allowed_changes": {"quantity_min": 5, "quantity_max": 2}}, "allowed_changes"),
        ({"allowed_changes": {"plans": ["plan-team", "plan-team"]}}, "allowed_changes"),
        ({"quantity": 0}, "quantity"),
    ],
)
def test_a_subscription_naming_a_plan_it_cannot_have_is_refused(api, catalogue, change, field):
    assert api.put("/plans/plan-gbp", TEAM | {"currency": "GBP"}).status_code == 201
    response = api.put("/subscriptions/sub-1", CHANGEABLE | change)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["field"] == field or any(e["field"] == field for e in error.get("errors") or [])
    assert api.get("/subscriptions/sub-1").get_json()["plan"] == "plan-team"


def test_poll_then_accept_with_the_updated_subscription(app, db, api, catalogue, smtp):
    made = ask(app, db)
    waiting = api.get("/subscription-change-requests?state=requested&bill_group=bg-1").get_json()
    (listed,) = waiting["data"]
    assert listed["id"] == made.id and listed["kind"] == "plan"
    assert listed["current"] == {
        "plan": "plan-team",
        "plan_name": "Team",
        "price_minor": 9900,
        "currency": "EUR",
        "period": "monthly",
        "quantity": 5,
    }
    assert listed["requested"]["plan"] == "plan-business"
    assert api.get("/subscription-change-requests?bill_group=bg-other").get_json()["data"] == []
    assert api.get("/subscription-change-requests?state=accepted").get_json()["data"] == []

    updated = CHANGEABLE | {"plan": "plan-business"}
    answered = api.post(
        f"/subscription-change-requests/{made.id}/accept",
        {"reason": "From the next period", "subscription": updated},
    )
    assert answered.status_code == 200, answered.get_json()
    body = answered.get_json()
    assert (body["state"], body["answered_by"], body["answer_reason"]) == (
        "accepted",
        "api:billing system",
        "From the next period",
    )
    assert api.get("/subscriptions/sub-1").get_json()["plan"] == "plan-business"
    assert api.get(f"/subscription-change-requests/{made.id}").get_json()["state"] == "accepted"
    smtp.clear()
    run_worker(app)
    (mail,) = smtp.to("ap@acme.com")
    assert "accepted" in mail["Subject"]


def test_refuse_needs_a_reason_and_an_answer_is_given_once(app, db, api, catalogue):
    made = ask(app, db, "pause")
    before = counts(db)
    for body in ({}, {"reason": "   "}, {"reason": 12}):
        response = api.post(f"/subscription-change-requests/{made.id}/refuse", body)
        assert response.status_code == 422, response.get_json()
    assert counts(db) == before
    refused = api.post(
        f"/subscription-change-requests/{made.id}/refuse", {"reason": "Not mid-term"}
    )
    assert refused.status_code == 200
    assert refused.get_json()["state"] == "refused"
    after = counts(db)
    for verb, body in (("accept", {}), ("refuse", {"reason": "Again"})):
        twice = api.post(f"/subscription-change-requests/{made.id}/{verb}", body)
        assert twice.status_code == 409
        error = twice.get_json()["error"]
        assert error["code"] == "already_answered"
        assert "answered already (refused by api:billing system)" in error["message"]
    assert counts(db) == after


def test_an_accept_whose_subscription_is_refused_writes_nothing(app, db, api, catalogue):
    made = ask(app, db, "pause")
    before = counts(db)
    for subscription, field in (
        (CHANGEABLE | {"plan": "plan-nope"}, "subscription.plan"),
        (CHANGEABLE | {"bill_group": "bg-other"}, "subscription.bill_group"),
    ):
        response = api.post(
            f"/subscription-change-requests/{made.id}/accept", {"subscription": subscription}
        )
        assert response.status_code == 422, response.get_json()
        assert response.get_json()["error"]["field"] == field
    assert counts(db) == before
    assert api.get(f"/subscription-change-requests/{made.id}").get_json()["state"] == "requested"


def test_unknown_requests_and_scopes(app, db, api, read_only_api, catalogue):
    assert api.get("/subscription-change-requests/999999").status_code == 404
    assert api.post("/subscription-change-requests/999999/accept", {}).status_code == 404
    assert api.get("/subscription-change-requests?state=bogus").status_code == 400
    made = ask(app, db, "pause")
    assert read_only_api.get(f"/subscription-change-requests/{made.id}").status_code == 200
    assert (
        read_only_api.post(f"/subscription-change-requests/{made.id}/accept", {}).status_code == 403
    )
    assert (
        api.post(f"/subscription-change-requests/{made.id}/accept", {"extra": 1}).status_code == 422
    )


def test_the_request_is_sent_as_a_signed_documented_webhook(app, db, api, catalogue, receiver):
    receiver.check_documented = True
    with app.app_context():
        from portal import db as portal_db

        secret, _row = webhooks.create_endpoint(
            portal_db.session(), receiver.url, {"subscription.change_requested"}, "test"
        )
        portal_db.session().commit()
    made = ask(app, db, "quantity", quantity=9)
    with app.app_context():
        from portal import worker

        assert worker.deliver_webhooks() == 1
    (request,) = receiver.requests
    assert webhooks.verify(secret, request["headers"]["Portal-Signature"], request["body"])
    event = json.loads(request["body"])
    assert event["type"] == "subscription.change_requested"
    obj = event["data"]["object"]
    assert (obj["id"], obj["kind"], obj["requested"]["quantity"]) == (made.id, "quantity", 9)
    assert event["data"]["bill_group"]["external_id"] == "bg-1"
