"""Staff sign-in: password, TOTP and recovery codes, sessions, and what failures reveal."""

from __future__ import annotations

import datetime as dt
import re

import pyotp
import pytest
from sqlalchemy import select

from portal import create_app, crypto, staffauth
from portal.db import Base, utcnow
from portal.models import AuditEvent, StaffRole, StaffSession, StaffUser
from tests.admin.conftest import PASSWORD, make_staff, staff_sign_in
from tests.conftest import CSRF_RE, csrf_token


def post_code(client, code: str, path: str = "/admin/sign-in/code"):
    page = client.get(path)
    return client.post(path, data={"csrf_token": csrf_token(page.text), "code": code})


def enrol(app, client) -> tuple[str, list[str]]:
    """Enrol through the page: read the key shown, answer with a code, get recovery codes."""
    page = client.get("/admin/enrol")
    assert page.status_code == 200
    secret = re.search(r"<code>([A-Z2-7]{16,})</code>", page.text).group(1)
    assert client.get("/admin/enrol/qr.svg").mimetype == "image/svg+xml"
    response = client.post(
        "/admin/enrol",
        data={"csrf_token": csrf_token(page.text), "code": pyotp.TOTP(secret).now()},
    )
    assert response.status_code == 200, response.text
    codes = re.findall(r"<code>([0-9a-f]{8}-[0-9a-f]{8})</code>", response.text)
    return secret, codes


def test_password_sign_in_starts_a_server_side_session(app, db):
    user = make_staff(db, StaffRole.VIEWER)
    client = app.test_client()
    response = staff_sign_in(client, user.email)
    assert response.status_code == 303 and response.headers["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    [row] = db.scalars(select(StaffSession)).all()
    assert row.revoked_at is None and row.staff_user_id == user.id
    assert row.expires_at - row.created_at == dt.timedelta(hours=8)


@pytest.mark.parametrize("email", ["nobody@staff.example.com", "viewer@staff.example.com"])
def test_a_wrong_password_and_an_unknown_address_get_the_same_answer(app, db, email):
    make_staff(db, StaffRole.VIEWER)
    response = staff_sign_in(app.test_client(), email, "wrong password, surely")
    assert response.status_code == 400
    assert "do not match a staff account" in response.text
    assert CSRF_RE.sub("", response.text).count(email) == 1  # echoed in the field only
    assert db.scalars(select(StaffSession)).all() == []
    assert db.scalar(select(AuditEvent.outcome).where(AuditEvent.action == "staff.signin")) == (
        "failed"
    )


def staff_browser(app, ip: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    return client


class Ticking:
    """time.time for portal.throttle, moved only when told."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ticking(monkeypatch) -> Ticking:
    from portal import throttle

    clock = Ticking()
    monkeypatch.setattr(throttle.time, "time", clock)
    return clock


def test_failed_sign_ins_slow_that_address_from_that_client_only(app, db, ticking):
    app.config["STAFF_SIGNIN_FREE_FAILURES"] = 3
    user = make_staff(db, StaffRole.VIEWER)
    for _ in range(3):
        wrong = staff_sign_in(staff_browser(app, "198.51.100.9"), user.email, "wrong password")
        assert wrong.status_code == 400
    # From that client, now even the right password waits, with the same answer.
    response = staff_sign_in(staff_browser(app, "198.51.100.9"), user.email, PASSWORD)
    assert response.status_code == 400 and "do not match" in response.text
    # The same address from another client signs in at once.
    assert staff_sign_in(staff_browser(app, "192.0.2.44"), user.email).status_code == 303
    # And the first client, after the first delay, too: a delay, not a lock.
    ticking.now += app.config["STAFF_SIGNIN_FIRST_DELAY_SECONDS"]
    assert staff_sign_in(staff_browser(app, "198.51.100.9"), user.email).status_code == 303


def test_an_inactive_user_cannot_sign_in_and_deactivation_ends_the_session(app, db):
    user = make_staff(db, StaffRole.VIEWER)
    client = app.test_client()
    staff_sign_in(client, user.email)
    user.is_active = False
    db.commit()
    assert client.get("/admin/").headers["Location"].startswith("/admin/sign-in")
    assert staff_sign_in(app.test_client(), user.email).status_code == 400


def test_idle_and_absolute_staff_session_limits(app, db):
    user = make_staff(db, StaffRole.VIEWER)
    client = app.test_client()
    start = utcnow()
    app.extensions["portal.clock"] = lambda: start
    staff_sign_in(client, user.email)
    app.extensions["portal.clock"] = lambda: start + dt.timedelta(minutes=29)
    assert client.get("/admin/").status_code == 200
    app.extensions["portal.clock"] = lambda: start + dt.timedelta(minutes=59, seconds=1)
    assert client.get("/admin/").status_code == 302
    [row] = db.scalars(select(StaffSession)).all()
    db.refresh(row)
    assert row.revoked_reason == "idle"


def test_enrolment_then_totp_is_required_and_each_code_works_once(app, db):
    user = make_staff(db, StaffRole.VIEWER)
    client = app.test_client()
    staff_sign_in(client, user.email)
    secret, codes = enrol(app, client)
    assert len(codes) == 10
    db.refresh(user)
    assert user.has_totp and secret not in (user.totp_secret or "")
    with app.app_context():
        assert crypto.unseal(staffauth.TOTP_PURPOSE, user.totp_secret) == secret

    # The step used at enrolment is spent; the next 30-second step gives a fresh code.
    later = utcnow() + dt.timedelta(seconds=30)
    app.extensions["portal.clock"] = lambda: later
    second = app.test_client()
    response = staff_sign_in(second, user.email)
    assert response.headers["Location"] == "/admin/sign-in/code"
    assert second.get("/admin/").status_code == 302  # not signed in yet
    code = pyotp.TOTP(secret).at(later)
    assert post_code(second, code).status_code == 303
    assert second.get("/admin/").status_code == 200

    third = app.test_client()
    staff_sign_in(third, user.email)
    replay = post_code(third, code)
    assert replay.status_code == 400 and "not right" in replay.text


def test_a_recovery_code_signs_in_once(app, db):
    user = make_staff(db, StaffRole.ACCOUNT_MANAGER)
    client = app.test_client()
    staff_sign_in(client, user.email)
    _secret, codes = enrol(app, client)
    first = app.test_client()
    staff_sign_in(first, user.email)
    assert post_code(first, codes[0]).status_code == 303
    again = app.test_client()
    staff_sign_in(again, user.email)
    assert post_code(again, codes[0]).status_code == 400
    db.refresh(user)
    assert len(user.recovery_code_hashes.split()) == 9
    assert codes[1] not in user.recovery_code_hashes


def test_admins_must_enrol_outside_local_development(tmp_path):
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
            "SECRET_KEY": "p" * 40,
            "PORTAL_BASE_URL": "https://billing.example.com",
        }
    )
    with app.app_context():
        from portal import db as portal_db

        Base.metadata.create_all(portal_db.engine())
        session = portal_db.session()
        admin = StaffUser(email="admin@staff.example.com", role=StaffRole.ADMIN)
        admin.set_password(PASSWORD)
        session.add(admin)
        session.commit()
    client = app.test_client()
    https = {"base_url": "https://billing.example.com"}
    page = client.get("/admin/sign-in", **https)
    response = client.post(
        "/admin/sign-in",
        data={"csrf_token": csrf_token(page.text), "email": admin.email, "password": PASSWORD},
        headers={"Referer": "https://billing.example.com/admin/sign-in"},
        **https,
    )
    assert response.headers["Location"] == "/admin/enrol"
    assert client.get("/admin/", **https).status_code == 302  # no session until enrolled
    with app.app_context():
        from portal import db as portal_db

        assert portal_db.session().scalars(select(StaffSession)).all() == []
        portal_db.engine().dispose()


def test_sign_out_ends_the_staff_session(app, db):
    user = make_staff(db, StaffRole.VIEWER)
    client = app.test_client()
    staff_sign_in(client, user.email)
    home = client.get("/admin/")
    response = client.post("/admin/sign-out", data={"csrf_token": csrf_token(home.text)})
    assert response.status_code == 303
    assert client.get("/admin/").status_code == 302
    [row] = db.scalars(select(StaffSession)).all()
    db.refresh(row)
    assert row.revoked_reason == "signed_out"


@pytest.mark.parametrize("target", ["https://evil.example", "//evil.example", "/p/x/overview"])
def test_next_stays_inside_admin(app, db, target):
    user = make_staff(db, StaffRole.VIEWER)
    client = app.test_client()
    page = client.get(f"/admin/sign-in?next={target}")
    response = client.post(
        "/admin/sign-in",
        data={
            "csrf_token": csrf_token(page.text),
            "email": user.email,
            "password": PASSWORD,
            "next": target,
        },
    )
    assert response.headers["Location"] == "/admin/"


def test_the_enrolment_qr_code_is_a_standalone_svg_image(app, db):
    user = make_staff(db, StaffRole.VIEWER)
    client = app.test_client()
    staff_sign_in(client, user.email)
    page = client.get("/admin/enrol")
    assert "Sign out" in page.text  # signed-in staff keep their navigation
    svg = client.get("/admin/enrol/qr.svg")
    assert svg.mimetype == "image/svg+xml"
    assert b'xmlns="http://www.w3.org/2000/svg"' in svg.data
