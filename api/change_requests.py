"""Subscription change requests, as the billing system reads and answers them: a feed
to poll (by state, by bill group), one request, and accept or refuse, each once. The
answer is portal.actions.subscriptions.answer_change, as on the staff page; accepting
may carry the subscription as it now is, written by the same upsert as its PUT."""

from __future__ import annotations

from flask import Response, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from api.base import ApiError, acting_key, body, bp, page, record, requires
from api.resources import parent_filter
from portal import db
from portal.actions import ActionError
from portal.actions.subscriptions import answer_change
from portal.models import BillGroup, RequestState, SubscriptionChangeRequest
from portal.sync import schemas, serialize, upsert

OPTIONS = (
    selectinload(SubscriptionChangeRequest.subscription),
    selectinload(SubscriptionChangeRequest.bill_group),
    selectinload(SubscriptionChangeRequest.from_plan),
    selectinload(SubscriptionChangeRequest.to_plan),
)
STATES = tuple(state.value for state in RequestState)


def _one(request_id: int) -> SubscriptionChangeRequest:
    found = db.session().scalar(
        select(SubscriptionChangeRequest)
        .where(SubscriptionChangeRequest.id == request_id)
        .options(*OPTIONS)
    )
    if found is None:
        raise ApiError(404, f"There is no subscription change request with id {request_id}.")
    return found


@bp.get("/subscription-change-requests")
@requires("read")
def list_change_requests() -> Response:
    query = select(SubscriptionChangeRequest).options(*OPTIONS)
    state = request.args.get("state")
    if state is not None:
        if state not in STATES:
            raise ApiError(400, f"state is one of {', '.join(STATES)}.", field="state")
        query = query.where(SubscriptionChangeRequest.state == RequestState(state))
    group = parent_filter("bill_group")
    if group is not None:
        group_id = db.session().scalar(select(BillGroup.id).where(BillGroup.external_id == group))
        query = query.where(
            SubscriptionChangeRequest.bill_group_id == (group_id if group_id is not None else -1)
        )
    return page(query, SubscriptionChangeRequest, serialize.subscription_change_request)


@bp.get("/subscription-change-requests/<int:request_id>")
@requires("read")
def get_change_request(request_id: int) -> Response:
    return jsonify(serialize.subscription_change_request(_one(request_id)))


@bp.post("/subscription-change-requests/<int:request_id>/accept")
@requires("write")
def accept_change_request(request_id: int) -> Response:
    data = body(schemas.ChangeAcceptIn)
    return _answer(request_id, accept=True, reason=data.reason, updated=data.subscription)


@bp.post("/subscription-change-requests/<int:request_id>/refuse")
@requires("write")
def refuse_change_request(request_id: int) -> Response:
    data = body(schemas.ChangeRefuseIn)
    return _answer(request_id, accept=False, reason=data.reason, updated=None)


def _answer(
    request_id: int, *, accept: bool, reason: str | None, updated: schemas.SubscriptionIn | None
) -> Response:
    session = db.session()
    found = _one(request_id)
    try:
        answered = answer_change(session, acting_key(), found.id, accept=accept, reason=reason)
        if updated is not None:
            external_id = found.subscription.external_id
            if external_id is None:
                raise ApiError(
                    422,
                    "The subscription has no external id; PUT it with one first.",
                    field="subscription",
                )
            if updated.bill_group != found.bill_group.external_id:
                raise ApiError(
                    422,
                    "The subscription belongs to another bill group than the request.",
                    field="subscription.bill_group",
                )
            upsert.put(session, acting_key(), "subscriptions", external_id, updated)
        record(
            f"api.subscription-change-requests.{'accept' if accept else 'refuse'}",
            answered.state.value,
            bill_group_id=answered.bill_group_id,
            detail=str(answered.id),
        )
    except ActionError as exc:
        session.rollback()
        raise ApiError(exc.status, exc.message, field=exc.field, code=exc.code) from None
    except upsert.SyncError as exc:
        session.rollback()
        field = f"subscription.{exc.field}" if exc.field else "subscription"
        raise ApiError(409 if exc.code == "conflict" else 422, exc.message, field=field) from None
    except ApiError:
        session.rollback()
        raise
    session.commit()
    session.expire_all()
    return jsonify(serialize.subscription_change_request(_one(request_id)))
