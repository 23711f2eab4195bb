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

from admin.forms import CodeForm, SignInForm
from admin.guard import bp, current_staff, public
from portal import audit, crypto, db, staffauth, throttle
from portal.access import AccessError, canonical_email
from portal.forms import ButtonForm
from portal.models import StaffUser

PENDING_SECONDS = 300
WRONG = "That email address and password do not match a staff account."


def _safe_next(raw: str | None) -> str:
    if raw and raw.startswith("/admin") and "//" not in raw and "\\" not in raw:
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
        if user is None:
            audit.record(db.session(), "staff.signin", "failed", actor_type="anonymous", actor=key)
            db.session().commit()
            form.password.errors = [WRONG]
        else:
            nxt = _safe_next(form.next.data)
            if staffauth.mfa_required(user):
                session["staff_pending"] = {"id": user.id, "at": int(time.time()), "next": nxt}
                return redirect(url_for("admin.second_factor" if user.has_totp else "admin.enrol"))
            throttle.forgive("staff-signin", _backoff_key(key))
            return _complete(user, nxt)
    status = 400 if any(field.errors for field in form) else 200
    return render_template("admin/sign_in.html", form=form), status


def _pending_user() -> StaffUser | None:
    pending = session.get("staff_pending")
    if not isinstance(pending, dict) or time.time() - pending.get("at", 0) > PENDING_SECONDS:
        return None
    return db.session().get(StaffUser, pending.get("id"))


@bp.route("/sign-in/code", methods=["GET", "POST"])
@throttle.secret_limit
@public
def second_factor() -> str | tuple[str, int] | BaseResponse:
    user = _pending_user()
    if user is None or not user.has_totp:
        return redirect(url_for("admin.sign_in"))
    form = CodeForm()
    if form.validate_on_submit():
        if throttle.try_backoff(
            "staff-signin", _backoff_key(user.email)
        ) and staffauth.verify_second_factor(db.session(), user, form.code.data or ""):
            throttle.forgive("staff-signin", _backoff_key(user.email))
            return _complete(user, session["staff_pending"].get("next") or "")
        db.session().rollback()
        audit.record(
            db.session(), "staff.signin", "wrong_code", actor_type="anonymous", actor=user.email
        )
        db.session().commit()
        form.code.errors = ["That code is not right. Codes change every 30 seconds."]
    status = 400 if form.code.errors else 200
    return render_template("admin/second_factor.html", form=form), status


@bp.route("/enrol", methods=["GET", "POST"])
@throttle.secret_limit
@public
def enrol() -> str | tuple[str, int] | BaseResponse:
    """Set up the authenticator app: while signing in (required), or once signed in."""
    staff = current_staff()
    user = staff.user if staff else _pending_user()
    if user is None:
        return redirect(url_for("admin.sign_in"))
    g.staff = staff  # signed-in staff keep their navigation and sign-out
    if "totp_enrol" not in session:
        session["totp_enrol"] = crypto.seal(staffauth.TOTP_PURPOSE, staffauth.new_totp_secret())
    secret = crypto.unseal(staffauth.TOTP_PURPOSE, session["totp_enrol"])
    form = CodeForm()
    if form.validate_on_submit():
        codes = staffauth.enrol(db.session(), user, secret, form.code.data or "")
        if codes is not None:
            session.pop("totp_enrol", None)
            if staff is None:
                response = _complete(user, session["staff_pending"].get("next") or "")
            else:
                db.session().commit()
                response = None
            return render_template(
                "admin/recovery_codes.html",
                codes=codes,
                next_url=response.location if response else url_for("admin.home"),
            )
        form.code.errors = ["That code is not right. Check the time on your phone and try again."]
    status = 400 if form.code.errors else 200
    return render_template("admin/enrol.html", form=form, secret=secret), status


@bp.get("/enrol/qr.svg")
@public
def enrol_qr() -> Response:
    sealed = session.get("totp_enrol")
    user = current_staff().user if current_staff() else _pending_user()
    if not sealed or user is None:
        abort(404)
    uri = staffauth.provisioning_uri(user, crypto.unseal(staffauth.TOTP_PURPOSE, sealed))
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


def _complete(user: StaffUser, next_url: str) -> BaseResponse:
    """A fresh session: nothing from before sign-in survives."""
    database = db.session()
    sid, row = staffauth.start_session(database, user)
    database.commit()
    logout_user()
    session.clear()
    login_user(staffauth.Staff(sid, row), remember=False)
    return redirect(_safe_next(next_url), code=303)
