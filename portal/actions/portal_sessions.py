"""Portal sessions made through the API: the seller's own app, where its customer is
already signed in, asks for a one-time link that signs one browser in to one bill group
as one address, and lands on a page of it (Stripe's and Chargebee's portal sessions).

The link is the emailed link's twin, and as strong: 256 random bits, stored as SHA-256,
valid for five minutes, spent by one conditional UPDATE, made only for an address the
bill group's rules admit and checked against them again when it is spent. Its GET spends
nothing (link scanners and previews fetch URLs); the browser confirms with a POST. The
rest of a sign-in is the emailed link's own (portal.actions.signin.start_session).

`return_url` is the seller's page behind the header's "Back to <seller>" link; it must be
of an origin (scheme, host and port, exactly) that an admin allowed for that seller.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RoutingException

from portal import audit, clock, links
from portal.access import AccessError, canonical_email, may_access, refusal
from portal.actions import Actor, Conflict, Invalid, NotFound
from portal.actions.signin import SignedIn, SignInRefused, start_session
from portal.config import is_local
from portal.db import rowcount
from portal.models import (
    ApiKey,
    BillGroup,
    CustomerSession,
    Entity,
    Invoice,
    PortalSessionToken,
    ReturnOrigin,
)
from portal.signin import sha256

LIFETIME = dt.timedelta(minutes=5)
MAX_PATH = 400
MAX_RETURN_URL = 2000
MAX_ORIGIN = 300
# The customer pages a link may land on: those of the portal's own blueprint ("customer"),
# never the sign-in pages, the preview (staff) or the staff side.
CUSTOMER_BLUEPRINT = "customer."


@dataclass(frozen=True)
class Made:
    """A new portal session: `url` carries the token, which is not kept anywhere."""

    url: str
    expires_at: dt.datetime
    row: PortalSessionToken


# --- checking what the seller's app sends ----------------------------------------------


def _unprintable(text: str) -> bool:
    return any(
        unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Zs", "Cs") or ch == "\\"
        for ch in text
    )


def landing_path(db: Session, group: BillGroup, raw: str | None) -> str | None:
    """The portal path of this bill group that `raw` names ("/invoices", "/invoices/INV-1",
    "/payment-methods"), as an absolute path under /p/<public id>; None for the overview.

    Only a GET page of the customer portal of this very bill group: never an absolute
    URL, another host, a path that climbs out (".." or "%2e%2e"), the sign-in pages, the
    preview or the staff side. An invoice is named as the API names it, by its external
    id (or its number), and must be of this bill group.
    """
    if raw is None or raw in ("", "/"):
        return None
    if len(raw) > MAX_PATH:
        raise Invalid(f"path is longer than {MAX_PATH} characters.", "path")
    if _unprintable(raw):
        raise Invalid("path contains spaces, control characters or backslashes.", "path")
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not raw.startswith("/") or raw.startswith("//"):
        raise Invalid(
            "path is a page of the bill group's portal, like /invoices: not a URL.", "path"
        )
    if parts.fragment or "#" in raw:
        raise Invalid("path cannot carry a #fragment.", "path")
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        raise Invalid("path cannot contain . or .. segments.", "path")
    segments = parts.path.split("/")
    invoice_page = len(segments) == 3 and segments[1] == "invoices" and bool(segments[2])
    path = parts.path
    if invoice_page:
        number = unquote(segments[2])
        invoice = db.scalar(
            select(Invoice).where(Invoice.bill_group_id == group.id, Invoice.external_id == number)
        ) or db.scalar(
            select(Invoice).where(Invoice.bill_group_id == group.id, Invoice.number == number)
        )
        if invoice is None:
            raise Invalid(f"There is no invoice {number[:100]} in this bill group.", "path")
        path = f"/invoices/{invoice.id}"
    full = f"/p/{group.public_id}{path}"
    try:
        endpoint, values = current_app.url_map.bind("portal.invalid").match(full, method="GET")
    except (HTTPException, RoutingException):
        endpoint, values = "", {}
    expected = {"public_id", "invoice_id"} if invoice_page else {"public_id"}
    if not str(endpoint).startswith(CUSTOMER_BLUEPRINT) or set(values) != expected:
        raise Invalid(
            f"{raw[:100]} is not a page of the bill group's portal "
            "(for example /overview, /invoices, /invoices/<invoice>, /payment-methods).",
            "path",
        )
    return full + (f"?{parts.query}" if parts.query else "")


def canonical_origin(raw: str, *, field: str = "origin") -> str:
    """scheme://host[:port] of a URL or origin, lower-case, default port left out (the web's
    origin: https://a.example and https://a.example:443 are one). https only, but in
    local development (where http://localhost is what the seller's app runs on)."""
    if len(raw) > MAX_RETURN_URL:
        raise Invalid(f"{field} is longer than {MAX_RETURN_URL} characters.", field)
    if not raw or _unprintable(raw):
        raise Invalid(f"{field} contains spaces, control characters or backslashes.", field)
    parts = urlsplit(raw)
    try:
        port = parts.port
    except ValueError:
        raise Invalid(f"{field} has a port that is not a number from 0 to 65535.", field) from None
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host or "@" in parts.netloc:
        raise Invalid(f"{field} must be a web address like https://app.example.com.", field)
    if not host.isascii():
        raise Invalid(f"{field}: write an international host name in its xn-- form.", field)
    if parts.scheme == "http" and not is_local(current_app):
        raise Invalid(f"{field} must use https.", field)
    default = {"https": 443, "http": 80}[parts.scheme]
    shown = f"[{host}]" if ":" in host else host
    origin = f"{parts.scheme}://{shown}" + (f":{port}" if port not in (None, default) else "")
    if len(origin) > MAX_ORIGIN:
        raise Invalid(f"{field} is longer than {MAX_ORIGIN} characters.", field)
    return origin


def allowed_origins(db: Session, entity: Entity) -> list[ReturnOrigin]:
    return list(
        db.scalars(
            select(ReturnOrigin)
            .where(ReturnOrigin.entity_id == entity.id)
            .order_by(ReturnOrigin.origin)
        )
    )


def _origin_allowed(db: Session, entity: Entity, url: str) -> bool:
    try:
        origin = canonical_origin(url, field="return_url")
    except Invalid:
        return False
    return origin in {row.origin for row in allowed_origins(db, entity)}


def checked_return_url(db: Session, entity: Entity, raw: str | None) -> str | None:
    if raw is None:
        return None
    origin = canonical_origin(raw, field="return_url")
    if not _origin_allowed(db, entity, raw):
        raise Invalid(
            f"return_url is not of an origin allowed for {entity.name} ({origin} is not "
            "among them): an admin adds it on the staff pages, Return origins.",
            "return_url",
        )
    return raw


# --- making one -----------------------------------------------------------------------


def make_portal_session(
    db: Session,
    actor: Actor,
    group: BillGroup,
    raw_email: str,
    *,
    api_key_id: int,
    path: str | None = None,
    return_url: str | None = None,
) -> Made:
    """A one-time link for an address the rules admit today, or Invalid naming the field
    and, for a refused address, the reason (`access.refusal`). Writes the token's hash
    and the audit row naming the key."""
    try:
        email = canonical_email(raw_email)
    except AccessError as exc:
        raise Invalid(exc.message, "email") from None
    reason = refusal(group, email, clock.today())
    if reason is not None:
        raise Invalid(reason, "email", code="not_admitted")
    next_path = landing_path(db, group, path)
    back = checked_return_url(db, group.entity, return_url)
    token = secrets.token_urlsafe(32)  # 256 bits
    now = clock.now()
    row = PortalSessionToken(
        bill_group_id=group.id,
        email=email,
        token_hash=sha256(token),
        next_path=next_path,
        return_url=back,
        api_key_id=api_key_id,
        made_by=actor.audit()["actor"],
        created_at=now,
        expires_at=now + LIFETIME,
    )
    db.add(row)
    db.flush()
    detail = {"portal_session": row.id, "email": email, "path": next_path}
    if back is not None:
        detail["return_origin"] = canonical_origin(back, field="return_url")
    audit.record(
        db,
        "portal_session.create",
        "created",
        bill_group_id=group.id,
        detail=json.dumps(detail, sort_keys=True),
        **actor.audit(),
    )
    return Made(links.portal_url(group, f"/session/{token}"), row.expires_at, row)


# --- opening and spending one ---------------------------------------------------------


def find_open(db: Session, group: BillGroup, token: str) -> PortalSessionToken | None:
    """The unspent, unexpired session behind a link of this bill group; spends nothing."""
    if not token or len(token) > 100:
        return None
    return db.scalar(
        select(PortalSessionToken).where(
            PortalSessionToken.token_hash == sha256(token),
            PortalSessionToken.bill_group_id == group.id,
            PortalSessionToken.spent_at.is_(None),
            PortalSessionToken.expires_at > clock.now(),
        )
    )


def spend(db: Session, token_id: int, group: BillGroup) -> bool:
    """Spend it: True for exactly one of any number of concurrent callers."""
    now = clock.now()
    result = db.execute(
        update(PortalSessionToken)
        .where(
            PortalSessionToken.id == token_id,
            PortalSessionToken.bill_group_id == group.id,
            PortalSessionToken.spent_at.is_(None),
            PortalSessionToken.expires_at > now,
        )
        .values(spent_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def sign_in_with(
    db: Session, group: BillGroup, token_id: int, *, replacing: CustomerSession | None
) -> SignedIn:
    """Sign in with a portal session this request has just spent (uncommitted). Refused,
    writing nothing, if the address no longer has access or the key that made it has
    been revoked since (revoking a leaked key ends what it made)."""
    row = db.get(PortalSessionToken, token_id, populate_existing=True)
    if row is None or row.bill_group_id != group.id:
        raise SignInRefused("link_not_usable")
    key = db.get(ApiKey, row.api_key_id)
    if key is None or key.revoked_at is not None:
        raise SignInRefused("key_revoked", row.email)
    if may_access(group, row.email, clock.today()) is None:
        raise SignInRefused("access_revoked", row.email)
    # An origin the admin has withdrawn since no longer gets its link.
    back = row.return_url
    if back is not None and not _origin_allowed(db, group.entity, back):
        back = None
    return start_session(
        db,
        group,
        row.email,
        row.next_path,
        replacing=replacing,
        return_url=back,
        audit_detail=f"portal session {row.id}, made by {row.made_by}",
    )


# --- the admins' setting --------------------------------------------------------------


def add_return_origin(db: Session, actor: Actor, entity: Entity, raw: str) -> ReturnOrigin:
    """Allow an origin for this seller's return_url. Only the origin is taken: a path,
    query or fragment is refused, so nobody thinks they allowed just one page."""
    text = raw.strip()
    origin = canonical_origin(text)
    parts = urlsplit(text)
    if parts.path not in ("", "/") or parts.query or parts.fragment or text[-1] in "?#":
        raise Invalid(
            f"Enter just the origin, like {origin}: scheme, host and port, no path.", "origin"
        )
    if origin in {row.origin for row in allowed_origins(db, entity)}:
        raise Conflict(f"{origin} is already allowed for {entity.name}.", "origin")
    row = ReturnOrigin(entity_id=entity.id, origin=origin, created_by=actor.label)
    db.add(row)
    db.flush()
    audit.record(
        db,
        "return_origin.add",
        "added",
        detail=json.dumps({"entity_id": entity.id, "origin": origin}, sort_keys=True),
        **actor.audit(),
    )
    return row


def remove_return_origin(db: Session, actor: Actor, origin_id: int) -> ReturnOrigin:
    row = db.get(ReturnOrigin, origin_id)
    if row is None:
        raise NotFound("That origin is not allowed any more.")
    db.delete(row)
    audit.record(
        db,
        "return_origin.remove",
        "removed",
        detail=json.dumps({"entity_id": row.entity_id, "origin": row.origin}, sort_keys=True),
        **actor.audit(),
    )
    return row
