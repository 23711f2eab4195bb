"""The bill group's change history: every change to its billing details, contacts,
payment methods, automatic payment and invoice-copy recipients, whoever made it (the
customer, staff, the billing system, the portal), newest first. Read-only, so the staff
preview shows the same page."""

from __future__ import annotations

from flask import request

from portal import db, notices, paging
from portal.customer.viewer import Viewer, bp, portal_page, render_page


@bp.get("/billing-details/history")
@portal_page
def billing_details_history(viewer: Viewer) -> str:
    page = notices.history_page(
        db.session(), viewer.bill_group, paging.page_number(request.args.get("page"))
    )
    return render_page(
        "portal/history.html",
        page=page,
        rows=[
            {
                "at": change.at,
                "who": notices.who(change.actor_type, change.actor),
                "what": change.what,
                "fields": notices.history_rows(change),
            }
            for change in page.rows
        ],
    )
