"""Asking for a subscription change in the portal: the buttons, the form, the review page,
the one button that asks, the "requested" state; the answer through the API and the
email the customer gets, read back from the SMTP server. And the refusals: a bad value,
a change not offered, a double submit, no CSRF token, the preview, another bill group's
subscription, a customer who may not manage billing."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import func, select

from portal.models import (
    AuditEvent,
    CustomerRole,
    RequestState,
    SubscriptionChangeRequest,
    WebhookEvent,
)
from tests.admin.conftest import staff_client  # noqa: F401  (the preview test)
from tests.api.conftest import Api, make_key
from tests.conftest import csrf_token, run_worker
from tests.factories import make_bill_group, make_changeable_subscription
from tests.portal.pages_helpers import ADDRESS, flashes, plain_text, url


@pytest.fixture
def sub(db, group):
    found = make_changeable_subscription(db, group)
    db.commit()
    return found


def requests(db) -> list[SubscriptionChangeRequest]:
    db.expire_all()
    return list(db.scalars(select(SubscriptionChangeRequest)))


def review_path(group, sub, **args: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in args.items())
    return url(group, f"/subscriptions/{sub.id}/review?{query}")


def ask(client, group, sub, **fields: str):
    """The review page, then its one button."""
    review = client.get(review_path(group, sub, **fields))
    assert review.status_code == 200, review.text
    return client.post(
        url(group, f"/subscriptions/{sub.id}/request"),
        data={"csrf_token": csrf_token(review.text), **fields},
    )


def test_pick_review_and_ask_for_another_plan_then_hear_the_answer(
    app, db, customer, group, sub, smtp
):
    page = customer.get(url(group, "/subscriptions")).text
    for label in ("Change plan", "Change quantity", "Pause", "Cancel now"):
        assert f">{label}<" in page
    assert "Resume" not in page and "Extend the trial" not in page

    form = customer.get(url(group, f"/subscriptions/{sub.id}/change?kind=plan"))
    assert form.status_code == 200
    business = next(p for p in sub.allowed_plans if p.name == "Business")
    # The plans it may move to, with their price per unit and for the 5 it has; not its own.
    assert "Business: €249.00 per unit (€1,245.00 for your 5), monthly" in form.text
    assert "Starter: €29.00 per unit (€145.00 for your 5), monthly" in form.text
    assert f'value="{sub.plan_id}"' not in form.text

    review = customer.get(review_path(group, sub, kind="plan", plan=str(business.id)))
    assert review.status_code == 200
    text = html.unescape(re.sub(r"<[^>]+>", " ", review.text))
    assert re.search(r"Today\s+Team\s+5\s+€99\.00 monthly\s+€495\.00", text)
    assert re.search(r"After the change\s+Business\s+5\s+€249\.00 monthly\s+€1,245\.00", text)
    assert "The billing system confirms the final amount" in text
    assert requests(db) == []  # the review writes nothing

    done = customer.post(
        url(group, f"/subscriptions/{sub.id}/request"),
        data={"csrf_token": csrf_token(review.text), "kind": "plan", "plan": str(business.id)},
    )
    assert done.status_code == 303
    after = customer.get(done.headers["Location"]).text
    assert flashes(after)[0].startswith("Change requested.")
    assert "Change requested</span>" in after
    assert "Move to the Business plan" in after
    assert ">Change plan<" not in after  # one request at a time
    (made,) = requests(db)
    assert (made.state, made.to_plan_id, made.requested_by) == (
        RequestState.REQUESTED,
        business.id,
        ADDRESS,
    )

    # The billing system accepts through the API; the customer is emailed.
    api = Api(app.test_client(), make_key(app))
    answered = api.post(
        f"/subscription-change-requests/{made.id}/accept", {"reason": "From your next invoice"}
    )
    assert answered.status_code == 200, answered.get_json()
    assert answered.get_json()["state"] == "accepted"
    smtp.clear()
    run_worker(app)
    (mail,) = smtp.to(ADDRESS)
    assert "accepted" in mail["Subject"]
    body = plain_text(mail)
    assert "Move to the Business plan" in body and "From your next invoice" in body
    assert "€249.00 per unit, €1,245.00 for 5" in body
    assert url(group, "/subscriptions") in body
    # Answered: the buttons are back, and the answer is shown until the record changes.
    page = html.unescape(customer.get(url(group, "/subscriptions")).text)
    assert ">Change plan<" in page
    assert (
        "Accepted on" in page and "Move to the Business plan. Note: From your next invoice" in page
    )


def test_a_refusal_is_emailed_with_its_reason(app, db, customer, group, sub, smtp):
    assert ask(customer, group, sub, kind="cancel_now", reason="too_expensive").status_code == 303
    (made,) = requests(db)
    api = Api(app.test_client(), make_key(app))
    refused = api.post(
        f"/subscription-change-requests/{made.id}/refuse", {"reason": "The contract runs to June"}
    )
    assert refused.status_code == 200
    smtp.clear()
    run_worker(app)
    (mail,) = smtp.to(ADDRESS)
    assert "not accepted" in mail["Subject"]
    assert "The contract runs to June" in plain_text(mail)
    page = html.unescape(customer.get(url(group, "/subscriptions")).text)
    assert "Not accepted on" in page and "Reason: The contract runs to June" in page


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"kind": "quantity", "quantity": "21"}, "quantity", "Enter a quantity between 1 and 20."),
        ({"kind": "quantity", "quantity": "many"}, "quantity", "Enter a whole number."),
        ({"kind": "plan", "plan": "999999"}, "plan", "Choose one of the plans offered."),
        ({"kind": "cancel_now"}, "reason", "Choose why you are cancelling."),
    ],
)
def test_bad_input_is_named_on_the_form(db, customer, group, sub, fields, field, message):
    response = customer.get(review_path(group, sub, **fields))
    assert response.status_code == 400
    assert message in html.unescape(response.text)
    posted = customer.post(
        url(group, f"/subscriptions/{sub.id}/request"),
        data={"csrf_token": csrf_token(customer.get(url(group, "/subscriptions")).text), **fields},
    )
    assert posted.status_code == 422
    assert message in html.unescape(posted.text)
    assert requests(db) == []


def test_a_change_switched_off_is_not_offered(db, customer, group, sub):
    group.entity.allow_change_pause = False
    db.commit()
    assert ">Pause<" not in customer.get(url(group, "/subscriptions")).text
    assert customer.get(url(group, f"/subscriptions/{sub.id}/change?kind=pause")).status_code == 403
    assert customer.get(review_path(group, sub, kind="pause")).status_code == 403
    posted = customer.post(
        url(group, f"/subscriptions/{sub.id}/request"),
        data={
            "csrf_token": csrf_token(customer.get(url(group, "/subscriptions")).text),
            "kind": "pause",
        },
    )
    assert posted.status_code == 403
    assert "does not take this change" in html.unescape(posted.text)
    assert requests(db) == []


def test_a_double_submit_makes_one_request(db, customer, group, sub):
    review = customer.get(review_path(group, sub, kind="pause"))
    data = {"csrf_token": csrf_token(review.text), "kind": "pause"}
    first = customer.post(url(group, f"/subscriptions/{sub.id}/request"), data=data)
    second = customer.post(url(group, f"/subscriptions/{sub.id}/request"), data=data)
    assert first.status_code == second.status_code == 303
    assert "already waiting" in flashes(customer.get(url(group, "/subscriptions")).text)[-1]
    assert len(requests(db)) == 1
    assert db.scalar(
        select(func.count(WebhookEvent.id)).where(
            WebhookEvent.type == "subscription.change_requested"
        )
    ) in (0, 1)  # one event at most (none when no endpoint listens)


def test_no_csrf_token_no_request(db, customer, group, sub):
    response = customer.post(url(group, f"/subscriptions/{sub.id}/request"), data={"kind": "pause"})
    assert response.status_code == 400
    assert requests(db) == []


def test_another_bill_groups_subscription_is_not_found(db, customer, group):
    other = make_bill_group(db, entity=group.entity)
    theirs = make_changeable_subscription(db, other)
    db.commit()
    assert (
        customer.get(url(group, f"/subscriptions/{theirs.id}/change?kind=pause")).status_code == 404
    )
    assert customer.get(review_path(group, theirs, kind="pause")).status_code == 404
    token = csrf_token(customer.get(url(group, "/subscriptions")).text)
    posted = customer.post(
        url(group, f"/subscriptions/{theirs.id}/request"),
        data={"csrf_token": token, "kind": "pause"},
    )
    assert posted.status_code == 404
    assert requests(db) == []


def test_the_preview_shows_the_buttons_disabled_and_never_writes(db, group, sub, staff_client):  # noqa: F811
    staff = staff_client()
    prefix = f"/admin/preview/{group.public_id}"
    page = staff.get(f"{prefix}/subscriptions").text
    assert (
        '<button type="button" class="button button-secondary" disabled>Change plan</button>'
        in page
    )
    review = staff.get(f"{prefix}/subscriptions/{sub.id}/review?kind=pause")
    assert review.status_code == 200
    assert re.search(
        r'<button type="submit" class="button" disabled>Ask for this change', review.text
    )
    posted = staff.post(
        f"{prefix}/subscriptions/{sub.id}/request",
        data={"csrf_token": csrf_token(review.text), "kind": "pause"},
    )
    assert posted.status_code == 403
    assert requests(db) == []


def test_a_customer_who_may_not_manage_billing_sees_no_buttons_and_a_forged_post_is_audited(
    db, customer, group, sub
):
    token = csrf_token(customer.get(url(group, "/subscriptions")).text)
    rule = group.access_rules[0]
    rule.role = CustomerRole.VIEWER  # a viewer's rule (tests/portal/test_customer_roles.py)
    db.commit()
    page = customer.get(url(group, "/subscriptions")).text
    assert ">Pause<" not in page and "Change plan" not in page
    posted = customer.post(
        url(group, f"/subscriptions/{sub.id}/request"),
        data={"csrf_token": token, "kind": "pause"},
    )
    assert posted.status_code == 403
    assert requests(db) == []
    (row,) = db.scalars(select(AuditEvent).where(AuditEvent.action == "customer.forbidden")).all()
    assert (row.actor, row.bill_group_id) == (ADDRESS, group.id)
    assert row.detail == "POST customer.subscriptions_request"


def test_the_note_is_posted_with_the_request_never_put_in_a_url(db, customer, group, sub):
    review = customer.get(review_path(group, sub, kind="pause", comment="in the URL"))
    assert review.status_code == 200
    assert 'name="comment"' in review.text and "in the URL" not in review.text
    too_long = customer.post(
        url(group, f"/subscriptions/{sub.id}/request"),
        data={"csrf_token": csrf_token(review.text), "kind": "pause", "comment": "x" * 5000},
    )
    assert too_long.status_code == 400 and 'name="comment"' in too_long.text
    assert requests(db) == []
    done = customer.post(
        url(group, f"/subscriptions/{sub.id}/request"),
        data={"csrf_token": csrf_token(review.text), "kind": "pause", "comment": "Bitte ab Januar"},
    )
    assert done.status_code == 303
    (made,) = requests(db)
    assert made.comment == "Bitte ab Januar"
