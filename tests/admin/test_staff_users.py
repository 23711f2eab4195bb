"""Admins manage staff users in the UI."""

from __future__ import annotations

import json

from sqlalchemy import select

from portal.models import AuditEvent, StaffRole, StaffSession, StaffUser
from tests.admin.conftest import PASSWORD, make_staff, post_form, staff_sign_in


def signed_in(app, db, role=StaffRole.ADMIN, email=None):
    user = make_staff(db, role, email)
    client = app.test_client()
    assert staff_sign_in(client, user.email).status_code == 303
    return user, client


def test_an_admin_adds_a_staff_user_who_can_then_sign_in(app, db):
    _admin, client = signed_in(app, db)
    response = post_form(
        client,
        "/admin/staff/new",
        email="New.Person@Staff.Example.com",
        name="New Person",
        role="account_manager",
        password="a long first password",
        is_active="y",
    )
    assert response.status_code == 303
    user = db.scalar(select(StaffUser).where(StaffUser.email == "new.person@staff.example.com"))
    assert user.role == StaffRole.ACCOUNT_MANAGER and user.check_password("a long first password")
    assert "new.person@staff.example.com" in client.get("/admin/staff").text
    event = db.scalar(select(AuditEvent).where(AuditEvent.action == "staff.create"))
    assert event.actor == "admin@staff.example.com"
    assert json.loads(event.detail)["staff"] == "new.person@staff.example.com"
    assert staff_sign_in(app.test_client(), user.email, "a long first password").status_code == 303


def test_bad_input_is_refused_next_to_the_field_and_nothing_is_written(app, db):
    _admin, client = signed_in(app, db)
    for data, message in [
        ({"email": "not an email", "password": "x" * 20}, "cannot contain spaces"),
        ({"email": "admin@staff.example.com", "password": "x" * 20}, "already has a staff account"),
        ({"email": "short@staff.example.com", "password": "short"}, "at least 12"),
    ]:
        response = post_form(client, "/admin/staff/new", role="viewer", **data)
        assert response.status_code == 400 and message in response.text, message
    assert db.scalars(select(StaffUser.email)).all() == ["admin@staff.example.com"]


def test_changing_a_role_or_deactivating_ends_their_sessions(app, db):
    _admin, client = signed_in(app, db)
    other, other_client = signed_in(app, db, StaffRole.VIEWER, "viewer@staff.example.com")
    assert other_client.get("/admin/").status_code == 200
    response = post_form(
        client,
        f"/admin/staff/{other.id}/edit",
        email=other.email,
        role="viewer",
        name="",
        password="",
    )  # is_active unticked: deactivate
    assert response.status_code == 303
    db.refresh(other)
    assert other.is_active is False
    assert other_client.get("/admin/").status_code == 302
    rows = db.scalars(select(StaffSession).where(StaffSession.staff_user_id == other.id)).all()
    assert all(row.revoked_at is not None for row in rows)
    assert staff_sign_in(app.test_client(), other.email, PASSWORD).status_code == 400


def test_an_admin_cannot_demote_or_deactivate_themselves(app, db):
    admin, client = signed_in(app, db)
    response = post_form(
        client, f"/admin/staff/{admin.id}/edit", email=admin.email, role="viewer", is_active="y"
    )
    assert response.status_code == 400 and "cannot change your own role" in response.text
    db.refresh(admin)
    assert admin.role == StaffRole.ADMIN


def test_only_admins_manage_staff(app, db):
    _user, client = signed_in(app, db, StaffRole.ACCOUNT_MANAGER, "am@staff.example.com")
    assert client.get("/admin/staff").status_code == 403
    assert client.get("/admin/staff/new").status_code == 403
    assert "/admin/staff" not in client.get("/admin/").text
