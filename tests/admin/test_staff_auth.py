"""Staff sign-in: password, TOTP and recovery codes, sessions, and what failures reveal."""

from __future__ import annotations

import datetime as dt
import re

import pyotp
import pytest
from sqlalchemy import select

from portal import crypto, staffauth
from portal.config import settings_of
from portal.models import AuditEvent, StaffRole, StaffSession, StaffUser
from tests.admin.conftest import PASSWORD, make_staff, staff_sign_in
from tests.clock import Clock
from tests.conftest import CSRF_RE, csrf_token, production_app
from tests.portal.signin_helpers import race
from tests.settings import change_settings


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


def test_failed_sign_ins_slow_that_address_from_that_client_only(app, db):
    clock = Clock().install(app)
    change_settings(app, STAFF_SIGNIN_FREE_FAILURES=3)
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
    clock.advance(seconds=settings_of(app).STAFF_SIGNIN_FIRST_DELAY_SECONDS)
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
    clock = Clock().install(app)
    staff_sign_in(client, user.email)
    clock.advance(minutes=29)
    assert client.get("/admin/").status_code == 200
    clock.advance(minutes=30, seconds=1)  # 59:01 after signing in, 30:01 idle
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
    later = Clock().install(app).advance(seconds=30)
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
    app = production_app(tmp_path)
    with app.app_context():
        from portal import db as portal_db

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
    response = staff_sign_in(client, user.email, next=target)
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


# --- growing delays, never a lock-out (issue 14) ---------------------------------------


@pytest.fixture
def staff_app(counted_app):
    """The app with its tries counted on memory:// or on Redis (tests.conftest)."""
    return counted_app


def test_ten_wrong_passwords_from_strangers_do_not_lock_the_staff_member_out(staff_app, db):
    # On main, 10 wrong passwords for an address, from anywhere, locked it for 15 minutes.
    user = make_staff(db, StaffRole.VIEWER)
    for i in range(10):
        stranger = staff_browser(staff_app, f"203.0.113.{i % 3 + 1}")
        assert staff_sign_in(stranger, user.email, "guess").status_code == 400
    for i in range(10):  # and a stranger's IPv6 /64 counts as one client
        stranger = staff_browser(staff_app, f"2001:db8:5:5::{i + 1}")
        assert staff_sign_in(stranger, user.email, "guess").status_code == 400
    assert staff_sign_in(staff_browser(staff_app, "192.0.2.44"), user.email).status_code == 303


def test_twenty_concurrent_wrong_passwords_check_only_the_free_tries(staff_app, db, monkeypatch):
    change_settings(staff_app, SECRET_ENDPOINT_LIMIT="1000 per minute")  # not the 429 here
    user = make_staff(db, StaffRole.VIEWER)
    checked = []
    real = staffauth.authenticate

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        checked.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(staffauth, "authenticate", counting)
    browsers = [staff_browser(staff_app, "198.51.100.9") for _ in range(20)]
    pages = [b.get("/admin/sign-in") for b in browsers]
    jobs = list(zip(browsers, pages, strict=True))

    responses = race(
        jobs,
        lambda job: job[0].post(
            "/admin/sign-in",
            data={"csrf_token": csrf_token(job[1].text), "email": user.email, "password": "x"},
        ),
    )
    assert [r.status_code for r in responses] == [400] * 20
    assert len(checked) == settings_of(staff_app).STAFF_SIGNIN_FREE_FAILURES
    # Another client is not slowed at all.
    assert staff_sign_in(staff_browser(staff_app, "192.0.2.44"), user.email).status_code == 303


def test_each_try_after_the_free_ones_waits_twice_as_long_up_to_the_cap(staff_app, db):
    clock = Clock().install(staff_app)
    change_settings(
        staff_app,
        STAFF_SIGNIN_FREE_FAILURES=2,
        STAFF_SIGNIN_FIRST_DELAY_SECONDS=10,
        STAFF_SIGNIN_MAX_DELAY_SECONDS=50,
    )
    user = make_staff(db, StaffRole.VIEWER)
    checked = []
    real = staffauth.authenticate

    def tried(password: str) -> bool:
        """Whether the password was checked at all (not just refused for waiting)."""
        before = len(checked)
        staff_sign_in(staff_browser(staff_app, "198.51.100.9"), user.email, password)
        return len(checked) > before

    import portal.staffauth

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        checked.append(1)
        return real(*args, **kwargs)

    portal.staffauth.authenticate = counting  # restored below
    try:
        assert tried("wrong") and tried("wrong")  # the free tries
        for delay in (10, 20, 40, 50, 50):  # doubling, then capped
            clock.advance(seconds=delay - 0.5)
            assert not tried("wrong")
            clock.advance(seconds=0.5)
            assert tried("wrong")
    finally:
        portal.staffauth.authenticate = real
    clock.advance(seconds=50)
    assert staff_sign_in(staff_browser(staff_app, "198.51.100.9"), user.email).status_code == 303
    # A success starts afresh: two free tries again.
    assert (
        staff_sign_in(staff_browser(staff_app, "198.51.100.9"), user.email, "x").status_code == 400
    )


def test_wrong_second_factor_codes_slow_that_client_only(app, db):
    change_settings(app, STAFF_SIGNIN_FREE_FAILURES=3)
    user = make_staff(db, StaffRole.VIEWER)
    client = staff_browser(app, "192.0.2.44")
    staff_sign_in(client, user.email)
    secret, _codes = enrol(app, client)
    later = Clock().install(app).advance(seconds=30)

    attacker = staff_browser(app, "203.0.113.5")  # has the password, not the phone
    staff_sign_in(attacker, user.email)
    for _ in range(3):
        assert post_code(attacker, "000000").status_code == 400
    right = pyotp.TOTP(secret).at(later)
    assert post_code(attacker, right).status_code == 400  # waiting: not even checked

    owner = staff_browser(app, "192.0.2.44")
    assert staff_sign_in(owner, user.email).headers["Location"] == "/admin/sign-in/code"
    assert post_code(owner, right).status_code == 303
