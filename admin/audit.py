"""The audit trail, for staff: one bill group's events (anyone with "read") and everyone's
(admins: "audit_all"). Filter by action family, actor and date; page through 50 at a
time; export the filtered events as CSV.

Read-only on purpose: the trail is append-only, so there is nothing here to edit or
delete (and the database's triggers refuse UPDATE and DELETE on audit_events anyway).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from flask import Response, abort, current_app, render_template, request
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from admin.forms import AuditFilterForm
from admin.guard import NAV, bp, staff_required
from admin.lookup import get_or_404
from portal import csvexport, db, downloads, paging
from portal.models import AuditEvent, BillGroup

PER_PAGE = 50
CSV_COLUMNS = [
    "Time (UTC)",
    "Actor type",
    "Actor",
    "Action",
    "Outcome",
    "Bill group id",
    "Bill group",
    "IP",
    "Detail",
]

NAV.append(("admin.audit", "Audit trail", "audit_all"))


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None  # a family prefix such as "signin."
    actor: str | None = None  # a case-insensitive substring of the actor
    date_from: dt.date | None = None  # inclusive, UTC days
    date_to: dt.date | None = None

    def query_args(self) -> dict[str, str]:
        """The filter as query-string arguments, for page and CSV links."""
        args = {
            "action": self.action or "",
            "actor": self.actor or "",
            "date_from": self.date_from.isoformat() if self.date_from else "",
            "date_to": self.date_to.isoformat() if self.date_to else "",
        }
        return {key: value for key, value in args.items() if value}

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.action:
            found.append(AuditEvent.action.startswith(self.action, autoescape=True))
        if self.actor:
            actor = func.lower(AuditEvent.actor)
            found.append(actor.contains(self.actor.lower(), autoescape=True))
        if self.date_from:
            found.append(AuditEvent.at >= _midnight(self.date_from))
        if self.date_to and self.date_to < dt.date.max:  # 9999-12-31 has no next day
            found.append(AuditEvent.at < _midnight(self.date_to + dt.timedelta(days=1)))
        return found


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


def _filters() -> tuple[AuditFilterForm, AuditFilter | None]:
    """The filter form from the query string, and the filter if it is valid."""
    form = AuditFilterForm(formdata=request.args)
    if not form.validate():
        return form, None
    return form, AuditFilter(
        action=form.action.data or None,
        actor=form.actor.data or None,
        date_from=form.date_from.data,
        date_to=form.date_to.data,
    )


def _where(group_id: int | None, flt: AuditFilter) -> list[ColumnElement[bool]]:
    scope = [AuditEvent.bill_group_id == group_id] if group_id is not None else []
    return [*scope, *flt.conditions()]


def _events(group_id: int | None, flt: AuditFilter) -> Select[AuditEvent, str | None]:
    """Newest first. Ids are assigned in commit order, so they are the order things
    happened in even when clocks disagree; the bill group's name comes in the same query."""
    return (
        select(AuditEvent, BillGroup.name)
        .outerjoin(BillGroup, BillGroup.id == AuditEvent.bill_group_id)
        .where(*_where(group_id, flt))
        .order_by(AuditEvent.id.desc())
    )


# Each event with its bill group's name.
EventPage = paging.Page[tuple[AuditEvent, str | None]]


def _page(group_id: int | None, flt: AuditFilter, wanted: int) -> EventPage:
    """One page: two queries (count, rows) whatever the page size or number."""
    database = db.session()
    total = database.scalar(select(func.count(AuditEvent.id)).where(*_where(group_id, flt))) or 0
    number = paging.clamp(wanted, total, PER_PAGE)
    rows = database.execute(_events(group_id, flt).limit(PER_PAGE).offset((number - 1) * PER_PAGE))
    return paging.Page([(event, name) for event, name in rows], total, number, PER_PAGE)


def _csv(database: Session, group_id: int | None, flt: AuditFilter) -> Iterator[str]:
    def rows() -> Iterator[list[object]]:
        # A generator, so the query runs only when the body is read, and its (server-side,
        # on PostgreSQL) cursor is closed even when the download is dropped half-way.
        query = _events(group_id, flt).execution_options(yield_per=500)
        with database.execute(query) as result:
            for event, name in result:
                yield [
                    event.at.isoformat(timespec="seconds"),
                    event.actor_type,
                    event.actor,
                    event.action,
                    event.outcome,
                    event.bill_group_id or "",
                    name,
                    event.ip,
                    event.detail,
                ]

    return csvexport.stream(CSV_COLUMNS, rows())


def _render(group: BillGroup | None) -> tuple[str, int]:
    form, flt = _filters()
    if flt is None:
        page, status = EventPage([], 0, 1, PER_PAGE), 400
    else:
        wanted = paging.page_number(request.args.get("page"))
        page, status = _page(group.id if group is not None else None, flt, wanted), 200
    scope = {"bill_group_id": group.id} if group is not None else {}
    return render_template(
        "admin/audit.html",
        group=group,
        form=form,
        page=page,
        endpoint="admin.bill_group_audit" if group is not None else "admin.audit",
        scope=scope,
        # The page's own arguments and the filter's, for page and CSV links.
        filtered=scope | (flt or AuditFilter()).query_args(),
    ), status


def _download(group: BillGroup | None, filename: str) -> Response:
    _form, flt = _filters()
    if flt is None:
        abort(400)
    # The body is streamed after the request's context is gone, so it reads through a
    # session of its own, closed when the stream ends or is dropped (as invoices.csv does).
    new_session = current_app.extensions["portal.db"]
    group_id, checked = (group.id if group is not None else None), flt

    def body() -> Iterator[str]:
        with new_session() as database:
            yield from _csv(database, group_id, checked)

    response = Response(body(), mimetype="text/csv")
    response.headers["Content-Disposition"] = downloads.attachment(filename)
    return response


@bp.get("/bill-groups/<int:bill_group_id>/audit")
@staff_required("read")
def bill_group_audit(bill_group_id: int) -> tuple[str, int]:
    return _render(get_or_404(BillGroup, bill_group_id))


@bp.get("/bill-groups/<int:bill_group_id>/audit.csv")
@staff_required("read")
def bill_group_audit_csv(bill_group_id: int) -> Response:
    group = get_or_404(BillGroup, bill_group_id)
    return _download(group, f"audit-bill-group-{group.id}.csv")


@bp.get("/audit")
@staff_required("audit_all")
def audit() -> tuple[str, int]:
    return _render(None)


@bp.get("/audit.csv")
@staff_required("audit_all")
def audit_csv() -> Response:
    return _download(None, "audit.csv")
