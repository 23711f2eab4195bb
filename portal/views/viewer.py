"""Who is looking at a bill group's portal, and the blueprint every portal page joins.

A page is written once, as a function of a `Viewer`. Today the viewer is the signed-in
customer; the staff preview will register the same blueprint under /admin and hand the
same views a read-only viewer, so the pages are identical by construction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, abort, g, redirect, request, url_for

from portal import audit, db, sessions
from portal.forms import ButtonForm
from portal.models import BillGroup, PaymentMethod
from portal.views.signin import available_bill_group, signed_in_to

bp = Blueprint("customer", __name__, url_prefix="/p/<public_id>")


@dataclass(frozen=True)
class Viewer:
    bill_group: BillGroup
    email: str
    preview: bool = False

    @property
    def can_write(self) -> bool:
        return not self.preview


def current_viewer() -> Viewer:
    viewer: Viewer = g.viewer
    return viewer


def portal_page(view: Callable[..., Any]) -> Callable[..., Any]:
    """Resolve the portal link and the viewer, then call view(viewer, **kwargs).

    Without a session for this very bill group the visitor is sent to its sign-in page,
    with this page as `next`. A read-only viewer may not POST.
    """

    @wraps(view)
    def wrapper(public_id: str, **kwargs: Any) -> Any:
        group = available_bill_group(public_id)
        if not signed_in_to(group):
            return redirect(url_for("signin.start", public_id=public_id, next=request.path))
        customer = sessions.current_customer()
        assert customer is not None  # signed_in_to checked it
        viewer = Viewer(bill_group=group, email=customer.email)
        if request.method not in ("GET", "HEAD") and not viewer.can_write:
            abort(403)
        g.viewer = viewer
        return view(viewer, **kwargs)

    return wrapper


def portal_url(endpoint: str, **values: Any) -> str:
    """A URL to another portal page for the same viewer (customer or preview)."""
    blueprint = request.blueprint or bp.name
    return url_for(f"{blueprint}.{endpoint}", public_id=g.viewer.bill_group.public_id, **values)


def record_change(
    viewer: Viewer, action: str, before: dict[str, Any], after: dict[str, Any]
) -> bool:
    """Audit what changed, old -> new, in the caller's transaction; False if nothing did."""
    changed = {
        key: [before.get(key), value] for key, value in after.items() if before.get(key) != value
    }
    if not changed:
        return False
    audit.record(
        db.session(),
        action,
        "changed",
        actor_type="customer",
        actor=viewer.email,
        bill_group_id=viewer.bill_group.id,
        detail=json.dumps(changed, default=str, ensure_ascii=False),
    )
    return True


def payment_method_label(method: PaymentMethod) -> str:
    name = (method.brand or method.type.label).title() if method.brand else method.type.label
    return f"{name} ending {method.last4}"


def init_app(app: Flask) -> None:
    """Template helpers every portal page uses."""
    app.jinja_env.globals.update(portal_url=portal_url, sign_out_form=ButtonForm)
    app.jinja_env.filters["payment_method_label"] = payment_method_label
