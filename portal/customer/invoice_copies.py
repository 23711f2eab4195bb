"""Invoice-copy recipients: the page where a billing manager adds and removes the extra
addresses that receive the bill group's invoices (/p/<id>/billing-details/invoice-copies),
and the two pages those addresses reach from their emails, without signing in (they have
no portal access): confirming the address, and "stop sending me copies".

As with sign-in links (SECURITY.md), a GET never confirms or stops anything: the link
leads to a one-click page, and its POST (CSRF protected) does it, so a mail scanner
that fetches the link changes nothing. The Flask session holds the record's id between
the link and the POST, never the token.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
)
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from portal import confirmations, db, throttle
from portal.actions import ActionError, Actor, TooMany
from portal.actions import invoice_copies as actions
from portal.customer.forms import InvoiceCopyForm
from portal.customer.signin import see_other
from portal.customer.viewer import (
    Viewer,
    bp,
    may_manage_billing,
    portal_page,
    portal_url,
    render_page,
)
from portal.forms import ButtonForm
from portal.models import BillGroup

links_bp = Blueprint("invoice_copy_links", __name__, url_prefix="/p/<public_id>/invoice-copies")

CONFIRM_KEY = "invoice_copy_confirmation"
STOP_KEY = "invoice_copy_stop"


# --- the billing manager's page ------------------------------------------------------


@bp.route("/billing-details/invoice-copies", methods=["GET", "POST"])
@portal_page
def billing_details_invoice_copies(viewer: Viewer) -> str | tuple[str, int] | BaseResponse:
    group = viewer.bill_group
    form = InvoiceCopyForm()
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                added = actions.add_recipient(db.session(), _actor(viewer), group, form.email.data)
            except ActionError as exc:
                db.session().rollback()
                form.email.errors = [exc.message]
                response = make_response(
                    _page(viewer, form), 400 if exc.status == 422 else exc.status
                )
                if isinstance(exc, TooMany):
                    response.headers["Retry-After"] = str(exc.retry_after)
                return response
            db.session().commit()
            flash(
                f"We have emailed {added.email} a link to confirm it. It receives no invoices "
                "until it is confirmed."
            )
            return redirect(portal_url("billing_details_invoice_copies"), code=303)
        status = 400
    return _page(viewer, form), status


@bp.post("/billing-details/invoice-copies/<int:recipient_id>/remove")
@portal_page
def billing_details_invoice_copies_remove(viewer: Viewer, recipient_id: int) -> BaseResponse:
    if not ButtonForm().validate_on_submit():
        abort(400)
    try:
        removed = actions.remove_recipient(
            db.session(), _actor(viewer), viewer.bill_group, recipient_id
        )
    except ActionError as exc:
        db.session().rollback()
        abort(exc.status)
    db.session().commit()
    flash(f"{removed} no longer receives invoice copies.")
    return redirect(portal_url("billing_details_invoice_copies"), code=303)


def _page(viewer: Viewer, form: InvoiceCopyForm) -> str:
    listed = actions.recipients(db.session(), viewer.bill_group)
    return render_page(
        "portal/invoice_copies.html",
        form=form,
        recipients=listed,
        # The preview shows the forms a billing manager sees, disabled.
        may_change=may_manage_billing(viewer) or viewer.preview,
        limit=actions.MAX_RECIPIENTS,
        remove_form=ButtonForm(),
    )


def _actor(viewer: Viewer) -> Actor:
    return Actor.customer(viewer.email)


# --- the pages the recipients reach from their emails ---------------------------------


def _group(public_id: str) -> BillGroup:
    """The bill group behind the link, whether or not its portal is open: a recipient
    has no portal access either way, and must be able to stop the copies."""
    group = None
    if 10 <= len(public_id) <= 32:
        group = db.session().scalar(select(BillGroup).where(BillGroup.public_id == public_id))
    if group is None:
        abort(404)
    return group


@links_bp.route("/confirm/<token>", methods=["GET", "HEAD"])
@throttle.secret_limit
def open_confirm(public_id: str, token: str) -> BaseResponse | tuple[str, int]:
    if request.method == "HEAD":  # link checkers: answer without touching anything
        return "", 200
    group = _group(public_id)
    found = confirmations.open_link(db.session(), group, actions.PURPOSE, token)
    if found is None:
        session.pop(CONFIRM_KEY, None)
        return see_other("invoice_copy_links.invalid", public_id=public_id)
    session[CONFIRM_KEY] = found.id
    return see_other("invoice_copy_links.confirm", public_id=public_id)


@links_bp.get("/confirm")
def confirm(public_id: str) -> str | BaseResponse:
    group = _group(public_id)
    confirmation_id = session.get(CONFIRM_KEY)
    found = (
        confirmations.pending(db.session(), group, actions.PURPOSE, confirmation_id)
        if isinstance(confirmation_id, int)
        else None
    )
    if found is None:
        return see_other("invoice_copy_links.invalid", public_id=public_id)
    return render_template(
        "portal/invoice_copy_links/confirm.html", group=group, email=found.email, form=ButtonForm()
    )


@links_bp.post("/confirm")
@throttle.secret_limit
def confirm_post(public_id: str) -> str | BaseResponse:
    group = _group(public_id)
    confirmation_id = session.get(CONFIRM_KEY)
    if not ButtonForm().validate_on_submit() or not isinstance(confirmation_id, int):
        return see_other("invoice_copy_links.invalid", public_id=public_id)
    confirmed = actions.confirm_recipient(db.session(), group, confirmation_id)
    session.pop(CONFIRM_KEY, None)
    if confirmed is None:
        return see_other("invoice_copy_links.invalid", public_id=public_id)
    db.session().commit()
    return render_template(
        "portal/invoice_copy_links/done.html",
        group=group,
        heading="Address confirmed",
        message=f"{confirmed} will receive the invoices of {group.name} at {group.entity.name}.",
    )


@links_bp.route("/stop/<token>", methods=["GET", "HEAD"])
@throttle.secret_limit
def open_stop(public_id: str, token: str) -> BaseResponse | tuple[str, int]:
    if request.method == "HEAD":
        return "", 200
    group = _group(public_id)
    found = actions.find_stop(db.session(), group, token)
    if found is None:
        session.pop(STOP_KEY, None)
        return see_other("invoice_copy_links.invalid", public_id=public_id)
    session[STOP_KEY] = found.id
    return see_other("invoice_copy_links.stop", public_id=public_id)


@links_bp.get("/stop")
def stop(public_id: str) -> str | BaseResponse:
    group = _group(public_id)
    if not isinstance(session.get(STOP_KEY), int):
        return see_other("invoice_copy_links.invalid", public_id=public_id)
    return render_template("portal/invoice_copy_links/stop.html", group=group, form=ButtonForm())


@links_bp.post("/stop")
@throttle.secret_limit
def stop_post(public_id: str) -> str | BaseResponse:
    group = _group(public_id)
    copy_id = session.get(STOP_KEY)
    if not ButtonForm().validate_on_submit() or not isinstance(copy_id, int):
        return see_other("invoice_copy_links.invalid", public_id=public_id)
    removed = actions.stop_copies(db.session(), group, copy_id)
    session.pop(STOP_KEY, None)
    if removed is None:
        db.session().rollback()
        return see_other("invoice_copy_links.invalid", public_id=public_id)
    db.session().commit()
    return render_template(
        "portal/invoice_copy_links/done.html",
        group=group,
        heading="No more invoice copies",
        message=f"{removed} will no longer receive the invoices of {group.name}.",
    )


@links_bp.get("/invalid")
def invalid(public_id: str) -> str:
    group = _group(public_id)
    return render_template("portal/invoice_copy_links/invalid.html", group=group)
