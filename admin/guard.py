"""The admin blueprint and the one decorator every staff view uses."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, abort, g, redirect, request, url_for
from flask_login import current_user

from portal.actions import Actor
from portal.staffauth import Staff

bp = Blueprint("admin", __name__, url_prefix="/admin")

# Views that anyone may reach (signing in); every other /admin view names a permission.
PUBLIC = "public"

# Staff navigation, (endpoint, label, permission); each module adds its own entries.
NAV: list[tuple[str, str, str]] = []


def current_staff() -> Staff | None:
    user = current_user._get_current_object()
    return user if isinstance(user, Staff) else None


def acting_staff() -> Actor:
    """The staff member of this (staff_required) request, as the actor of a write and
    of its audit row."""
    return Actor.staff(g.staff.email)


def staff_required(permission: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Require a staff session whose role grants `permission`; 403 otherwise. Anyone
    else (no session, or a customer) is sent to the staff sign-in page."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            staff = current_staff()
            if staff is None:
                return redirect(url_for("admin.sign_in", next=request.full_path.rstrip("?")))
            if not staff.may(permission):
                abort(403)
            g.staff = staff
            return view(*args, **kwargs)

        wrapper.staff_permission = permission  # type: ignore[attr-defined]
        return wrapper

    return decorator


def public(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view as reachable without a staff session (the sign-in pages)."""
    view.staff_permission = PUBLIC  # type: ignore[attr-defined]
    return view
