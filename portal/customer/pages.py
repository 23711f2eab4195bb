"""The overview page (subscriptions: portal.customer.subscriptions)."""

from __future__ import annotations

from portal import billing, db
from portal.actions.autopay import expiry_warning
from portal.clock import today
from portal.customer.forms import AutopayForm
from portal.customer.viewer import Viewer, bp, portal_page, render_page


@bp.get("/overview")
@portal_page
def overview(viewer: Viewer) -> str:
    group = viewer.bill_group
    return render_page(
        "portal/overview.html",
        figures=billing.summary(db.session(), group, today()),
        today=today(),
        autopay_form=AutopayForm(),
        autopay_warning=expiry_warning(group, today()) if group.auto_pay else None,
    )
