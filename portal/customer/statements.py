"""The statement of account: a page for a period chosen with a GET form, and the same
statement as PDF and CSV."""

from __future__ import annotations

import datetime as dt

from flask import Response, abort, render_template, request
from werkzeug.datastructures import MultiDict

from portal import db, statement, statement_pdf
from portal.clock import today
from portal.config import settings
from portal.customer.forms import StatementForm
from portal.customer.viewer import Viewer, bp, portal_page
from portal.downloads import attachment
from portal.forms import status_of

DEFAULT_DAYS = 90


def _period() -> tuple[StatementForm, tuple[dt.date, dt.date] | None]:
    """The form from ?from=&to= (the last DEFAULT_DAYS days when neither is given), and
    the period when it is valid."""
    args = request.args
    day = today()
    if "from" not in args and "to" not in args:
        values = {
            "date_from": (day - dt.timedelta(days=DEFAULT_DAYS)).isoformat(),
            "date_to": day.isoformat(),
        }
    else:
        values = {"date_from": args.get("from", ""), "date_to": args.get("to", "")}
    form = StatementForm(formdata=MultiDict(values))
    if not form.validate():
        return form, None
    assert form.date_from.data is not None and form.date_to.data is not None
    try:
        statement.check_period(form.date_from.data, form.date_to.data)
    except statement.PeriodError as exc:
        form.date_to.errors = [*form.date_to.errors, str(exc)]
        return form, None
    return form, (form.date_from.data, form.date_to.data)


def _query(period: tuple[dt.date, dt.date]) -> dict[str, str]:
    return {"from": period[0].isoformat(), "to": period[1].isoformat()}


@bp.get("/statement")
@portal_page
def statement_page(viewer: Viewer) -> tuple[str, int]:
    group = viewer.bill_group
    form, period = _period()
    found = None if period is None else statement.statement(db.session(), group, *period, today())
    return render_template(
        "portal/statement.html",
        group=group,
        form=form,
        statement=found,
        query=_query(period) if period else {},
        kinds=statement.KIND_LABELS,
        one_day=dt.timedelta(days=1),
    ), status_of(form)


@bp.get("/statement.csv")
@portal_page
def statement_csv(viewer: Viewer) -> Response:
    return _download(viewer, "csv")


@bp.get("/statement.pdf")
@portal_page
def statement_pdf_download(viewer: Viewer) -> Response:
    return _download(viewer, "pdf")


def _download(viewer: Viewer, extension: str) -> Response:
    """The statement of the asked period as a file: 400 for a period that is not one."""
    _form, period = _period()
    if period is None:
        abort(400)
    found = statement.statement(db.session(), viewer.bill_group, *period, today())
    if extension == "pdf":
        response = Response(statement_pdf.render(found, locale=settings().LOCALE))
        response.mimetype = "application/pdf"
    else:
        response = Response("".join(statement.csv_rows(found)), mimetype="text/csv")
    name = f"statement-{period[0].isoformat()}-{period[1].isoformat()}.{extension}"
    response.headers["Content-Disposition"] = attachment(name)
    return response
