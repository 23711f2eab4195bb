"""Company single sign-on (OpenID Connect) on a domain rule: discovery, the redirect to
the company's provider, and the checks on what comes back. The design is in the README,
"Company single sign-on".

authlib's Flask client does the protocol: the authorization code flow with PKCE (S256),
`state` and `nonce` (kept in the browser's signed session, so the callback only works in
the browser that started it), the token request, and the ID token's signature (against
the provider's JWKS), issuer, audience, expiry and nonce. On top of it: the issuer of the
discovery document must be the one staff entered, each `state` is spent once in the
database (a replayed callback fails even with the old cookie), the address must be
verified by the provider and belong to the rule's domain. Completing the sign-in is
portal.actions.signin's, the same path as the emailed link.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import FlaskIntegration, FlaskOAuth2App
from authlib.integrations.requests_client import OAuth2Session
from flask import session
from joserfc.errors import JoseError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal import clock, crypto, webhooks
from portal.access import AccessError, canonical_email, rule_admits
from portal.config import settings
from portal.db import rowcount
from portal.models import AccessRule, BillGroup, RuleKind, SsoAttempt, SsoMode, SsoProvider

log = logging.getLogger(__name__)

SECRET_PURPOSE = "sso-client-secret"
CALLBACK_PATH = "/sso/callback"
# How long the customer has at the provider before the `state` is refused.
ATTEMPT_MINUTES = 10
# Clock skew allowed on the ID token's exp and iat, in seconds.
LEEWAY_SECONDS = 60
SCOPE = "openid email"


class ProviderUnavailable(Exception):
    """The provider could not be reached, or answered something that is not OpenID
    Connect (discovery, keys or token endpoint). `reason` is for the log and the audit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SsoRefused(Exception):
    """The provider's answer does not sign anybody in. `code` is the audit outcome;
    `email` the address, when the token was good enough to name one."""

    def __init__(self, code: str, email: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.email = email


# --- configuration -------------------------------------------------------------------


def issuer_problem(issuer: str, *, allow_http: bool) -> str | None:
    """Why this issuer URL cannot be used, or None. https only, outside local development."""
    parts = urlsplit(issuer)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "Enter the issuer as a full URL, for example https://login.acme.com."
    if parts.scheme == "http" and not allow_http:
        return "The issuer must use https://."
    if parts.query or parts.fragment or parts.username or parts.password:
        return "The issuer is a plain URL, without a query, a fragment or a user name."
    return None


class RefusedDestination(requests.ConnectionError):
    """A request the portal will not make: to an address that is not public (outside
    local development), or a redirect."""


def _guarded_session(*args: Any, **kwargs: Any) -> Any:
    """authlib's requests session for every call to a provider (discovery, JWKS, the
    token request), held to the webhooks' rule: the issuer is a URL staff type and the
    endpoints are whatever its discovery document names, so without this a typo, a
    stolen admin session or a hostile provider would turn the portal into a probe of
    its own network (127.0.0.1, 169.254.169.254, internal names). Redirects are not
    followed: a public issuer must not bounce the request inside."""
    session = OAuth2Session(*args, **kwargs)
    send = session.request

    def request(method: str, url: str, *more: Any, **options: Any) -> Any:
        refused = webhooks.refused_destination(url)
        if refused is not None:
            host = urlsplit(url).hostname
            log.warning("company sign-in request to %s refused: %s", host, refused)
            raise RefusedDestination(refused)
        options["allow_redirects"] = False
        response = send(method, url, *more, **options)
        if response.is_redirect or 300 <= response.status_code < 400:
            response.close()
            raise RefusedDestination("the provider answered with a redirect")
        return response

    session.request = request  # requests' get and post call it, and so does authlib
    return session


def _client(provider_id: int | str, issuer: str, client_id: str, secret: str) -> FlaskOAuth2App:
    """A fresh authlib client for one provider (not a registry entry: staff may change the
    settings at any time, and a client per request sees the change at once)."""
    name = f"sso{provider_id}"
    client = FlaskOAuth2App(
        FlaskIntegration(name),
        name=name,
        client_id=client_id,
        client_secret=secret,
        server_metadata_url=issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={
            "scope": SCOPE,
            "code_challenge_method": "S256",
            "default_timeout": settings().SSO_TIMEOUT_SECONDS,
        },
    )
    client.client_cls = _guarded_session
    return client


def client_for(provider: SsoProvider) -> FlaskOAuth2App:
    """The provider's client; ProviderUnavailable if its secret cannot be unsealed (the
    SECRET_KEY changed since staff saved it: they must enter it again)."""
    try:
        secret = crypto.unseal(SECRET_PURPOSE, provider.client_secret_sealed)
    except (crypto.InvalidToken, ValueError):
        raise ProviderUnavailable("client secret cannot be unsealed") from None
    return _client(provider.id, provider.issuer, provider.client_id, secret)


def _metadata(client: FlaskOAuth2App, issuer: str) -> dict[str, Any]:
    """The discovery document, checked: its issuer is exactly the configured one (OpenID
    Connect Discovery 1.0, section 4.3) and it names the endpoints the flow needs."""
    try:
        metadata: dict[str, Any] = client.load_server_metadata()
    except RefusedDestination as exc:
        raise ProviderUnavailable(f"discovery refused: {exc}") from None
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"discovery failed: {type(exc).__name__}") from None
    if metadata.get("issuer") != issuer:
        raise ProviderUnavailable("discovery names another issuer")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(metadata.get(key), str):
            raise ProviderUnavailable(f"discovery has no {key}")
    return metadata


def check_discovery(issuer: str, client_id: str) -> None:
    """Fetch and check the provider's discovery document (staff saving the settings).
    Raises ProviderUnavailable."""
    _metadata(_client("check", issuer, client_id, ""), issuer)


def provider_for(group: BillGroup, email: str) -> SsoProvider | None:
    """The company sign-in of the domain rule that covers this address's domain, if any.

    It depends on the domain alone (a domain rule admits every address there), so
    showing it says nothing about the address that was typed."""
    for rule in group.access_rules:
        if rule.kind == RuleKind.DOMAIN and rule.sso is not None and rule_admits(rule, email):
            return rule.sso
    return None


def required_for(rule: AccessRule | None) -> bool:
    """Whether the emailed link is refused for addresses this rule admits."""
    return rule is not None and rule.sso is not None and rule.sso.mode == SsoMode.REQUIRED


def provider_of_group(db: Session, group: BillGroup, provider_id: int) -> SsoProvider | None:
    return db.scalar(
        select(SsoProvider)
        .join(AccessRule, AccessRule.id == SsoProvider.rule_id)
        .where(SsoProvider.id == provider_id, AccessRule.bill_group_id == group.id)
    )


# --- the flow ------------------------------------------------------------------------


def redirect_uri() -> str:
    """One callback for the whole portal, from PORTAL_BASE_URL (never the request's Host):
    the address the company's IT registers with their provider."""
    return settings().PORTAL_BASE_URL + CALLBACK_PATH


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def begin(db: Session, group: BillGroup, provider: SsoProvider, next_path: str | None) -> str:
    """Record the attempt and return the provider's authorization URL. authlib keeps the
    state, nonce and PKCE verifier in the browser's session. Raises ProviderUnavailable."""
    client = client_for(provider)
    _metadata(client, provider.issuer)
    state = secrets.token_urlsafe(32)
    created = client.create_authorization_url(redirect_uri(), state=state)
    client.save_authorize_data(redirect_uri=redirect_uri(), **created)
    now = clock.now()
    db.add(
        SsoAttempt(
            state_hash=_state_hash(state),
            bill_group_id=group.id,
            provider_id=provider.id,
            next_path=next_path,
            created_at=now,
            expires_at=now + dt.timedelta(minutes=ATTEMPT_MINUTES),
        )
    )
    return str(created["url"])


@dataclass(frozen=True)
class Verified:
    """A provider vouched for this address, for this attempt."""

    attempt: SsoAttempt
    provider: SsoProvider
    email: str


def spend_attempt(db: Session, state: str) -> SsoAttempt | None:
    """Spend the attempt behind this `state`: one conditional UPDATE, so of a callback
    replayed (or raced) any number of times exactly one goes on."""
    if not state or len(state) > 200:
        return None
    now = clock.now()
    spent = db.execute(
        update(SsoAttempt)
        .where(
            SsoAttempt.state_hash == _state_hash(state),
            SsoAttempt.spent_at.is_(None),
            SsoAttempt.expires_at > now,
        )
        .values(spent_at=now)
        .execution_options(synchronize_session=False)
    )
    if rowcount(spent) != 1:
        return None
    return db.scalar(
        select(SsoAttempt)
        .where(SsoAttempt.state_hash == _state_hash(state))
        .execution_options(populate_existing=True)
    )


def verify(db: Session, attempt: SsoAttempt, state: str) -> Verified:
    """Exchange the code (this request's query string) and check the ID token and the
    address. Raises SsoRefused or ProviderUnavailable."""
    provider = db.get(SsoProvider, attempt.provider_id)
    if provider is None:
        raise SsoRefused("provider_removed")
    client = client_for(provider)
    if client.framework.get_state_data(session, state) is None:
        # The state is not this browser's: a callback opened elsewhere (login CSRF).
        raise SsoRefused("other_browser")
    _metadata(client, provider.issuer)
    try:
        token = client.authorize_access_token(
            claims_options={
                "iss": {"essential": True, "value": provider.issuer},
                "aud": {"essential": True, "value": provider.client_id},
                "sub": {"essential": True},
            },
            leeway=LEEWAY_SECONDS,
        )
    except RefusedDestination as exc:
        raise ProviderUnavailable(f"token or key request refused: {exc}") from None
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"token request failed: {type(exc).__name__}") from None
    except JoseError as exc:
        # A bad signature, a wrong audience or issuer, an expired token, a wrong nonce.
        raise SsoRefused(f"id_token_{exc.error}"[:40]) from None
    except OAuthError as exc:
        # The provider said no (access_denied, invalid_grant), or the state was missing.
        raise SsoRefused(f"provider_{exc.error}"[:40]) from None
    except ValueError:
        raise SsoRefused("id_token_malformed") from None
    claims = token.get("userinfo") if isinstance(token, dict) else None
    if not claims:
        raise SsoRefused("no_id_token")  # authlib checks an ID token only if one came
    return Verified(attempt, provider, _verified_address(provider, claims))


def _verified_address(provider: SsoProvider, claims: dict[str, Any]) -> str:
    raw = claims.get("email")
    if not isinstance(raw, str):
        raise SsoRefused("no_email")
    try:
        email = canonical_email(raw)
    except AccessError:
        raise SsoRefused("email_malformed") from None
    # The boolean true, as OpenID Connect defines it: not "true", not absent.
    if claims.get("email_verified") is not True:
        raise SsoRefused("email_not_verified", email)
    if not rule_admits(provider.rule, email):
        raise SsoRefused("email_of_another_domain", email)
    return email
