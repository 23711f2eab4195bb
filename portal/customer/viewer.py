"""Who is looking at a bill group's portal, and the blueprint every portal page joins.

A page is written once, as a function of a `Viewer`. Under /p/<public id> the viewer is
the signed-in customer. The factory registers the same blueprint a second time, as
"preview" under /admin/preview/<public id>, where the viewer is a staff member looking
read-only from inside their own staff session: the pages are identical by construction.

Customer roles: the viewer carries the role of the access rule that admits the address
on this request. `may_manage_billing` is the one place that decides whether it may
change anything; `portal_page` applies it to every POST (403 and a `customer.forbidden`
audit row), so a new write view cannot forget it. The staff preview shows the pages as a
billing manager sees them, with every control disabled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from portal import audit, db, sessions, switcher
from portal.clock import today
from portal.customer.signin import available_bill_group
from portal.forms import ButtonForm
from portal.models import BillGroup, CustomerRole
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
    # The admitting rule's role, read on this request; a preview shows a billing manager's.
    role: CustomerRole
    preview: bool = False
    # Preview only: why customers cannot reach this portal today, if they cannot.
    unavailable_because: str | None = None
    # A session the seller's app made: its page, for the header's "Back to <seller>".
    return_url: str | None = None

    @property
    def can_write(self) -> bool:
        return not self.preview

    @property
    def sees_controls(self) -> bool:
        """Whether pages show the buttons and forms that change things: to billing
        managers, and to the preview (disabled there). A viewer sees none, and a line
        saying whom to ask instead."""
        return self.role is CustomerRole.BILLING_MANAGER


def may_manage_billing(viewer: Viewer) -> bool:
    """Whether this viewer may change billing: details, contacts, payment methods, paying,
    auto-pay, credits, subscription changes. A billing manager's rule, and never the
    staff preview. The one place that decides; `portal_page` asks it on every POST."""
    return viewer.role is CustomerRole.BILLING_MANAGER and not viewer.preview


def current_viewer() -> Viewer:
    viewer: Viewer = g.viewer
    return viewer


def render_page(template: str, **context: Any) -> str:
    """A portal page's template, given the bill group that every portal page shows."""
    return render_template(template, group=current_viewer().bill_group, **context)


# Flashed when a viewer opens a page that is only a form; the overview they land on says
# whom to ask (templates/portal/_page.html).
FORM_FOR_MANAGERS = "That page changes billing, which a billing manager at your company does."


def portal_page(
    view: Callable[..., Any] | None = None, *, viewers_may_post: bool = False, form: bool = False
) -> Any:
    """Resolve the portal link and the viewer, then call view(viewer, **kwargs).

    Customers: without a session for this very bill group the visitor is sent to its
    sign-in page, with this page as `next` (signed in to another bill group of the
    seller: to its switch page, portal.customer.switch). Preview: see `_preview_viewer`. A read-only
    viewer may not POST.

    Roles: any POST from someone who may not manage billing (may_manage_billing) is a 403
    with a `customer.forbidden` audit row, before the view runs, unless the view is
    marked `viewers_may_post=True` (for what any signed-in person may do for themselves).
    `form=True` marks a page that exists only to change something (a form, a review
    before paying): a viewer's GET is sent to the overview with FORM_FOR_MANAGERS.
    """
    if view is None:
        return lambda found: _portal_page(found, viewers_may_post=viewers_may_post, form=form)
    return _portal_page(view, viewers_may_post=viewers_may_post, form=form)


def _portal_page(
    view: Callable[..., Any], *, viewers_may_post: bool, form: bool
) -> Callable[..., Any]:
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
                role=customer.role,
                return_url=customer.row.return_url,
            )
        reading = request.method in ("GET", "HEAD")
        if not reading and not viewer.can_write:
            abort(403)
        if not reading and not viewers_may_post and not may_manage_billing(viewer):
            _forbidden(viewer)
        g.viewer = viewer
        if reading and form and not viewer.sees_controls:
            flash(FORM_FOR_MANAGERS)
            return redirect(portal_url("overview"), code=303)
        return view(viewer, **kwargs)

    # For the /admin role matrix, which sees these views under the preview prefix: they
    # need the "preview" permission, and anything but GET is refused to everyone.
    wrapper.staff_permission = PREVIEW_PERMISSION  # type: ignore[attr-defined]
    wrapper.preview_read_only = True  # type: ignore[attr-defined]
    # For the test that walks every portal POST as a viewer.
    wrapper.__dict__["viewers_may_post"] = viewers_may_post
    return wrapper


def _forbidden(viewer: Viewer) -> None:
    """A change by someone whose role does not allow it (a forged form: their pages show
    no such button): audited with the endpoint, nothing else written, 403."""
    session = db.session()
    audit.record(
        session,
        "customer.forbidden",
        viewer.role.value,
        actor_type="customer",
        actor=viewer.email,
        bill_group_id=viewer.bill_group.id,
        detail=f"{request.method} {request.endpoint}"[:500],
    )
    session.commit()
    abort(403)


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
        role=CustomerRole.BILLING_MANAGER,
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
