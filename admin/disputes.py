"""Questions and disputes on the staff side: the list (open ones first, filtered by state
and kind), one thread with its files, and the answer, which may resolve it. The write is
portal.actions.disputes.answer, as on the API; answering needs `answer_disputes`."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from werkzeug.wrappers import Response as BaseResponse

from admin.forms import AnswerDisputeForm
from admin.guard import NAV, acting_staff, bp, staff_required
from portal import db, downloads, paging
from portal import disputes as rules
from portal.actions import ActionError
from portal.actions.disputes import answer
from portal.models import Dispute, DisputeAttachment, DisputeKind, DisputeState

NAV.append(("admin.disputes", "Disputes", "read"))

View = str | tuple[str, int] | BaseResponse
STATES = [state.value for state in DisputeState]
KINDS = [kind.value for kind in DisputeKind]
PER_PAGE = 50


@bp.get("/disputes")
@staff_required("read")
def disputes() -> str:
    """Every question and dispute, open ones first, then newest; ?state= and ?kind=."""
    state = request.args.get("state", "open")
    kind = request.args.get("kind") or ""
    query = (
        select(Dispute)
        .options(selectinload(Dispute.bill_group), selectinload(Dispute.invoice))
        .order_by((Dispute.state == DisputeState.OPEN).desc(), Dispute.id.desc())
    )
    if state in STATES:
        query = query.where(Dispute.state == DisputeState(state))
    else:
        state = ""
    if kind in KINDS:
        query = query.where(Dispute.kind == DisputeKind(kind))
    else:
        kind = ""
    total = db.session().scalar(select(func.count()).select_from(query.subquery())) or 0
    number = paging.clamp(paging.page_number(request.args.get("page")), total, PER_PAGE)
    rows = list(db.session().scalars(query.limit(PER_PAGE).offset((number - 1) * PER_PAGE)))
    return render_template(
        "admin/disputes.html",
        page=paging.Page(rows, total, number, PER_PAGE),
        state=state,
        kind=kind,
        states=STATES,
        kinds=KINDS,
        reasons=rules.REASONS,
    )


def _thread(dispute_id: int) -> Dispute:
    found = rules.with_thread(db.session(), dispute_id)
    if found is None:
        abort(404)
    return found


@bp.get("/disputes/<int:dispute_id>")
@staff_required("read")
def dispute(dispute_id: int, form: AnswerDisputeForm | None = None) -> str:
    found = _thread(dispute_id)
    return render_template(
        "admin/dispute.html",
        dispute=found,
        form=form or AnswerDisputeForm(formdata=None),
        reasons=rules.REASONS,
    )


@bp.post("/disputes/<int:dispute_id>/answer")
@staff_required("answer_disputes")
def answer_dispute(dispute_id: int) -> View:
    """Answer, and resolve or keep open; the customer is emailed as when the API answers."""
    found = _thread(dispute_id)
    form = AnswerDisputeForm()
    if not form.validate_on_submit() and "csrf_token" in form.errors:
        abort(400)  # not posted from our page
    session = db.session()
    try:
        answer(
            session,
            acting_staff(),
            found.id,
            message=form.message.data,
            resolve=bool(form.resolve.data),
        )
    except ActionError as exc:
        session.rollback()
        if exc.field == "message":
            form.message.errors = [exc.message]
            return dispute(dispute_id, form), 400
        flash(exc.message)
        return redirect(url_for("admin.dispute", dispute_id=dispute_id), code=303)
    session.commit()
    flash("Answer sent; the customer is emailed." + (" Resolved." if form.resolve.data else ""))
    return redirect(url_for("admin.dispute", dispute_id=dispute_id), code=303)


@bp.get("/disputes/<int:dispute_id>/files/<int:attachment_id>")
@staff_required("read")
def dispute_file(dispute_id: int, attachment_id: int) -> BaseResponse:
    found = db.session().get(DisputeAttachment, attachment_id)
    if found is None or found.message.dispute_id != dispute_id:
        abort(404)
    return downloads.stored_file_response(found.filename, found.content_type, found.data)
