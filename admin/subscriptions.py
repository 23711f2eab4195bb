"""Subscription changes on the staff side: a seller's switches (which kinds of change its
customers may ask for; admins only), every request with its answer, and answering a
request by hand for a billing system without an API. The writes are the actions of
portal.actions.subscriptions, as on the API."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from werkzeug.wrappers import Response as BaseResponse

from admin.forms import AnswerChangeForm, SubscriptionSettingsForm
from admin.guard import NAV, acting_staff, bp, staff_required
from admin.lookup import get_or_404
from portal import db, paging
from portal import subscriptions as rules
from portal.actions import ActionError
from portal.actions.subscriptions import answer_change, set_subscription_settings
from portal.forms import status_of
from portal.models import BillGroup, ChangeKind, RequestState, SubscriptionChangeRequest

NAV.append(("admin.subscription_change_requests", "Change requests", "read"))

View = str | tuple[str, int] | BaseResponse
STATES = [state.value for state in RequestState]
PER_PAGE = 50


@bp.route("/bill-groups/<int:bill_group_id>/subscription-settings", methods=["GET", "POST"])
@staff_required("manage_self_service")
def subscription_settings(bill_group_id: int) -> View:
    """The bill group's seller's switches, one per kind of change."""
    group = get_or_404(BillGroup, bill_group_id)
    entity = group.entity
    current = {kind.value: rules.switched_on(entity, kind) for kind in ChangeKind}
    form = SubscriptionSettingsForm(data=None if request.method == "POST" else current)
    if form.validate_on_submit():
        switches = {kind: bool(form[kind.value].data) for kind in ChangeKind}
        try:
            changed = set_subscription_settings(db.session(), acting_staff(), entity, switches)
        except ActionError as exc:
            db.session().rollback()
            flash(exc.message)
        else:
            db.session().commit()
            flash("Subscription settings saved." if changed else "Nothing changed.")
            return redirect(url_for("admin.bill_group", bill_group_id=group.id), code=303)
    return render_template(
        "admin/subscription_settings.html", form=form, group=group, entity=entity
    ), status_of(form)


@bp.get("/subscription-change-requests")
@staff_required("read")
def subscription_change_requests() -> str:
    """Every request, newest first; ?state= narrows them (requested: waiting)."""
    state = request.args.get("state") or ""
    query = (
        select(SubscriptionChangeRequest)
        .options(
            selectinload(SubscriptionChangeRequest.bill_group),
            selectinload(SubscriptionChangeRequest.subscription),
            selectinload(SubscriptionChangeRequest.to_plan),
        )
        .order_by(SubscriptionChangeRequest.id.desc())
    )
    if state in STATES:
        query = query.where(SubscriptionChangeRequest.state == RequestState(state))
    else:
        state = ""
    total = db.session().scalar(select(func.count()).select_from(query.subquery())) or 0
    number = paging.clamp(paging.page_number(request.args.get("page")), total, PER_PAGE)
    rows = list(db.session().scalars(query.limit(PER_PAGE).offset((number - 1) * PER_PAGE)))
    page = paging.Page(rows, total, number, PER_PAGE)
    return render_template(
        "admin/subscription_change_requests.html",
        page=page,
        state=state,
        states=STATES,
        describe=rules.describe,
        name=rules.subscription_name,
    )


@bp.post("/subscription-change-requests/<int:request_id>/answer")
@staff_required("manage_accounts")
def answer_subscription_change(request_id: int) -> BaseResponse:
    """Accept or refuse by hand; the customer is emailed as when the API answers."""
    found = get_or_404(SubscriptionChangeRequest, request_id)
    back = url_for("admin.bill_group", bill_group_id=found.bill_group_id)
    form = AnswerChangeForm()
    if not form.validate_on_submit():
        if "csrf_token" in form.errors:
            abort(400)  # not posted from our page
        flash(" ".join(error for errors in form.errors.values() for error in errors))
        return redirect(back, code=303)
    try:
        answer_change(
            db.session(),
            acting_staff(),
            found.id,
            accept=form.decision.data == "accept",
            reason=form.reason.data,
        )
    except ActionError as exc:
        db.session().rollback()
        flash(exc.message)
        return redirect(back, code=303)
    db.session().commit()
    flash("Answer saved; the customer is emailed.")
    return redirect(back, code=303)
