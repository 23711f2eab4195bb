"""Questions and disputes on the customer's side: the form that raises one on an invoice,
the reply on its thread, and the download of a file in it. The thread itself is shown
on the invoice page (`thread_context`, read by portal.customer.invoices).

Only a viewer who may manage billing (may_manage_billing) writes: anyone else sees the
form disabled, and a forged POST is a 403 with an audit row. The staff preview sees every
page read-only, and `portal_page` refuses its POSTs. Files are served only to this bill
group's viewers (customers and the preview), as attachments of the type their content
was found to be (portal.attachments), never rendered by the browser.
"""

from __future__ import annotations

from typing import Any

from flask import Response, abort, flash, redirect, request
from werkzeug.wrappers import Response as BaseResponse
from wtforms import SelectChoice

from portal import attachments, audit, billing, bodies, db, downloads
from portal import disputes as rules
from portal.actions import ActionError, Actor, Conflict, NotFound
from portal.actions.disputes import Upload, raise_dispute, reply
from portal.customer.forms import DisputeForm, DisputeReplyForm
from portal.customer.viewer import (
    Viewer,
    bp,
    may_manage_billing,
    portal_page,
    portal_url,
    render_page,
)
from portal.models import Dispute, DisputeAttachment, DisputeMessage, Invoice

View = str | tuple[str, int] | BaseResponse

# A body may carry the file and the message; beyond this it is a 413 before any view.
BODY_LIMIT = attachments.MAX_BYTES + 64 * 1024
TOO_LARGE = (
    f"Files can be at most {attachments.size_text(attachments.MAX_BYTES)}. "
    "Go back and attach a smaller file, or none."
)


def _body_limit() -> int:
    return BODY_LIMIT


def thread_context(
    viewer: Viewer, invoice: Invoice, reply_form: DisputeReplyForm | None = None
) -> dict[str, Any]:
    """What the invoice page shows of its questions and disputes."""
    threads = rules.of_invoice(db.session(), invoice)
    return {
        "threads": threads,
        "open_thread": next((t for t in threads if t.state.value == "open"), None),
        "reply_form": reply_form or DisputeReplyForm(),
        "may_manage": may_manage_billing(viewer),
        "dispute_reasons": rules.REASONS,
        "badge": rules.badge,
    }


def _invoice_page(viewer: Viewer, invoice: Invoice, reply_form: DisputeReplyForm) -> str:
    # The invoice page is its module's; imported here, where it is needed, since that
    # module reads thread_context from this one.
    from portal.customer.invoices import invoice_page

    return invoice_page(viewer, invoice, reply_form=reply_form)


def _invoice(viewer: Viewer, invoice_id: int) -> Invoice:
    found = billing.find_invoice(db.session(), viewer.bill_group, invoice_id)
    if found is None:
        abort(404)  # another bill group's invoice is one that does not exist here
    return found


def _upload() -> Upload | None:
    """The file part of the form, if a file was chosen (a browser sends an empty part
    without a name when none was)."""
    part = request.files.get("attachment")
    if part is None or not part.filename:
        return None
    data = part.stream.read(attachments.MAX_BYTES + 1)
    return Upload(part.filename, data)


def _refuse_reader(viewer: Viewer, what: str, target: int) -> None:
    """A POST from a viewer who may not manage billing: audited, then 403."""
    session = db.session()
    audit.record(
        session,
        "dispute",
        "forbidden",
        actor_type="customer",
        actor=viewer.email,
        bill_group_id=viewer.bill_group.id,
        detail=f"{what} {target}: may not manage billing",
    )
    session.commit()
    abort(403)


def _form(
    viewer: Viewer, invoice: Invoice, form: DisputeForm, error: ActionError | None = None
) -> View:
    form.reason.choices = [
        SelectChoice("", "Choose a reason"),
        *(SelectChoice(code, label) for code, label in rules.REASONS.items()),
    ]
    if error is not None and error.field and hasattr(form, error.field):
        getattr(form, error.field).errors = [error.message]
    if form.kind.data not in ("question", "dispute"):
        form.kind.data = "question"
    page = render_page(
        "portal/dispute_form.html",
        invoice=invoice,
        form=form,
        may_manage=may_manage_billing(viewer),
        limit=attachments.size_text(attachments.MAX_BYTES),
        problem=None if error is None or error.field else error.message,
    )
    return (page, error.status if error.status != 422 else 400) if error is not None else page


@bp.get("/invoices/<int:invoice_id>/question")
@portal_page
def dispute_form(viewer: Viewer, invoice_id: int) -> View:
    """The form: ask a question, or dispute the invoice, with an optional file."""
    invoice = _invoice(viewer, invoice_id)
    if rules.open_on(db.session(), invoice) is not None:
        flash(
            "A question or dispute is already open on this invoice: add to that conversation below."
        )
        return redirect(portal_url("invoice", invoice_id=invoice.id, _anchor="thread"), code=303)
    form = DisputeForm(formdata=None, kind=request.args.get("kind", "question"))
    return _form(viewer, invoice, form)


@bp.post("/invoices/<int:invoice_id>/question")
@bodies.larger_body(_body_limit, TOO_LARGE)
@portal_page
def dispute_raise(viewer: Viewer, invoice_id: int) -> View:
    """Raise it: one open per invoice, so twenty submits at once make one."""
    session = db.session()
    if not may_manage_billing(viewer):
        _refuse_reader(viewer, "invoice", invoice_id)
    form = DisputeForm()
    if not form.validate_on_submit() and form.csrf_token.errors:
        abort(400)  # no CSRF token: the page that sent this was not ours
    invoice = _invoice(viewer, invoice_id)
    try:
        raise_dispute(
            session,
            Actor.customer(viewer.email),
            viewer.bill_group,
            invoice.id,
            kind=form.kind.data or "",
            reason=form.reason.data or None,
            message=form.message.data,
            upload=_upload(),
        )
    except NotFound:
        session.rollback()
        abort(404)
    except Conflict as exc:
        session.rollback()
        flash(exc.message)
        return redirect(portal_url("invoice", invoice_id=invoice.id, _anchor="thread"), code=303)
    except ActionError as exc:
        session.rollback()
        return _form(viewer, invoice, form, exc)
    session.commit()
    flash("Sent. The billing team will answer by email; the conversation is on this page.")
    return redirect(portal_url("invoice", invoice_id=invoice.id, _anchor="thread"), code=303)


@bp.post("/invoices/<int:invoice_id>/question/<int:dispute_id>/reply")
@bodies.larger_body(_body_limit, TOO_LARGE)
@portal_page
def dispute_reply(viewer: Viewer, invoice_id: int, dispute_id: int) -> View:
    """Write again while it is open; a refused reply is the invoice page with the message."""
    session = db.session()
    if not may_manage_billing(viewer):
        _refuse_reader(viewer, "dispute", dispute_id)
    form = DisputeReplyForm()
    if not form.validate_on_submit() and form.csrf_token.errors:
        abort(400)
    invoice = _invoice(viewer, invoice_id)
    dispute = session.get(Dispute, dispute_id)
    if dispute is None or dispute.invoice_id != invoice.id:
        abort(404)
    try:
        reply(
            session,
            Actor.customer(viewer.email),
            viewer.bill_group,
            dispute.id,
            message=form.message.data,
            upload=_upload(),
        )
    except NotFound:
        session.rollback()
        abort(404)
    except Conflict as exc:
        session.rollback()
        flash(exc.message)
        return redirect(portal_url("invoice", invoice_id=invoice.id, _anchor="thread"), code=303)
    except ActionError as exc:
        session.rollback()
        if exc.field and hasattr(form, exc.field):
            getattr(form, exc.field).errors = [exc.message]
        return _invoice_page(viewer, _invoice(viewer, invoice_id), reply_form=form), 400
    session.commit()
    flash("Reply sent.")
    return redirect(portal_url("invoice", invoice_id=invoice.id, _anchor="thread"), code=303)


@bp.get("/question-files/<int:attachment_id>")
@portal_page
def dispute_file(viewer: Viewer, attachment_id: int) -> Response:
    """A file of one of this bill group's threads; anyone else's is a 404."""
    found = db.session().get(DisputeAttachment, attachment_id)
    if found is None:
        abort(404)
    message: DisputeMessage = found.message
    if message.dispute.bill_group_id != viewer.bill_group.id:
        abort(404)
    return downloads.stored_file_response(found.filename, found.content_type, found.data)
