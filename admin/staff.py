"""Staff users, managed by admins: list, create, change role, deactivate."""

from __future__ import annotations

from typing import TypedDict

from flask import abort, flash, redirect, render_template, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from admin.forms import StaffUserForm
from admin.guard import NAV, acting_staff, bp, current_staff, staff_required
from admin.lookup import get_or_404
from portal import db
from portal.actions import ActionError
from portal.actions import staff as staff_actions
from portal.forms import ButtonForm, status_of
from portal.models import StaffRole, StaffUser

NAV.append(("admin.staff_users", "Staff", "manage_staff"))


@bp.get("/staff")
@staff_required("manage_staff")
def staff_users() -> str:
    users = db.session().scalars(select(StaffUser).order_by(StaffUser.email)).all()
    return render_template("admin/staff_users.html", users=users)


class _Submitted(TypedDict):
    name: str | None
    role: StaffRole
    is_active: bool
    password: str


def _submitted(form: StaffUserForm) -> _Submitted:
    """What the form asks for, as the staff-account actions take it."""
    return {
        "name": (form.name.data or "").strip() or None,
        "role": StaffRole(form.role.data),
        "is_active": bool(form.is_active.data),
        "password": form.password.data or "",
    }


def _saved(message: str) -> BaseResponse:
    """After a write the action accepted: commit it, say so, and go back to the list."""
    db.session().commit()
    flash(message)
    return redirect(url_for("admin.staff_users"), code=303)


@bp.route("/staff/new", methods=["GET", "POST"])
@staff_required("manage_staff")
def new_staff_user() -> str | tuple[str, int] | BaseResponse:
    form = StaffUserForm()
    if form.validate_on_submit():
        session = db.session()
        try:
            user = staff_actions.create_staff_user(
                session,
                acting_staff(),
                email=form.email.data or "",
                **_submitted(form),
            )
        except ActionError as exc:
            form[exc.field or "email"].errors = [exc.message]
        else:
            return _saved(f"{user.email} can now sign in as {user.role.value.replace('_', ' ')}.")
    return render_template("admin/staff_user_form.html", form=form, user=None), status_of(form)


@bp.route("/staff/<int:staff_id>/edit", methods=["GET", "POST"])
@staff_required("manage_staff")
def edit_staff_user(staff_id: int) -> str | tuple[str, int] | BaseResponse:
    session = db.session()
    user = get_or_404(StaffUser, staff_id)
    form = StaffUserForm(obj=user, role=user.role.value)
    me = current_staff()
    if form.validate_on_submit() and me is not None:
        try:
            staff_actions.update_staff_user(
                session,
                acting_staff(),
                me.user,
                user,
                **_submitted(form),
            )
        except ActionError as exc:
            form[exc.field or "role"].errors = [exc.message]
        else:
            return _saved(f"{user.email} has been updated.")
    return render_template(
        "admin/staff_user_form.html", form=form, user=user, reset_form=ButtonForm()
    ), status_of(form)


@bp.post("/staff/<int:staff_id>/second-factor/reset")
@staff_required("manage_staff")
def reset_second_factor(staff_id: int) -> BaseResponse:
    """For a staff member who lost their phone and recovery codes: their second factor
    is cleared, their sessions end, and they set up a new one at their next sign-in."""
    session = db.session()
    user = get_or_404(StaffUser, staff_id)
    me = current_staff()
    if not ButtonForm().validate_on_submit():
        abort(400)
    if me is not None:
        try:
            staff_actions.reset_second_factor(session, me.user, user)
        except ActionError as exc:
            flash(exc.message)
        else:
            session.commit()
            flash(
                f"Two-step sign-in of {user.email} was reset; they set it up again at next sign-in."
            )
    return redirect(url_for("admin.edit_staff_user", staff_id=user.id), code=303)
