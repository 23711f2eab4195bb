"""The staff sign-in and second-factor rules (portal.actions.staff), each called directly
and driven through the staff pages, the only face that triggers them: the same refusal,
and nothing written."""

from __future__ import annotations

import re

import pyotp
import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from portal.actions import Actor, Forbidden
from portal.actions import staff as staff_actions
from portal.models import AuditEvent, StaffRole, StaffSession, StaffUser
from tests.admin.conftest import make_staff, staff_sign_in
from tests.admin.test_accounts import submit
from tests.admin.test_staff_auth import post_code
from tests.clock import Clock
from tests.conftest import csrf_token

SECRET = re.compile(r"<code>([A-Z2-7]{16,})</code>")


def sessions(db, user: StaffUser) -> int:
    db.expire_all()
    return db.scalar(
        select(func.count(StaffSession.id)).where(StaffSession.staff_user_id == user.id)
    )


def audited(db, action: str) -> list[str]:
    db.expire_all()
    query = select(AuditEvent.outcome).where(AuditEvent.action == action).order_by(AuditEvent.id)
    return list(db.scalars(query))


def must_enrol(db) -> StaffUser:
    user = make_staff(db, StaffRole.VIEWER, "new@staff.example.com")
    user.must_enrol = True
    db.commit()
    return user


def with_app(app, db, clock: Clock) -> tuple[StaffUser, list[str]]:
    """A staff member enrolled through the pages (at the stopped clock of tests/actions),
    and their recovery codes."""
    user = must_enrol(db)
    client = app.test_client()
    staff_sign_in(client, user.email)
    page = client.get("/admin/enrol")
    secret = SECRET.search(page.text).group(1)
    response = client.post(
        "/admin/enrol",
        data={"csrf_token": csrf_token(page.text), "code": pyotp.TOTP(secret).at(clock())},
    )
    assert response.status_code == 200, response.text
    db.refresh(user)
    return user, re.findall(r"<code>([0-9a-f]{8}-[0-9a-f]{8})</code>", response.text)


# --- a password alone reaches only the second step ------------------------------------


def test_the_action_refuses_a_password_only_session(app, db):
    user = must_enrol(db)
    with app.test_request_context(), pytest.raises(staff_actions.SecondStepRequired):
        staff_actions.complete_sign_in(db, user, "password")
    db.rollback()
    assert sessions(db, user) == 0
    assert audited(db, "staff.signin") == []


def test_the_sign_in_page_sends_a_password_only_sign_in_to_its_second_step(app, db):
    user = must_enrol(db)
    response = staff_sign_in(app.test_client(), user.email)
    assert (response.status_code, response.headers["Location"]) == (302, "/admin/enrol")
    assert sessions(db, user) == 0
    assert audited(db, "staff.signin") == []


def test_enrolling_completes_the_sign_in_with_one_session(app, db, clock):
    user, _codes = with_app(app, db, clock)
    assert sessions(db, user) == 1
    assert audited(db, "staff.signin") == ["signed_in"]
    assert audited(db, "staff.totp") == ["enrolled"]


# --- moving to a new app needs a code of the current one ------------------------------


def test_the_action_refuses_a_new_app_without_the_current_one(app, db, clock):
    user, _codes = with_app(app, db, clock)
    seed = user.totp_secret
    new = pyotp.random_base32()
    moment = clock.advance(seconds=60)
    with app.test_request_context(), pytest.raises(staff_actions.ReplaceRefused) as refused:
        staff_actions.enrol(db, user, new, pyotp.TOTP(new).at(moment), current_code="000000")
    db.rollback()
    assert refused.value.field == "current_code"
    db.refresh(user)
    assert user.totp_secret == seed


def test_the_enrolment_page_refuses_a_new_app_without_the_current_one(app, db, clock):
    user, codes = with_app(app, db, clock)
    seed = user.totp_secret
    moment = clock.advance(seconds=60)
    client = app.test_client()
    staff_sign_in(client, user.email)
    assert post_code(client, codes[0]).status_code == 303
    new = SECRET.search(client.get("/admin/enrol").text).group(1)
    response = submit(
        client, "/admin/enrol", {"code": pyotp.TOTP(new).at(moment), "current_code": "000000"}
    )
    assert response.status_code == 400
    assert staff_actions.ReplaceRefused().message in response.text
    db.refresh(user)
    assert user.totp_secret == seed
    assert audited(db, "staff.totp") == ["enrolled", "replace_refused"]


# --- nobody resets their own second factor --------------------------------------------


def test_the_action_refuses_to_reset_ones_own_second_factor(app, db, clock):
    admin, _codes = with_app(app, db, clock)
    with app.test_request_context(), pytest.raises(Forbidden) as refused:
        staff_actions.reset_second_factor(db, admin, admin)
    db.rollback()
    assert "cannot reset your own" in refused.value.message
    db.refresh(admin)
    assert admin.has_totp and audited(db, "staff.totp") == ["enrolled"]


def signed_in_admin(db, staff_client) -> tuple[FlaskClient, StaffUser]:
    client = staff_client(StaffRole.ADMIN)
    return client, db.scalar(select(StaffUser).order_by(StaffUser.id.desc()).limit(1))


def test_the_staff_page_refuses_to_reset_ones_own_second_factor(app, db, staff_client):
    client, me = signed_in_admin(db, staff_client)
    page = client.get(f"/admin/staff/{me.id}/edit")
    response = client.post(
        f"/admin/staff/{me.id}/second-factor/reset",
        data={"csrf_token": csrf_token(page.text)},
        follow_redirects=True,
    )
    assert "You cannot reset your own two-step sign-in" in response.text
    db.refresh(me)
    assert not me.must_enrol
    assert audited(db, "staff.totp") == []


# --- staff accounts: no second account for an address, no change to one's own role ----

TAKEN = "new@staff.example.com already has a staff account."
OWN_ROLE = "You cannot change your own role or deactivate yourself; ask another admin."


def test_the_action_refuses_a_second_account_for_an_address(app, db):
    must_enrol(db)
    with app.test_request_context(), pytest.raises(staff_actions.Conflict) as refused:
        staff_actions.create_staff_user(
            db,
            Actor.staff("admin@staff.example.com"),
            email=" NEW@staff.example.com",
            name=None,
            role=StaffRole.ADMIN,
            is_active=True,
            password="a long enough password",
        )
    db.rollback()
    assert (refused.value.field, refused.value.message) == ("email", TAKEN)
    assert db.scalar(select(func.count(StaffUser.id))) == 1


def test_the_staff_page_refuses_a_second_account_for_an_address(app, db, staff_client):
    must_enrol(db)
    client = staff_client(StaffRole.ADMIN)
    response = submit(
        client,
        "/admin/staff/new",
        {"email": "NEW@staff.example.com", "role": "admin", "password": "a long enough password"},
    )
    assert response.status_code == 400 and TAKEN in response.text
    assert db.scalar(select(func.count(StaffUser.id))) == 2  # theirs and the admin's
    assert audited(db, "staff.create") == []


def test_the_action_refuses_to_change_ones_own_role(app, db):
    me = make_staff(db, StaffRole.ADMIN)
    with app.test_request_context(), pytest.raises(Forbidden) as refused:
        staff_actions.update_staff_user(
            db, Actor.staff(me.email), me, me, name=None, role=StaffRole.VIEWER, is_active=True
        )
    db.rollback()
    assert (refused.value.field, refused.value.message) == ("role", OWN_ROLE)
    db.refresh(me)
    assert me.role == StaffRole.ADMIN


def test_the_staff_page_refuses_to_change_ones_own_role(app, db, staff_client):
    client, me = signed_in_admin(db, staff_client)
    response = submit(
        client,
        f"/admin/staff/{me.id}/edit",
        {"email": me.email, "role": "viewer", "is_active": "y"},
    )
    assert response.status_code == 400 and OWN_ROLE in response.text
    db.refresh(me)
    assert me.role == StaffRole.ADMIN
    assert audited(db, "staff.update") == []
