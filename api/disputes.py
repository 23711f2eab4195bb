"""Questions and disputes, as the billing system reads and answers them: a feed to poll
(by state, bill group or invoice) with each thread's messages, one dispute, a file of
its thread, and an answer that may resolve it. The answer is
portal.actions.disputes.answer, as on the staff page."""

from __future__ import annotations

from flask import Response, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from api.base import ApiError, acting_key, body, bp, page, record, requires
from api.resources import parent_filter
from portal import db, downloads
from portal.actions import ActionError
from portal.actions.disputes import answer
from portal.models import (
    BillGroup,
    Dispute,
    DisputeAttachment,
    DisputeMessage,
    DisputeState,
    Invoice,
)
from portal.sync import schemas, serialize

OPTIONS = (
    selectinload(Dispute.bill_group),
    selectinload(Dispute.invoice),
    selectinload(Dispute.messages).selectinload(DisputeMessage.attachment),
)
STATES = tuple(state.value for state in DisputeState)


def _one(dispute_id: int) -> Dispute:
    found = db.session().scalar(select(Dispute).where(Dispute.id == dispute_id).options(*OPTIONS))
    if found is None:
        raise ApiError(404, f"There is no dispute with id {dispute_id}.")
    return found


def _parent_id(model: type[BillGroup] | type[Invoice], external_id: str) -> int:
    found = db.session().scalar(select(model.id).where(model.external_id == external_id))
    return found if found is not None else -1  # unknown: an empty list, as elsewhere


@bp.get("/disputes")
@requires("read")
def list_disputes() -> Response:
    query = select(Dispute).options(*OPTIONS)
    state = request.args.get("state")
    if state is not None:
        if state not in STATES:
            raise ApiError(400, f"state is one of {', '.join(STATES)}.", field="state")
        query = query.where(Dispute.state == DisputeState(state))
    group = parent_filter("bill_group")
    if group is not None:
        query = query.where(Dispute.bill_group_id == _parent_id(BillGroup, group))
    invoice = parent_filter("invoice")
    if invoice is not None:
        query = query.where(Dispute.invoice_id == _parent_id(Invoice, invoice))
    return page(query, Dispute, serialize.dispute)


@bp.get("/disputes/<int:dispute_id>")
@requires("read")
def get_dispute(dispute_id: int) -> Response:
    return jsonify(serialize.dispute(_one(dispute_id)))


@bp.get("/disputes/<int:dispute_id>/attachments/<int:attachment_id>")
@requires("read")
def dispute_attachment(dispute_id: int, attachment_id: int) -> Response:
    """A file of the thread, as it was checked and kept."""
    found = db.session().get(DisputeAttachment, attachment_id)
    if found is None or found.message.dispute_id != dispute_id:
        raise ApiError(404, f"Dispute {dispute_id} has no attachment with id {attachment_id}.")
    return downloads.stored_file_response(found.filename, found.content_type, found.data)


@bp.post("/disputes/<int:dispute_id>/answer")
@requires("write")
def answer_dispute(dispute_id: int) -> Response:
    data = body(schemas.DisputeAnswerIn)
    session = db.session()
    found = _one(dispute_id)
    try:
        answered = answer(
            session, acting_key(), found.id, message=data.message, resolve=data.resolve
        )
        record(
            "api.disputes.answer",
            answered.state.value,
            bill_group_id=answered.bill_group_id,
            detail=str(answered.id),
        )
    except ActionError as exc:
        session.rollback()
        raise ApiError(exc.status, exc.message, field=exc.field, code=exc.code) from None
    session.commit()
    session.expire_all()
    return jsonify(serialize.dispute(_one(dispute_id)))
