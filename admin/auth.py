"""Staff sign-in: email and password, then the TOTP code (or enrolment), then a new
server-side session. One answer for every failure, so nothing tells whether an
address is a staff member."""

from __future__ import annotations

import io
import time

import segno
from flask import Response, abort, flash, g, redirect, render_template, request, session, url_for
from flask_login import login_user, logout_user
from werkzeug.wrappers import Response as BaseResponse

from admin.forms import CodeForm, EnrolForm, SignInForm
from admin.guard import bp, current_staff, public
from portal import crypto, db, staffauth, throttle
from portal.access import AccessError, canonical_email
from portal.actions import ActionError
from portal.actions import staff as staff_actions
from portal.forms import ButtonForm, status_of
from portal.models import StaffUser

PENDING_SECONDS = 300
WRONG = "That email address and password do not match a staff account."


def _safe_next(raw: str | None) -> str:
    """A path inside /admin, else the staff home: no other site, and nothing that
    could split the Location header (control characters)."""
    if (
        raw
        and len(raw) <= 500
        and raw.startswith("/admin")
        and "//" not in raw
        and "\\" not in raw
        and raw.isprintable()
        and not any(ch.isspace() for ch in raw)
    ):
        return raw
    return url_for("admin.home")


def _key(raw_email: str) -> str:
    try:
        return canonical_email(raw_email)
    except AccessError:
        return "invalid"


def _backoff_key(email: str) -> str:
    """Staff sign-in tries are counted per (address, client), never per address alone."""
    return f"{email}|{throttle.client_key()}"


@bp.route("/sign-in", methods=["GET", "POST"])
@throttle.secret_limit
@public
def sign_in() -> str | tuple[str, int] | BaseResponse:
    if current_staff() is not None:
        return redirect(url_for("admin.home"))
    form = SignInForm(
        data={"next": request.args.get("next", "")} if request.method == "GET" else None
    )
    if form.validate_on_submit():
        key = _key(form.email.data or "")
        user = None
        # Tries are counted per address and client, with growing delays: a stranger
        # elsewhere can slow only their own tries, never lock the staff member out.
        if throttle.try_backoff("staff-signin", _backoff_key(key)):
            user = staffauth.authenticate(
                db.session(), form.email.data or "", form.password.data or ""
            )
        signed: staff_actions.StaffSignedIn | None = None
        if user is not None:
            try:
                signed = staff_actions.complete_sign_in(db.session(), user, "password")
            except staff_actions.SecondStepRequired:
                return _pending_second_step(user, _safe_next(form.next.data))
            except ActionError:
                pass  # the account changed meanwhile: the same answer as a wrong password
        if signed is None:
            staff_actions.record_refusal(db.session(), key, "failed")
            db.session().commit()
            form.password.errors = [WRONG]
        else:
            throttle.forgive("staff-signin", _backoff_key(key))
            return _signed_in(signed, form.next.data)
    status = status_of(form)
    return render_template("admin/sign_in.html", form=form), status


# A password-only sign-in is pending: it may reach the one second step it was given
# (the code page for a user with a second factor, enrolment for a user without one),
# for five minutes, and nothing else.
CODE, ENROL = "code", "enrol"


def _pending_second_step(user: StaffUser, next_url: str) -> BaseResponse:
    step = CODE if user.has_totp else ENROL
    session.pop("totp_enrol", None)
    session["staff_pending"] = {
        "id": user.id,
        "at": int(time.time()),
        "next": next_url,
        "step": step,
    }
    return redirect(url_for("admin.second_factor" if step == CODE else "admin.enrol"))


def _pending_user(step: str) -> StaffUser | None:
    """The user of a pending sign-in at this step, checked against the user as they are
    now: a second factor set up meanwhile turns an enrolment into a code page."""
    pending = session.get("staff_pending")
    if not isinstance(pending, dict) or time.time() - pending.get("at", 0) > PENDING_SECONDS:
        return None
    if pending.get("step") != step:
        return None
    user = db.session().get(StaffUser, pending.get("id"))
    if user is None or not user.is_active or user.has_totp != (step == CODE):
        return None
    return user


@bp.route("/sign-in/code", methods=["GET", "POST"])
@throttle.secret_limit
@public
def second_factor() -> str | tuple[str, int] | BaseResponse:
    user = _pending_user(CODE)
    if user is None:
        return redirect(url_for("admin.sign_in"))
    form = CodeForm()
    if form.validate_on_submit():
        database = db.session()
        if throttle.try_backoff("staff-signin", _backoff_key(user.email)):
            try:
                signed = staff_actions.sign_in_with_code(database, user, form.code.data or "")
            except ActionError:
                pass  # one answer for every refusal, below
            else:
                throttle.forgive("staff-signin", _backoff_key(user.email))
                return _signed_in(signed, session["staff_pending"].get("next"))
        database.rollback()
        staff_actions.record_refusal(database, user.email, "wrong_code")
        database.commit()
        form.code.errors = [staff_actions.WRONG_CODE]
    status = 400 if form.code.errors else 200
    return render_template("admin/second_factor.html", form=form), status


@bp.route("/enrol", methods=["GET", "POST"])
@throttle.secret_limit
@public
def enrol() -> str | tuple[str, int] | BaseResponse:
    """Set up the authenticator app: while signing in, for a user who has no second
    factor (required for admins and after an admin's reset), or once signed in. A user
    who has one replaces it only with a fresh proof of it in the same request, so neither
    a password alone nor a stolen session becomes a second factor of its own."""
    staff = current_staff()
    user = staff.user if staff else _pending_user(ENROL)
    if user is None:
        return redirect(url_for("admin.sign_in"))
    g.staff = staff  # signed-in staff keep their navigation and sign-out
    replacing = user.has_totp
    secret = _enrol_secret(user)
    form = EnrolForm()
    if not replacing:  # a first app is not a "new" one
        form.code.label.text = "Code from your authenticator app"
    if form.validate_on_submit():
        database = db.session()
        try:
            codes = staff_actions.enrol(
                database,
                user,
                secret,
                form.code.data or "",
                current_code=form.current_code.data or "",
                signed_in=staff.row if staff else None,
            )
            signed = None if staff else staff_actions.complete_sign_in(database, user, "enrolment")
        except staff_actions.ReplaceRefused as exc:
            database.rollback()
            staff_actions.record_replace_refused(database, user)
            database.commit()
            form.current_code.errors = [exc.message]
        except ActionError as exc:
            form[exc.field or "code"].errors = [exc.message]
        else:
            session.pop("totp_enrol", None)
            if signed is None:
                database.commit()
                next_url = url_for("admin.home")
            else:
                throttle.forgive("staff-signin", _backoff_key(user.email))
                next_url = _signed_in(signed, session["staff_pending"].get("next")).location
            return render_template("admin/recovery_codes.html", codes=codes, next_url=next_url)
    status = status_of(form)
    return render_template(
        "admin/enrol.html", form=form, secret=secret, replacing=replacing
    ), status


def _enrol_secret(user: StaffUser) -> str:
    """The seed being set up, kept sealed in the session and bound to this user."""
    sealed = session.get("totp_enrol")
    if not isinstance(sealed, dict) or sealed.get("id") != user.id:
        sealed = {
            "id": user.id,
            "seed": crypto.seal(staffauth.TOTP_PURPOSE, staffauth.new_totp_secret()),
        }
        session["totp_enrol"] = sealed
    return crypto.unseal(staffauth.TOTP_PURPOSE, sealed["seed"])


@bp.get("/enrol/qr.svg")
@public
def enrol_qr() -> Response:
    staff = current_staff()
    user = staff.user if staff else _pending_user(ENROL)
    sealed = session.get("totp_enrol")
    if user is None or not isinstance(sealed, dict) or sealed.get("id") != user.id:
        abort(404)
    uri = staffauth.provisioning_uri(user, crypto.unseal(staffauth.TOTP_PURPOSE, sealed["seed"]))
    # A standalone image needs the SVG namespace, which svg_inline() leaves out.
    svg = io.BytesIO()
    segno.make(uri, error="m").save(
        svg, kind="svg", scale=5, title="Scan with your authenticator app"
    )
    response = Response(svg.getvalue(), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/sign-out")
@public
def sign_out() -> BaseResponse:
    staff = current_staff()
    if ButtonForm().validate_on_submit() and staff is not None:
        staffauth.end(db.session(), staff.row, "signed_out")
        db.session().commit()
    logout_user()
    session.clear()
    flash("You have signed out.")
    return redirect(url_for("admin.sign_in"), code=303)


def _signed_in(signed: staff_actions.StaffSignedIn, next_url: str | None) -> BaseResponse:
    """Commit the new session and hand the browser its cookie: nothing from before
    sign-in (the pending sign-in, an enrolment seed) survives."""
    db.session().commit()
    logout_user()
    session.clear()
    login_user(staffauth.Staff(signed.sid, signed.session), remember=False)
    return redirect(_safe_next(next_url), code=303)
