"""The staff second factor cannot be skipped, replaced without proof, or spent twice.

The outside review's bypass: with a password alone, skip the code page, open the
enrolment page, and enrol a second factor of one's own over the real one.
"""

from __future__ import annotations

import datetime as dt
import re
import threading

import pyotp
import pytest
from sqlalchemy import select

from portal import crypto, staffauth
from portal.models import AuditEvent, StaffRole, StaffSession, StaffUser
from tests.admin.conftest import make_staff, staff_sign_in
from tests.admin.test_staff_auth import enrol, post_code
from tests.clock import Clock
from tests.conftest import csrf_token, production_app, run_worker
from tests.settings import change_settings

SECRET_RE = re.compile(r"<code>([A-Z2-7]{16,})</code>")
CODES_RE = re.compile(r"<code>([0-9a-f]{8}-[0-9a-f]{8})</code>")


def enrolled(app, db, role=StaffRole.ADMIN, email=None) -> tuple[StaffUser, str, list[str]]:
    """A staff member with a second factor, and the seed and recovery codes they hold."""
    user = make_staff(db, role, email)
    client = app.test_client()
    staff_sign_in(client, user.email)
    secret, codes = enrol(app, client)
    db.refresh(user)
    return user, secret, codes


def later(app, seconds: int) -> dt.datetime:
    """Move the clock on, so the next TOTP step has not been spent."""
    return Clock().install(app).advance(seconds=seconds)


def actions(db, action: str) -> list[str]:
    db.expire_all()
    return list(
        db.scalars(
            select(AuditEvent.outcome).where(AuditEvent.action == action).order_by(AuditEvent.id)
        )
    )


def test_a_password_alone_cannot_reach_enrolment_for_a_user_with_a_second_factor(app, db):
    user, secret, _codes = enrolled(app, db)
    attacker = app.test_client()
    response = staff_sign_in(attacker, user.email)
    assert response.headers["Location"] == "/admin/sign-in/code"

    # Skipping the code page: no fresh seed is shown, none is kept in the session.
    page = attacker.get("/admin/enrol")
    assert page.status_code == 302 and page.headers["Location"].startswith("/admin/sign-in")
    assert not SECRET_RE.search(page.text)
    assert attacker.get("/admin/enrol/qr.svg").status_code == 404
    with attacker.session_transaction() as flask_session:
        assert "totp_enrol" not in flask_session

    # Enrolling a seed of one's own, with a valid code for it, signs nobody in.
    own = pyotp.random_base32()
    code_page = attacker.get("/admin/sign-in/code")
    posted = attacker.post(
        "/admin/enrol",
        data={"csrf_token": csrf_token(code_page.text), "code": pyotp.TOTP(own).now()},
    )
    assert posted.status_code == 302 and posted.headers["Location"].startswith("/admin/sign-in")
    assert attacker.get("/admin/staff").status_code == 302
    assert attacker.get("/admin/api-keys").status_code == 302
    db.refresh(user)
    with app.app_context():
        assert crypto.unseal(staffauth.TOTP_PURPOSE, user.totp_secret) == secret
    # Only the one session of the real enrolment exists.
    assert len(db.scalars(select(StaffSession)).all()) == 1


def test_a_pending_enrolment_keeps_its_seed_to_its_own_user(app, db):
    """Two password-only sign-ins in one browser: the second user never sees (or
    enrols) the seed offered to the first."""
    first = make_staff(db, StaffRole.VIEWER, "first@staff.example.com")
    second = make_staff(db, StaffRole.VIEWER, "second@staff.example.com")
    for user in (first, second):
        user.must_enrol = True
    db.commit()
    client = app.test_client()
    assert staff_sign_in(client, first.email).headers["Location"] == "/admin/enrol"
    seed_one = SECRET_RE.search(client.get("/admin/enrol").text).group(1)
    assert staff_sign_in(client, second.email).headers["Location"] == "/admin/enrol"
    seed_two = SECRET_RE.search(client.get("/admin/enrol").text).group(1)
    assert seed_one != seed_two


def test_moving_to_a_new_app_needs_a_code_of_the_current_one(app, db, smtp):
    user, secret, codes = enrolled(app, db, StaffRole.VIEWER)
    moment = later(app, 60)
    client, other = app.test_client(), app.test_client()
    for browser in (client, other):
        staff_sign_in(browser, user.email)
    assert post_code(client, pyotp.TOTP(secret).at(moment)).status_code == 303
    assert post_code(other, codes[0]).status_code == 303
    smtp.clear()

    page = client.get("/admin/enrol")
    assert page.status_code == 200 and 'name="current_code"' in page.text
    new_secret = SECRET_RE.search(page.text).group(1)
    new_code = pyotp.TOTP(new_secret).at(moment)

    # A stolen session alone: a right code for the new app, no proof of the old one.
    for proof in ("", "000000", codes[0]):  # codes[0] was spent signing in above
        refused = client.post(
            "/admin/enrol",
            data={"csrf_token": csrf_token(page.text), "code": new_code, "current_code": proof},
        )
        assert refused.status_code == 400, proof
        assert "current authenticator app" in refused.text
        assert f'value="{new_code}"' not in refused.text  # nothing typed is written back
    db.refresh(user)
    with app.app_context():
        assert crypto.unseal(staffauth.TOTP_PURPOSE, user.totp_secret) == secret
    assert actions(db, "staff.totp") == [
        "enrolled",
        "replace_refused",
        "replace_refused",
        "replace_refused",
    ]

    # With a recovery code as the proof, the new app replaces the old one.
    moved = client.post(
        "/admin/enrol",
        data={"csrf_token": csrf_token(page.text), "code": new_code, "current_code": codes[1]},
    )
    assert moved.status_code == 200, moved.text
    new_codes = CODES_RE.findall(moved.text)
    assert len(new_codes) == 10 and not set(new_codes) & set(codes)
    db.refresh(user)
    with app.app_context():
        assert crypto.unseal(staffauth.TOTP_PURPOSE, user.totp_secret) == new_secret
    assert actions(db, "staff.totp")[-1] == "replaced"
    # This browser stays signed in; the other session is ended.
    assert client.get("/admin/").status_code == 200
    assert other.get("/admin/").status_code == 302

    # The old app's codes and the old recovery codes no longer sign in.
    moment = later(app, 120)
    for old in (pyotp.TOTP(secret).at(moment), codes[2]):
        fresh = app.test_client()
        staff_sign_in(fresh, user.email)
        assert post_code(fresh, old).status_code == 400

    run_worker(app)
    [notice] = smtp.to(user.email)
    assert "new authenticator app" in notice["Subject"]
    text = notice.get_body(preferencelist=("plain",)).get_content()
    assert "If this was not you" in text and new_secret not in text


def test_a_current_totp_code_also_proves_it(app, db):
    user, secret, _codes = enrolled(app, db, StaffRole.VIEWER)
    moment = later(app, 60)
    client = app.test_client()
    staff_sign_in(client, user.email)
    assert post_code(client, pyotp.TOTP(secret).at(moment)).status_code == 303
    moment = later(app, 90)
    page = client.get("/admin/enrol")
    new_secret = SECRET_RE.search(page.text).group(1)
    moved = client.post(
        "/admin/enrol",
        data={
            "csrf_token": csrf_token(page.text),
            "code": pyotp.TOTP(new_secret).at(moment),
            "current_code": pyotp.TOTP(secret).at(moment),
        },
    )
    assert moved.status_code == 200 and len(CODES_RE.findall(moved.text)) == 10


def test_guessing_the_current_code_runs_out_of_tries(app, db):
    change_settings(app, STAFF_REAUTH_LIMIT_PER_USER="3 per 15 minutes")
    user, secret, codes = enrolled(app, db, StaffRole.VIEWER)
    moment = later(app, 60)
    client = app.test_client()
    staff_sign_in(client, user.email)
    post_code(client, pyotp.TOTP(secret).at(moment))
    page = client.get("/admin/enrol")
    new_code = pyotp.TOTP(SECRET_RE.search(page.text).group(1)).at(moment)
    data = {"csrf_token": csrf_token(page.text), "code": new_code}
    for guess in ("111111", "222222", "333333"):
        assert client.post("/admin/enrol", data={**data, "current_code": guess}).status_code == 400
    # Over budget even a right recovery code is refused, and is not spent.
    assert client.post("/admin/enrol", data={**data, "current_code": codes[0]}).status_code == 400
    db.refresh(user)
    assert len(user.recovery_code_hashes.split()) == 10


def test_an_admin_resets_a_lost_second_factor_and_it_must_be_set_up_again(app, db, smtp):
    viewer, secret, _codes = enrolled(app, db, StaffRole.VIEWER)
    admin = make_staff(db, StaffRole.ADMIN)
    viewer_browser = app.test_client()
    moment = later(app, 60)
    staff_sign_in(viewer_browser, viewer.email)
    post_code(viewer_browser, pyotp.TOTP(secret).at(moment))
    assert viewer_browser.get("/admin/").status_code == 200
    smtp.clear()

    admin_browser = app.test_client()
    assert staff_sign_in(admin_browser, admin.email).status_code == 303
    page = admin_browser.get(f"/admin/staff/{viewer.id}/edit")
    assert "Reset two-step sign-in" in page.text
    response = admin_browser.post(
        f"/admin/staff/{viewer.id}/second-factor/reset", data={"csrf_token": csrf_token(page.text)}
    )
    assert response.status_code == 303
    db.refresh(viewer)
    assert viewer.must_enrol and not viewer.has_totp and viewer.recovery_code_hashes is None
    assert viewer_browser.get("/admin/").status_code == 302  # their sessions ended
    [detail] = db.scalars(
        select(AuditEvent.detail).where(AuditEvent.outcome == "reset_by_admin")
    ).all()
    assert viewer.email in detail
    run_worker(app)
    [notice] = smtp.to(viewer.email)
    assert admin.email in notice.get_body(preferencelist=("plain",)).get_content()

    # A viewer (no second factor required by role) must now set one up to sign in.
    del app.extensions["portal.clock"]  # the wall clock again: enrol() answers with its code
    fresh = app.test_client()
    assert staff_sign_in(fresh, viewer.email).headers["Location"] == "/admin/enrol"
    assert fresh.get("/admin/").status_code == 302
    _new_secret, new_codes = enrol(app, fresh)
    assert len(new_codes) == 10 and fresh.get("/admin/").status_code == 200
    db.refresh(viewer)
    assert viewer.has_totp and not viewer.must_enrol


def test_an_admin_cannot_reset_their_own_second_factor(app, db):
    admin, _secret, _codes = enrolled(app, db, StaffRole.ADMIN)
    client = app.test_client()
    moment = later(app, 60)
    staff_sign_in(client, admin.email)
    post_code(client, pyotp.TOTP(_secret).at(moment))
    page = client.get(f"/admin/staff/{admin.id}/edit")
    assert "Reset two-step sign-in" not in page.text
    response = client.post(
        f"/admin/staff/{admin.id}/second-factor/reset", data={"csrf_token": csrf_token(page.text)}
    )
    assert response.status_code == 303
    db.refresh(admin)
    assert admin.has_totp and not admin.must_enrol


def test_twenty_concurrent_uses_of_one_recovery_code_sign_in_once(app, db):
    user, _secret, codes = enrolled(app, db, StaffRole.VIEWER)
    # The password is right twenty times.
    change_settings(app, SECRET_ENDPOINT_LIMIT="1000 per minute", STAFF_SIGNIN_FREE_FAILURES=100)
    browsers = []
    for _ in range(20):
        browser = app.test_client()
        staff_sign_in(browser, user.email)
        page = browser.get("/admin/sign-in/code")
        browsers.append((browser, csrf_token(page.text)))
    start = threading.Barrier(len(browsers))
    statuses: list[int] = []

    def spend(browser, token) -> None:
        start.wait()
        response = browser.post("/admin/sign-in/code", data={"csrf_token": token, "code": codes[0]})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=spend, args=pair) for pair in browsers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [303] + [400] * 19
    db.refresh(user)
    assert len(user.recovery_code_hashes.split()) == 9
    assert actions(db, "staff.recovery_code") == ["used"]


def test_two_different_recovery_codes_used_at_once_both_work(app, db):
    """The compare-and-swap on the list retries a swap lost to another code."""
    user, _secret, codes = enrolled(app, db, StaffRole.VIEWER)
    # The password is right twenty times.
    change_settings(app, SECRET_ENDPOINT_LIMIT="1000 per minute", STAFF_SIGNIN_FREE_FAILURES=100)
    browsers = []
    for code in codes[:6]:
        browser = app.test_client()
        staff_sign_in(browser, user.email)
        browsers.append((browser, csrf_token(browser.get("/admin/sign-in/code").text), code))
    start = threading.Barrier(len(browsers))
    statuses: list[int] = []

    def spend(browser, token, code) -> None:
        start.wait()
        statuses.append(
            browser.post(
                "/admin/sign-in/code", data={"csrf_token": token, "code": code}
            ).status_code
        )

    threads = [threading.Thread(target=spend, args=triple) for triple in browsers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [303] * 6
    db.refresh(user)
    assert len(user.recovery_code_hashes.split()) == 4


@pytest.mark.parametrize("reset", [False, True])
def test_demo_refuses_outside_local_development(tmp_path, reset):
    from portal import db as portal_db

    app = production_app(tmp_path)
    runner = app.test_cli_runner()
    args = ["demo", "--reset"] if reset else ["demo"]
    refused = runner.invoke(args=args)
    assert refused.exit_code == 2 and "--i-know-this-is-production" in refused.output
    with app.app_context():
        assert portal_db.session().scalars(select(StaffUser)).all() == []
    allowed = runner.invoke(args=[*args, "--i-know-this-is-production"])
    assert allowed.exit_code == 0, allowed.output
    with app.app_context():
        assert len(portal_db.session().scalars(select(StaffUser)).all()) == 1
        portal_db.engine().dispose()


def test_every_demo_run_prints_a_new_random_staff_password(runner, db):
    found = []
    for _ in range(2):
        output = runner.invoke(args=["demo"]).output
        found.append(re.search(r"Staff sign-in: \S+\s+\S+ / (\S+)", output).group(1))
    assert found[0] != found[1] and len(found[1]) >= 16
    db.expire_all()
    staff = db.scalar(select(StaffUser))
    assert staff.check_password(found[1]) and not staff.check_password(found[0])


def test_a_refused_staff_code_is_not_written_back(app, db):
    user, _secret, _codes = enrolled(app, db, StaffRole.VIEWER)
    client = app.test_client()
    staff_sign_in(client, user.email)
    refused = post_code(client, "123456")
    assert refused.status_code == 400
    assert 'value="123456"' not in refused.text and 'name="code"' in refused.text
