"""The overview and subscriptions pages."""

from __future__ import annotations

from portal import billing, db
from portal.clock import today
from portal.customer.viewer import Viewer, bp, portal_page, render_page


@bp.get("/overview")
@portal_page
def overview(viewer: Viewer) -> str:
    figures = billing.summary(db.session(), viewer.bill_group, today())
    return render_page("portal/overview.html", figures=figures, today=today())


@bp.get("/subscriptions")
@portal_page
def subscriptions(viewer: Viewer) -> str:
    subscriptions = billing.subscriptions(db.session(), viewer.bill_group)
    return render_page("portal/subscriptions.html", subscriptions=subscriptions)
