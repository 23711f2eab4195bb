"""Who is looking at a bill group's portal, and the blueprint every portal page joins.

A page is written once, as a function of a `Viewer`. Under /p/<public id> the viewer is
the signed-in customer. The factory registers the same blueprint a second time, as
"preview" under /admin/preview/<public id>, where the viewer is a staff member looking
read-only from inside their own staff session: the pages are identical by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, abort, g, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from portal import audit, db, sessions, switcher
from portal.clock import today
from portal.customer.signin import available_bill_group
from portal.forms import ButtonForm
from portal.models import BillGroup
from portal.payments import method_label
from portal.staffauth import Staff

bp = Blueprint("customer", __name__, url_prefix="/p/<public_id>")

# The name and prefix the factory registers `bp` under a second time, for staff.
PREVIEW = "preview"
PREVIEW_PREFIX = "/admin/preview/<public_id>"
PREVIEW_PERMISSION = "preview"


@dataclass(frozen=True)
class Viewer:
    bill_group: BillGroup
    # The customer's address; in a preview, the staff member's (shown, never used to act).
    email: str
    preview: bool = False
    # Preview only: why customers cannot reach this portal today, if they cannot.
    unavailable_because: str | None = None
    # A session the seller's app made: its page, for the header's "Back to <seller>".
    return_url: str | None = None

    @property
    def can_write(self) -> bool:
        return not self.preview


def may_manage_billing(viewer: Viewer) -> bool:
    """Whether this viewer may change billing (ask for a subscription change): today
    every signed-in customer, never the staff preview. Customer roles (viewer, billing
    manager) will decide it here, in this one place."""
    return not viewer.preview


def current_viewer() -> Viewer:
    viewer: Viewer = g.viewer
    return viewer


def render_page(template: str, **context: Any) -> str:
    """A portal page's template, given the bill group that every portal page shows."""
    return render_template(template, group=current_viewer().bill_group, **context)


def portal_page(view: Callable[..., Any]) -> Callable[..., Any]:
    """Resolve the portal link and the viewer, then call view(viewer, **kwargs).

    Customers: without a session for this very bill group the visitor is sent to its
    sign-in page, with this page as `next` (signed in to another bill group of the
    seller: to its switch page, portal.customer.switch). Preview: see `_preview_viewer`. A read-only
    viewer may not POST.
    """

    @wraps(view)
    def wrapper(public_id: str, **kwargs: Any) -> Any:
        if request.blueprint == PREVIEW:
            found = _preview_viewer(public_id)
            if isinstance(found, BaseResponse):
                return found
            viewer = found
        else:
            customer = sessions.current_customer()
            if customer is None or customer.bill_group.public_id != public_id:
                # The one 404 for a link that leads nowhere.
                group = available_bill_group(public_id)
                # Signed in to another bill group of the seller that admits the address:
                # one click to switch (portal.customer.switch); anyone else: sign-in.
                switchable = customer is not None and switcher.may_switch(
                    customer.bill_group, group, customer.email, today()
                )
                where = "switch.confirm" if switchable else "signin.start"
                return redirect(url_for(where, public_id=public_id, next=request.path))
            # Loading the session re-checked the address against this group's rules and
            # availability, with the group, its seller and rules in the same statement.
            viewer = Viewer(
                bill_group=customer.bill_group,
                email=customer.email,
                return_url=customer.row.return_url,
            )
        if request.method not in ("GET", "HEAD") and not viewer.can_write:
            abort(403)
        g.viewer = viewer
        return view(viewer, **kwargs)

    # For the /admin role matrix, which sees these views under the preview prefix: they
    # need the "preview" permission, and anything but GET is refused to everyone.
    wrapper.staff_permission = PREVIEW_PERMISSION  # type: ignore[attr-defined]
    wrapper.preview_read_only = True  # type: ignore[attr-defined]
    return wrapper


def _preview_viewer(public_id: str) -> Viewer | BaseResponse:
    """A staff member's read-only viewer of a bill group, inside their staff session.

    Anything but GET is refused first, whoever asks: a preview never changes anything.
    Then: no staff session → the staff sign-in page; no "preview" permission → 403;
    unknown public id → 404. A disabled portal or an inactive contract can be previewed
    (staff check a portal before they switch it on, or when a customer with an ended
    contract calls); the banner says why customers cannot get in. No customer session
    is created, read or touched; every page view is audited.
    """
    if request.method not in ("GET", "HEAD"):
        abort(403)
    user = current_user._get_current_object()
    if not isinstance(user, Staff):
        return redirect(url_for("admin.sign_in", next=request.full_path.rstrip("?")))
    if not user.may(PREVIEW_PERMISSION):
        abort(403)
    group = None
    if 10 <= len(public_id) <= 32:
        group = db.session().scalar(select(BillGroup).where(BillGroup.public_id == public_id))
    if group is None:
        abort(404)
    # One row per page view: the trail then says what staff looked at, not only that they
    # started looking (a PDF download included).
    prefix = PREVIEW_PREFIX.replace("<public_id>", public_id)
    page = request.full_path.rstrip("?").removeprefix(prefix)
    audit.record(
        db.session(),
        "preview.view",
        "viewed",
        actor_type="staff",
        actor=user.email,
        bill_group_id=group.id,
        detail=page[:500],
    )
    db.session().commit()
    g.staff = user
    return Viewer(
        bill_group=group,
        email=user.email,
        preview=True,
        unavailable_because=_why_unavailable(group),
    )


def _why_unavailable(group: BillGroup) -> str | None:
    if not group.portal_enabled:
        return "the portal is disabled"
    if not group.has_active_contract(today()):
        return "the contract is not active today"
    return None


def portal_url(endpoint: str, **values: Any) -> str:
    """A URL to another portal page for the same viewer (customer or preview)."""
    blueprint = request.blueprint or bp.name
    return url_for(f"{blueprint}.{endpoint}", public_id=g.viewer.bill_group.public_id, **values)


# How a page names a stored payment method (portal.payments.method_label, shared with
# the receipts and the use-case layer).
payment_method_label = method_label


def init_app(app: Flask) -> None:
    """Template helpers every portal page uses."""
    app.jinja_env.globals.update(portal_url=portal_url, sign_out_form=ButtonForm)
    app.jinja_env.filters["payment_method_label"] = payment_method_label
