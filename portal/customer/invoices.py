"""Invoices: the filtered, paginated list, CSV export, detail and PDF."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Response, abort, current_app, render_template, request
from werkzeug.datastructures import MultiDict

from portal import bank, billing, db, downloads, paging
from portal.clock import today
from portal.config import settings
from portal.customer import disputes  # its routes join the blueprint too
from portal.customer.forms import DisputeReplyForm, InvoiceFilterForm
from portal.customer.viewer import Viewer, bp, portal_page
from portal.models import DisplayStatus, Invoice


def _filters() -> tuple[InvoiceFilterForm, billing.InvoiceFilter | None]:
    """The filter form from the query string, and the filter if it is valid."""
    args = request.args
    form = InvoiceFilterForm(
        formdata=MultiDict(
            {
                "status": args.get("status", ""),
                "issued_from": args.get("from", ""),
                "issued_to": args.get("to", ""),
                "number": args.get("number", ""),
            }
        )
    )
    if not form.validate():
        return form, None
    return form, billing.InvoiceFilter(
        status=DisplayStatus(form.status.data) if form.status.data else None,
        issued_from=form.issued_from.data,
        issued_to=form.issued_to.data,
        number=(form.number.data or "").strip() or None,
    )


@bp.get("/invoices")
@portal_page
def invoices(viewer: Viewer) -> tuple[str, int]:
    group = viewer.bill_group
    form, flt = _filters()
    if flt is None:
        page = paging.Page[Invoice]([], 0, 1, billing.PER_PAGE)
        status = 400
    else:
        page = billing.invoice_page(
            db.session(), group, flt, today(), paging.page_number(request.args.get("page"))
        )
        status = 200
    return render_template(
        "portal/invoices.html",
        group=group,
        form=form,
        page=page,
        today=today(),
        query=(flt or billing.InvoiceFilter()).query_args(),
    ), status


@bp.get("/invoices.csv")
@portal_page
def invoices_csv(viewer: Viewer) -> Response:
    _form, flt = _filters()
    if flt is None:
        abort(400)
    # The body is streamed after the request's app context (and its session) is gone:
    # it reads through a session of its own, closed when the stream ends or is dropped.
    # (On the request's session it would reopen a transaction that nothing ever closes.)
    new_session = current_app.extensions["portal.db"]
    group, day = viewer.bill_group, today()

    def rows() -> Iterator[str]:
        with new_session() as session:
            yield from billing.invoices_csv(session, group, flt, day)

    response = Response(rows(), mimetype="text/csv")
    response.headers["Content-Disposition"] = downloads.attachment("invoices.csv")
    return response


def _invoice_or_404(viewer: Viewer, invoice_id: int) -> Invoice:
    """One of the viewer's bill group's invoices; another group's is as absent as none."""
    found = billing.find_invoice(db.session(), viewer.bill_group, invoice_id)
    if found is None:
        abort(404)
    return found


@bp.get("/invoices/<int:invoice_id>")
@portal_page
def invoice(viewer: Viewer, invoice_id: int) -> str:
    return invoice_page(viewer, _invoice_or_404(viewer, invoice_id))


def invoice_page(viewer: Viewer, found: Invoice, reply_form: DisputeReplyForm | None = None) -> str:
    """The invoice with its questions and disputes (a refused reply: its form again)."""
    return render_template(
        "portal/invoice.html",
        group=viewer.bill_group,
        invoice=found,
        today=today(),
        transfer=bank.transfer_for(found),
        **disputes.thread_context(viewer, found, reply_form),
    )


@bp.get("/invoices/<int:invoice_id>.pdf")
@portal_page
def invoice_pdf_download(viewer: Viewer, invoice_id: int) -> Response:
    found = _invoice_or_404(viewer, invoice_id)
    return downloads.invoice_pdf_response(found, today(), settings().LOCALE)
