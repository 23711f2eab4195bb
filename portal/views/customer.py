"""The customer's portal pages, for the signed-in bill group only."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, g, redirect, render_template, request, url_for
from flask_login import current_user

from portal import billing, db
from portal.clock import today
from portal.forms import ButtonForm
from portal.views.signin import available_bill_group, signed_in_to

bp = Blueprint("customer", __name__, url_prefix="/p/<public_id>")


def customer_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Resolve the portal link, and require a session for that very bill group; anyone
    else goes to its sign-in page, with this page as `next`."""

    @wraps(view)
    def wrapper(public_id: str, **kwargs: Any) -> Any:
        group = available_bill_group(public_id)
        if not signed_in_to(group):
            return redirect(url_for("signin.start", public_id=public_id, next=request.path))
        g.bill_group = group
        return view(group, **kwargs)

    return wrapper


@bp.get("/overview")
@customer_required
def overview(group: Any) -> str:
    figures = billing.summary(db.session(), group, today())
    return render_template(
        "portal/overview.html",
        group=group,
        figures=figures,
        today=today(),
        email=current_user.email,
        sign_out=ButtonForm(),
    )
