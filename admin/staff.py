"""Staff users, managed by admins: list, create, change role, deactivate."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from flask import abort, flash, redirect, render_template, url_for
from sqlalchemy import func, select, update
from werkzeug.wrappers import Response as BaseResponse

from admin.forms import StaffUserForm
from admin.guard import NAV, bp, current_staff, staff_required
from portal import audit, clock, db
from portal.access import AccessError, canonical_email
from portal.actions import ActionError
from portal.actions import staff as staff_actions
from portal.forms import ButtonForm
from portal.models import StaffRole, StaffSession, StaffUser

NAV.append(("admin.staff_users", "Staff", "manage_staff"))


@bp.get("/staff")
@staff_required("manage_staff")
def staff_users() -> str:
    users = db.session().scalars(select(StaffUser).order_by(StaffUser.email)).all()
    return render_template("admin/staff_users.html", users=users)


@bp.route("/staff/new", methods=["GET", "POST"])
@staff_required("manage_staff")
def new_staff_user() -> str | tuple[str, int] | BaseResponse:
    form = StaffUserForm()
    if form.validate_on_submit():
        session = db.session()
        try:
            email = canonical_email(form.email.data or "")
        except AccessError as exc:
            form.email.errors = [exc.message]
        else:
            exists = session.scalar(select(func.count()).where(StaffUser.email == email))
            if exists:
                form.email.errors = [f"{email} already has a staff account."]
            else:
                user = StaffUser(
                    email=email,
                    name=(form.name.data or "").strip() or None,
                    role=StaffRole(form.role.data),
                    is_active=bool(form.is_active.data),
                )
                try:
                    user.set_password(form.password.data or "")
                except ValueError as exc:
                    form.password.errors = [str(exc)]
                else:
                    session.add(user)
                    _audit("staff.create", email, {"role": [None, user.role.value]})
                    session.commit()
                    flash(f"{email} can now sign in as {user.role.value.replace('_', ' ')}.")
                    return redirect(url_for("admin.staff_users"), code=303)
    status = 400 if any(field.errors for field in form) else 200
    return render_template("admin/staff_user_form.html", form=form, user=None), status


@bp.route("/staff/<int:staff_id>/edit", methods=["GET", "POST"])
@staff_required("manage_staff")
def edit_staff_user(staff_id: int) -> str | tuple[str, int] | BaseResponse:
    session = db.session()
    user = session.get(StaffUser, staff_id)
    if user is None:
        abort(404)
    form = StaffUserForm(obj=user, role=user.role.value)
    if form.validate_on_submit():
        role, active = StaffRole(form.role.data), bool(form.is_active.data)
        me = current_staff()
        if me is not None and me.user.id == user.id and (role != user.role or not active):
            form.role.errors = [
                "You cannot change your own role or deactivate yourself; ask another admin."
            ]
        else:
            before = {"role": user.role.value, "is_active": user.is_active}
            user.role, user.is_active = role, active
            user.name = (form.name.data or "").strip() or None
            if form.password.data:
                try:
                    user.set_password(form.password.data)
                except ValueError as exc:
                    form.password.errors = [str(exc)]
            if not form.password.errors:
                after = {"role": role.value, "is_active": active}
                changes = {k: [before[k], v] for k, v in after.items() if before[k] != v}
                if form.password.data:
                    changes["password"] = ["(set)", "(reset)"]
                if not active or form.password.data or "role" in changes:
                    # A changed role, password or deactivation starts from a new sign-in.
                    session.execute(
                        update(StaffSession)
                        .where(
                            StaffSession.staff_user_id == user.id, StaffSession.revoked_at.is_(None)
                        )
                        .values(revoked_at=clock.now(), revoked_reason="changed_by_admin")
                    )
                _audit("staff.update", user.email, changes)
                session.commit()
                flash(f"{user.email} has been updated.")
                return redirect(url_for("admin.staff_users"), code=303)
    status = 400 if any(field.errors for field in form) else 200
    return render_template(
        "admin/staff_user_form.html", form=form, user=user, reset_form=ButtonForm()
    ), status


@bp.post("/staff/<int:staff_id>/second-factor/reset")
@staff_required("manage_staff")
def reset_second_factor(staff_id: int) -> BaseResponse:
    """For a staff member who lost their phone and recovery codes: their second factor
    is cleared, their sessions end, and they set up a new one at their next sign-in."""
    session = db.session()
    user = session.get(StaffUser, staff_id)
    if user is None:
        abort(404)
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


def _audit(action: str, email: str, changes: Mapping[str, Sequence[object]]) -> None:
    me = current_staff()
    audit.record(
        db.session(),
        action,
        "changed",
        actor_type="staff",
        actor=me.email if me else None,
        detail=json.dumps({"staff": email, "changes": changes}),
    )
