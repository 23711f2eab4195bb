"""The subscription change actions: request_change for each kind and each refusal,
answer_change (accept, refuse, twice, as whom), set_subscription_settings; and 20
concurrent asks that make one request."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from portal import db as portal_db
from portal.actions import Actor, Conflict, Forbidden, Invalid, NotFound
from portal.actions.subscriptions import (
    answer_change,
    request_change,
    set_subscription_settings,
)
from portal.models import (
    AuditEvent,
    BillGroup,
    ChangeKind,
    OutboxMessage,
    RequestState,
    SubscriptionChangeRequest,
    SubscriptionStatus,
    WebhookEvent,
)
from portal.webhooks import create_endpoint
from tests.factories import (
    make_bill_group,
    make_changeable_subscription,
    make_plan,
)

CUSTOMER = Actor.customer("ap@acme.com")
BILLING = Actor.api_key("billing", "pk_ab12")
STAFF = Actor.staff("ops@staff.example.com")


@pytest.fixture
def group(app, db) -> BillGroup:
    found = make_bill_group(db)
    with app.app_context():
        create_endpoint(
            db, "https://hooks.example.com/x", {"subscription.change_requested"}, created_by="t"
        )
    db.commit()
    return found


@pytest.fixture
def sub(db, group):
    found = make_changeable_subscription(db, group)
    db.commit()
    return found


def written(db: Session) -> tuple[int, int, int, int]:
    """Requests, audit rows, webhook events and emails: what a refusal must leave alone."""
    db.expire_all()
    return (
        db.scalar(select(func.count(SubscriptionChangeRequest.id))) or 0,
        db.scalar(select(func.count(AuditEvent.id))) or 0,
        db.scalar(select(func.count(WebhookEvent.id))) or 0,
        db.scalar(select(func.count(OutboxMessage.id))) or 0,
    )


def ask(app, db, group, sub_id, kind, **values):
    with app.app_context():
        made = request_change(db, CUSTOMER, group, sub_id, kind, **values)
        db.commit()
    return made


def refused(app, db, group, sub_id, kind, error, **values):
    before = written(db)
    with app.app_context(), pytest.raises(error) as caught:
        request_change(db, CUSTOMER, group, sub_id, kind, **values)
    db.rollback()
    assert written(db) == before
    return caught.value


def test_asking_for_another_plan_stores_audits_and_sends_the_webhook(app, db, group, sub):
    business = next(p for p in sub.allowed_plans if p.name == "Business")
    made = ask(app, db, group, sub.id, "plan", plan_id=business.id, comment="  More seats  ")
    assert (made.kind, made.state, made.to_plan_id) == (
        ChangeKind.PLAN,
        RequestState.REQUESTED,
        business.id,
    )
    assert (made.from_plan_id, made.from_quantity, made.comment) == (sub.plan_id, 5, "More seats")
    assert made.requested_by == "ap@acme.com"
    (row,) = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "subscription.change_request")
    ).all()
    assert (row.actor_type, row.actor, row.outcome) == ("customer", "ap@acme.com", "requested")
    (event,) = db.scalars(
        select(WebhookEvent).where(WebhookEvent.type == "subscription.change_requested")
    ).all()
    payload = json.loads(event.payload)["data"]
    assert payload["actor"] == {"type": "customer", "email": "ap@acme.com"}
    obj = payload["object"]
    assert obj["kind"] == "plan" and obj["state"] == "requested" and obj["id"] == made.id
    assert obj["current"]["plan_name"] == "Team" and obj["current"]["price_minor"] == 9900
    assert obj["requested"]["plan"] == business.external_id
    assert obj["requested"]["price_minor"] == 24900
    assert obj["subscription"] == sub.external_id


@pytest.mark.parametrize(
    ("kind", "status", "values", "allow"),
    [
        ("quantity", SubscriptionStatus.ACTIVE, {"quantity": 12}, {}),
        ("pause", SubscriptionStatus.ACTIVE, {}, {}),
        ("resume", SubscriptionStatus.PAUSED, {}, {"allow_resume": True}),
        ("convert_trial", SubscriptionStatus.TRIALING, {}, {"allow_convert_trial": True}),
        ("extend_trial", SubscriptionStatus.TRIALING, {}, {"allow_extend_trial": True}),
        ("cancel_now", SubscriptionStatus.ACTIVE, {"reason": "too_expensive"}, {}),
        (
            "cancel_at_term_end",
            SubscriptionStatus.ACTIVE,
            {"reason": "other", "comment": "Budget cut"},
            {},
        ),
    ],
)
def test_each_kind_of_change_is_asked_for(app, db, group, kind, status, values, allow):
    sub = make_changeable_subscription(db, group, status=status, **allow)
    db.commit()
    made = ask(app, db, group, sub.id, kind, **values)
    assert made.kind == ChangeKind(kind)
    assert made.to_quantity == values.get("quantity")
    assert made.reason == values.get("reason")
    assert made.comment == values.get("comment")


def test_a_plan_not_offered_is_refused(app, db, group, sub):
    elsewhere = make_plan(db, group.entity, name="Enterprise")
    db.commit()
    error = refused(app, db, group, sub.id, "plan", Invalid, plan_id=elsewhere.id)
    assert (error.field, error.message) == ("plan", "Choose one of the plans offered.")
    # The plan it is on is no move at all.
    refused(app, db, group, sub.id, "plan", Invalid, plan_id=sub.plan_id)
    refused(app, db, group, sub.id, "plan", Invalid, plan_id=None)


@pytest.mark.parametrize("quantity", [0, 21, -1, 5, None, True])
def test_a_quantity_out_of_range_is_refused(app, db, group, sub, quantity):
    error = refused(app, db, group, sub.id, "quantity", Invalid, quantity=quantity)
    assert error.field == "quantity"
    if quantity in (0, 21, -1):
        assert error.message == "Enter a quantity between 1 and 20."


def test_a_change_switched_off_for_the_seller_is_refused(app, db, group, sub):
    group.entity.allow_change_pause = False
    db.commit()
    error = refused(app, db, group, sub.id, "pause", Forbidden)
    assert "does not take this change" in error.message
    assert error.status == 403


def test_a_change_the_subscription_does_not_allow_is_refused(app, db, group, sub):
    # Resume on an active subscription, a trial change without a trial, an unknown kind.
    refused(app, db, group, sub.id, "resume", Forbidden)
    refused(app, db, group, sub.id, "extend_trial", Forbidden)
    error = refused(app, db, group, sub.id, "upgrade_for_free", Invalid)
    assert error.field == "kind"
    sub.status = SubscriptionStatus.CANCELLED
    db.commit()
    refused(app, db, group, sub.id, "cancel_now", Forbidden, reason="other")


def test_another_bill_groups_subscription_is_not_found(app, db, group, sub):
    other = make_bill_group(db, entity=group.entity)
    db.commit()
    refused(app, db, other, sub.id, "pause", NotFound)
    refused(app, db, group, 10**12, "pause", NotFound)


def test_cancelling_needs_a_reason_from_the_list(app, db, group, sub):
    for reason in (None, "", "because"):
        error = refused(app, db, group, sub.id, "cancel_now", Invalid, reason=reason)
        assert (error.field, error.message) == ("reason", "Choose why you are cancelling.")
    error = refused(
        app, db, group, sub.id, "cancel_now", Invalid, reason="other", comment="x" * 1001
    )
    assert error.field == "comment"


@pytest.mark.parametrize(
    "comment", ["a\ud800b", "\udfff", "a\x00b", "x\u202ey", "line\u2028two", "x" * 100_000]
)
def test_a_comment_that_cannot_be_stored_or_sent_is_refused(app, db, group, sub, comment):
    """A lone surrogate, a control, a direction mark, a separator, 100k characters: a
    clear refusal at the field, nothing written (a surrogate would otherwise crash the
    insert, the webhook's JSON or the email)."""
    error = refused(app, db, group, sub.id, "pause", Invalid, comment=comment)
    assert error.field == "comment"


def test_an_answer_reason_with_a_lone_surrogate_is_refused(app, db, group, sub):
    asked = ask(app, db, group, sub.id, "pause")
    with app.app_context(), pytest.raises(Invalid) as refusal:
        answer_change(db, BILLING, asked.id, accept=False, reason="no\ud800")
    assert refusal.value.field == "reason"
    db.rollback()
    assert db.get(SubscriptionChangeRequest, asked.id).state == RequestState.REQUESTED


def test_one_request_waits_per_subscription(app, db, group, sub):
    ask(app, db, group, sub.id, "pause")
    error = refused(app, db, group, sub.id, "cancel_now", Conflict, reason="other")
    assert "already waiting" in error.message
    assert error.status == 409


def test_only_a_customer_asks(app, db, group, sub):
    before = written(db)
    with app.app_context(), pytest.raises(Forbidden):
        request_change(db, BILLING, group, sub.id, "pause")
    db.rollback()
    assert written(db) == before


def test_accepting_writes_once_audits_and_emails_the_customer(app, db, group, sub):
    made = ask(app, db, group, sub.id, "quantity", quantity=8)
    with app.app_context():
        answered = answer_change(db, BILLING, made.id, accept=True, reason="From next month")
        db.commit()
    assert answered.state == RequestState.ACCEPTED
    assert answered.answered_by == "api:billing"
    assert answered.answer_reason == "From next month"
    assert answered.answered_at is not None
    (row,) = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "subscription.change_answer")
    ).all()
    assert (row.actor, row.outcome) == ("key billing (pk_ab12…)", "accepted")
    (mail,) = db.scalars(
        select(OutboxMessage).where(OutboxMessage.kind == "subscription_change_answered")
    ).all()
    assert mail.to_address == "ap@acme.com"
    # Answered: the subscription may be asked about again.
    ask(app, db, group, sub.id, "pause")


def test_refusing_needs_a_reason(app, db, group, sub):
    made = ask(app, db, group, sub.id, "pause")
    before = written(db)
    for reason in (None, "   "):
        with app.app_context(), pytest.raises(Invalid) as caught:
            answer_change(db, STAFF, made.id, accept=False, reason=reason)
        db.rollback()
        assert caught.value.field == "reason"
    assert written(db) == before
    with app.app_context():
        answered = answer_change(db, STAFF, made.id, accept=False, reason="Pausing is yearly only")
        db.commit()
    assert (answered.state, answered.answered_by) == (RequestState.REFUSED, STAFF.name)


def test_an_answer_cannot_be_given_twice(app, db, group, sub):
    made = ask(app, db, group, sub.id, "pause")
    with app.app_context():
        answer_change(db, BILLING, made.id, accept=True)
        db.commit()
    before = written(db)
    for accept in (True, False):
        with app.app_context(), pytest.raises(Conflict) as caught:
            answer_change(db, STAFF, made.id, accept=accept, reason="Changed my mind")
        db.rollback()
        assert caught.value.code == "already_answered"
        assert "answered already (accepted by api:billing)" in caught.value.message
    assert written(db) == before
    db.expire_all()
    assert db.get(SubscriptionChangeRequest, made.id).state == RequestState.ACCEPTED


def test_an_unknown_request_or_another_groups_is_not_found(app, db, group, sub):
    made = ask(app, db, group, sub.id, "pause")
    other = make_bill_group(db)
    db.commit()
    with app.app_context():
        with pytest.raises(NotFound):
            answer_change(db, STAFF, 10**12, accept=True)
        with pytest.raises(NotFound):
            answer_change(db, STAFF, made.id, accept=True, group=other)
        with pytest.raises(Forbidden):
            answer_change(db, CUSTOMER, made.id, accept=True)
    db.rollback()


def test_staff_switch_kinds_of_change_for_a_seller(app, db, group):
    entity = group.entity
    with app.app_context():
        changes = set_subscription_settings(
            db, STAFF, entity, {ChangeKind.CANCEL_NOW: False, ChangeKind.PAUSE: True}
        )
        db.commit()
        assert changes == {"allow_change_cancel_now": [True, False]}
        assert entity.allow_change_cancel_now is False
        (row,) = db.scalars(
            select(AuditEvent).where(AuditEvent.action == "entity.subscription_settings")
        ).all()
        assert json.loads(row.detail)["changes"] == {"allow_change_cancel_now": [True, False]}
        assert set_subscription_settings(db, STAFF, entity, {ChangeKind.CANCEL_NOW: False}) == {}
        with pytest.raises(Forbidden):
            set_subscription_settings(db, CUSTOMER, entity, {ChangeKind.CANCEL_NOW: True})


def test_twenty_concurrent_asks_make_one_request(app, db, group, sub):
    """A double submit, twenty times over: one request, nineteen told one is waiting."""
    with app.app_context():
        engine = portal_db.engine()
    factory = sessionmaker(engine, expire_on_commit=False)
    barrier = threading.Barrier(20)
    outcomes: list[object] = [None] * 20

    def attempt(index: int) -> None:
        try:
            # The pool has fewer connections than twenty: take one only past the barrier.
            barrier.wait(timeout=30)
            with app.app_context(), factory() as session:
                found = session.get(BillGroup, group.id)
                try:
                    request_change(session, CUSTOMER, found, sub.id, "pause")
                    session.commit()
                    outcomes[index] = "requested"
                except Conflict:
                    session.rollback()
                    outcomes[index] = "conflict"
        except Exception as exc:  # reported by the assertions below
            outcomes[index] = exc

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(map(repr, outcomes)) == ["'conflict'"] * 19 + ["'requested'"], outcomes
    db.expire_all()
    assert db.scalar(select(func.count(SubscriptionChangeRequest.id))) == 1
    assert (
        db.scalar(
            select(func.count(WebhookEvent.id)).where(
                WebhookEvent.type == "subscription.change_requested"
            )
        )
        == 1
    )


def test_twenty_concurrent_answers_make_one_answer(app, db, group, sub):
    """The billing system retrying, staff answering by hand at the same moment: twenty
    answers (half accept, half refuse) to one request; exactly one is written, mailed and
    audited, the others are told it was answered already."""
    with app.app_context():
        asked = request_change(db, CUSTOMER, group, sub.id, "pause")
        db.commit()
        engine = portal_db.engine()
    mails = db.scalar(select(func.count(OutboxMessage.id)))
    factory = sessionmaker(engine, expire_on_commit=False)
    barrier = threading.Barrier(20)
    outcomes: list[object] = [None] * 20

    def attempt(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            with app.app_context(), factory() as session:
                try:
                    answer_change(
                        session,
                        BILLING if index % 2 else STAFF,
                        asked.id,
                        accept=bool(index % 2),
                        reason=f"answer {index}",
                    )
                    session.commit()
                    outcomes[index] = "answered"
                except Conflict as exc:
                    session.rollback()
                    outcomes[index] = exc.code
        except Exception as exc:  # reported by the assertions below
            outcomes[index] = exc

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(map(repr, outcomes)) == ["'already_answered'"] * 19 + ["'answered'"], outcomes
    db.expire_all()
    (answer,) = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "subscription.change_answer")
    ).all()
    row = db.get(SubscriptionChangeRequest, asked.id)
    assert row.state.value == answer.outcome
    assert json.loads(answer.detail)["reason"] == row.answer_reason
    assert db.scalar(select(func.count(OutboxMessage.id))) == mails + 1
