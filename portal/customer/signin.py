"""The portal link and sign-in pages: /p/<public id>/...

GETs never change sign-in state; every POST carries a CSRF token. Pages answer the same
whether or not an address has access.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import login_user, logout_user
from sqlalchemy import bindparam, select
from sqlalchemy.orm import joinedload
from werkzeug.wrappers import Response as BaseResponse

from portal import clock, db, devices, sessions, signin, sso, switcher, throttle
from portal.access import AccessError, canonical_email
from portal.actions import signin as signin_actions
from portal.actions.signin import SignedIn, SignInRefused
from portal.clock import today
from portal.customer.forms import CodeForm, EmailForm
from portal.forms import ButtonForm
from portal.models import BillGroup, CustomerRole, CustomerSession, SignInChallenge, SsoMode

bp = Blueprint("signin", __name__, url_prefix="/p/<public_id>")

secret_limit = throttle.secret_limit


# Every page shows the seller's brand and sign-in checks the address against the rules:
# loaded with the group, in one statement built once.
_BY_PUBLIC_ID = (
    select(BillGroup)
    .where(BillGroup.public_id == bindparam("public_id"))
    .options(joinedload(BillGroup.entity), joinedload(BillGroup.access_rules))
)


def available_bill_group(public_id: str) -> BillGroup:
    """The bill group behind a portal link, or the one "not available" 404 for an unknown
    id, a disabled portal and an inactive contract alike."""
    group = None
    if 10 <= len(public_id) <= 32:
        found = db.session().scalars(_BY_PUBLIC_ID, {"public_id": public_id})
        group = found.unique().one_or_none()
    if group is None or not group.portal_available(today()):
        abort(Response(render_template("portal/unavailable.html"), 404))
    return group


def signed_in_to(group: BillGroup) -> bool:
    customer = sessions.current_customer()
    return customer is not None and customer.bill_group.id == group.id


def ensure_nonce() -> str:
    nonce = session.get("nonce")
    if not nonce:
        nonce = session["nonce"] = signin.new_nonce()
    return nonce


def see_other(endpoint: str, **values: Any) -> BaseResponse:
    return redirect(url_for(endpoint, **values), code=303)


@bp.get("")
@bp.get("/", endpoint="start_slash")
def start(public_id: str) -> str | BaseResponse:
    group = available_bill_group(public_id)
    if signed_in_to(group):
        return see_other("customer.overview", public_id=public_id)
    next_path = signin.safe_next(request.args.get("next"), public_id)
    customer = sessions.current_customer()
    if customer is not None and switcher.may_switch(
        customer.bill_group, group, customer.email, today()
    ):
        # Signed in to another bill group of this seller that admits the address: one
        # click instead of an email (anyone else gets the form, as before).
        return see_other("switch.confirm", public_id=public_id, next=next_path)
    ensure_nonce()
    form = EmailForm(data={"next": next_path or ""})
    return render_template("portal/signin/start.html", group=group, form=form)


@bp.post("/sign-in")
@secret_limit
def request_link(public_id: str) -> tuple[str, int] | str:
    group = available_bill_group(public_id)
    form = EmailForm()
    if not form.validate_on_submit():
        return render_template("portal/signin/start.html", group=group, form=form), 400
    try:
        email = canonical_email(form.email.data or "")
    except AccessError as exc:
        form.email.errors = [exc.message]
        return render_template("portal/signin/start.html", group=group, form=form), 400
    next_path = signin.safe_next(form.next.data, public_id)
    # The company sign-in of the address's domain, if staff set one up: a property of
    # the domain, the same for every address there, so showing it (or, when it is
    # required, showing only it) says nothing about the address that was typed.
    provider = sso.provider_for(group, email)
    if provider is not None and provider.mode is SsoMode.REQUIRED:
        return render_template(
            "portal/signin/sso_required.html", group=group, provider=provider, next=next_path
        )
    signin.request_link(db.session(), group, email, ensure_nonce(), next_path)
    return render_template(
        "portal/signin/check_email.html",
        group=group,
        email=email,
        form=CodeForm(),
        provider=provider,
        next=next_path,
    )


@bp.post("/code")
@secret_limit
def enter_code(public_id: str) -> tuple[str, int] | BaseResponse:
    group = available_bill_group(public_id)
    form = CodeForm()
    if form.validate_on_submit():
        challenge_id = signin.check_code(
            db.session(), group, session.get("nonce"), form.code.data or ""
        )
        if challenge_id is not None:
            return _complete(group, challenge_id)
        form.code.errors = ["That code is not right, has expired or has been used."]
    return render_template("portal/signin/check_email.html", group=group, form=form), 400


@bp.route("/verify/<token>", methods=["GET", "HEAD"])
@secret_limit
def verify(public_id: str, token: str) -> BaseResponse | tuple[str, int]:
    # Link checkers and scanners send HEAD: answer without touching anything.
    if request.method == "HEAD":
        return "", 200
    group = available_bill_group(public_id)
    opened = signin.open_link(db.session(), group, token, session.get("nonce"))
    # Whatever happens, the token leaves the address bar at once.
    if opened.state is signin.LinkState.SAME_BROWSER and opened.challenge:
        session["confirm"] = opened.challenge.id
        return see_other("signin.confirm", public_id=public_id)
    if opened.state is signin.LinkState.OTHER_BROWSER and opened.challenge:
        ensure_nonce()
        session["resend"] = opened.challenge.id
        return see_other("signin.other_browser", public_id=public_id)
    return see_other("signin.link_invalid", public_id=public_id)


@bp.get("/confirm")
def confirm(public_id: str) -> str | BaseResponse:
    group = available_bill_group(public_id)
    challenge = _session_challenge(group, "confirm")
    if challenge is None:
        return see_other("signin.link_invalid", public_id=public_id)
    return render_template(
        "portal/signin/confirm.html", group=group, email=challenge.email, form=ButtonForm()
    )


@bp.post("/confirm")
@secret_limit
def confirm_post(public_id: str) -> BaseResponse:
    group = available_bill_group(public_id)
    form = ButtonForm()
    challenge_id = session.get("confirm")
    if not form.validate_on_submit() or not isinstance(challenge_id, int):
        return see_other("signin.link_invalid", public_id=public_id)
    if not signin.spend(db.session(), challenge_id, group, session.get("nonce")):
        db.session().rollback()
        challenge = db.session().get(SignInChallenge, challenge_id)
        actor = challenge.email if challenge and challenge.bill_group_id == group.id else None
        return refuse(group, SignInRefused("link_not_usable", actor))
    return _complete(group, challenge_id)


@bp.get("/other-browser")
def other_browser(public_id: str) -> str:
    group = available_bill_group(public_id)
    can_resend = _session_challenge(group, "resend") is not None
    return render_template(
        "portal/signin/other_browser.html", group=group, form=ButtonForm(), can_resend=can_resend
    )


@bp.post("/resend")
@secret_limit
def resend(public_id: str) -> str | BaseResponse:
    group = available_bill_group(public_id)
    form = ButtonForm()
    challenge = _session_challenge(group, "resend")
    if not form.validate_on_submit() or challenge is None:
        return see_other("signin.link_invalid", public_id=public_id)
    session.pop("resend", None)
    # Code only: a scanner that pressed this button must not get a link it can follow.
    signin.request_link(
        db.session(), group, challenge.email, ensure_nonce(), challenge.next_path, code_only=True
    )
    return render_template(
        "portal/signin/check_email.html", group=group, email=challenge.email, form=CodeForm()
    )


@bp.get("/link-invalid")
def link_invalid(public_id: str) -> str:
    """The one page for a link that cannot be used; `?kind=session` for a portal session's
    (made by the seller's app: the way back is there, not a new email)."""
    group = available_bill_group(public_id)
    from_app = request.args.get("kind") == "session"
    return render_template("portal/signin/link_invalid.html", group=group, from_app=from_app)


@bp.post("/sign-out")
def sign_out(public_id: str) -> BaseResponse:
    group = available_bill_group(public_id)
    form = ButtonForm()
    if form.validate_on_submit():
        customer = sessions.current_customer()
        if customer is not None:
            sessions.revoke(db.session(), customer.row, "signed_out")
            db.session().commit()
        logout_user()
        session.clear()
    return redirect(url_for("signin.start", public_id=group.public_id, signed_out=1), code=303)


def _session_challenge(group: BillGroup, key: str) -> SignInChallenge | None:
    """The challenge this browser was sent to confirm or resend, if still usable."""
    challenge_id = session.get(key)
    if not isinstance(challenge_id, int):
        return None
    challenge = db.session().get(SignInChallenge, challenge_id)
    if (
        challenge is None
        or challenge.bill_group_id != group.id
        or challenge.spent_at is not None
        or challenge.retired_at is not None
        or challenge.expires_at <= clock.now()
    ):
        return None
    return challenge


def refuse(group: BillGroup, refused: SignInRefused, kind: str | None = None) -> BaseResponse:
    """Record the refusal (and keep the challenge spent), then the one neutral page."""
    signin_actions.record_refusal(db.session(), group, refused)
    db.session().commit()
    return see_other("signin.link_invalid", public_id=group.public_id, kind=kind)


def _complete(group: BillGroup, challenge_id: int) -> BaseResponse:
    """The challenge is spent (uncommitted): sign in with it."""
    return finish_sign_in(
        group,
        lambda replacing: signin_actions.complete_sign_in(
            db.session(), group, challenge_id, replacing=replacing
        ),
    )


def finish_sign_in(
    group: BillGroup,
    sign_in: Callable[[CustomerSession | None], SignedIn],
    kind: str | None = None,
) -> BaseResponse:
    """A secret is spent (uncommitted): `sign_in` (an action, given the browser's current
    session to end) signs in; this commits it, then gives the browser a fresh cookie
    session, remembers the device and redirects. Every way in ends here."""
    previous = sessions.current_customer()
    try:
        signed_in = sign_in(previous.row if previous else None)
    except SignInRefused as refused:
        return refuse(group, refused, kind)
    return signed_in_browser(group, signed_in)


def signed_in_browser(group: BillGroup, signed_in: SignedIn) -> BaseResponse:
    """Commit the new session, then give the browser a fresh cookie session, remember the
    device and redirect: the end of every way in (link, code, company sign-in, a portal
    session)."""
    db.session().commit()
    # A new session: nothing from before sign-in survives, apart from a new nonce.
    logout_user()
    session.clear()
    session["nonce"] = signin.new_nonce()
    # This request only sets the cookie and redirects; the next one loads the session and
    # reads the role from the rule that admits the address then. Until then: the least.
    customer = sessions.Customer(signed_in.sid, signed_in.session, CustomerRole.VIEWER)
    login_user(customer, remember=False)
    target = signed_in.next_path or url_for("customer.overview", public_id=group.public_id)
    response = redirect(target, code=303)
    devices.remember(response, signed_in.email)
    return response
