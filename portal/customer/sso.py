"""Company single sign-on for customers (portal.sso): /p/<public id>/sso/<provider> sends
the browser to the company's provider, and /sso/callback (the one redirect URI of the
portal) comes back from it.

Both are GETs, as OpenID Connect has them: the start is a link (a form posting to our
origin and redirected to the provider would be stopped by `form-action 'self'`), and it
only records an attempt; the callback signs in, but only the browser whose session holds
that attempt's `state`, nonce and PKCE verifier, once. Nothing is mailed, so no scanner
ever holds either URL.
"""

from __future__ import annotations

import logging

from flask import Blueprint, abort, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from portal import audit, db, sessions, signin, sso, throttle
from portal.actions import signin as signin_actions
from portal.actions.signin import SignInRefused
from portal.customer.signin import available_bill_group, signed_in_browser
from portal.models import BillGroup, SsoMode, SsoProvider

log = logging.getLogger(__name__)

bp = Blueprint("sso", __name__)


@bp.get("/p/<public_id>/sso/<int:provider_id>")
@throttle.secret_limit
def start(public_id: str, provider_id: int) -> BaseResponse | tuple[str, int]:
    group = available_bill_group(public_id)
    provider = sso.provider_of_group(db.session(), group, provider_id)
    if provider is None:
        abort(404)
    next_path = signin.safe_next(request.args.get("next"), public_id)
    try:
        url = sso.begin(db.session(), group, provider, next_path)
    except sso.ProviderUnavailable as exc:
        db.session().rollback()
        return _unavailable(group, provider, exc)
    db.session().commit()
    return redirect(url, code=303)


@bp.get(sso.CALLBACK_PATH)
@throttle.secret_limit
def callback() -> BaseResponse | tuple[str, int]:
    database = db.session()
    state = request.args.get("state", "")
    attempt = sso.spend_attempt(database, state)
    if attempt is None:
        # No such state, expired, or used already (a replay): nothing to sign in to.
        database.rollback()
        audit.record(database, "signin.sso", "state_not_usable", actor_type="anonymous")
        database.commit()
        return render_template("portal/signin/sso_expired.html"), 400
    # The attempt stays spent whatever happens next.
    database.commit()
    group = available_bill_group_by_id(attempt.bill_group_id)
    try:
        verified = sso.verify(database, attempt, state)
    except sso.ProviderUnavailable as exc:
        provider = database.get(SsoProvider, attempt.provider_id)
        return _unavailable(group, provider, exc)
    except sso.SsoRefused as refused:
        return _refuse(group, attempt.provider_id, refused.code, refused.email)
    previous = sessions.current_customer()
    try:
        signed_in = signin_actions.complete_sso_sign_in(
            database, group, verified, replacing=previous.row if previous else None
        )
    except SignInRefused as refused:
        database.rollback()
        return _refuse(group, attempt.provider_id, refused.code, refused.email)
    return signed_in_browser(group, signed_in)


def available_bill_group_by_id(bill_group_id: int) -> BillGroup:
    group = db.session().get(BillGroup, bill_group_id)
    return available_bill_group(group.public_id if group else "")


def _refuse(group: BillGroup, provider_id: int, code: str, email: str | None) -> tuple[str, int]:
    database = db.session()
    provider = database.get(SsoProvider, provider_id)
    audit.record(
        database,
        "signin.sso",
        code,
        actor_type="anonymous",
        actor=email,
        bill_group_id=group.id,
        detail=provider.issuer[:500] if provider else None,
    )
    database.commit()
    return render_template(
        "portal/signin/sso_refused.html",
        group=group,
        provider=provider,
        elsewhere=code == "other_browser",
    ), 403


def _unavailable(
    group: BillGroup, provider: SsoProvider | None, exc: sso.ProviderUnavailable
) -> tuple[str, int]:
    log.warning("company sign-in unavailable: %s", exc.reason)
    database = db.session()
    audit.record(
        database,
        "signin.sso",
        "provider_unavailable",
        actor_type="anonymous",
        bill_group_id=group.id,
        detail=(f"{provider.issuer}: " if provider else "") + exc.reason[:400],
    )
    database.commit()
    email_works = provider is None or provider.mode is SsoMode.OFFERED
    return render_template(
        "portal/signin/sso_unavailable.html",
        group=group,
        provider=provider,
        email_works=email_works,
    ), 502
