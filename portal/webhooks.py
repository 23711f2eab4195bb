"""Webhooks: the billing system hears what customers (and staff) changed.

`emit` writes an event, and one delivery per subscribed endpoint, in the caller's
transaction: a change and its announcement commit together or not at all. The worker
(`send_due`) claims due deliveries with a lease (portal.leases: one UPDATE, so two
workers never send the same one), POSTs the JSON with an HMAC-SHA256 signature over the
timestamp and body, and retries failures with exponential backoff. Every attempt is
logged. Retries and resends carry the same event id, so a receiver that deduplicates by
it sees each event exactly once.

Signature header, as Stripe does it: `Portal-Signature: t=<unix seconds>,v1=<hex>`,
where hex = HMAC-SHA256(secret, f"{t}.{body}"). Receivers reject a t outside their
replay window (`verify` uses five minutes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from portal import clock, crypto, leases
from portal.config import is_local, settings
from portal.models import (
    BillGroup,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "portal.signed_in",
    "contact.updated",
    "billing_details.updated",
    "payment_method.added",
    "payment_method.default_changed",
    "access_rule.created",
    "access_rule.updated",
    "access_rule.deleted",
    "payment.succeeded",
    "payment.failed",
    "autopay.changed",
    "credit.applied",
    "subscription.change_requested",
    "dispute.opened",
    "dispute.replied",
    "dispute.answered",
    "dispute.resolved",
)
SIGNATURE_HEADER = "Portal-Signature"
REPLAY_WINDOW = 300
LEASE = dt.timedelta(seconds=60)
MAX_BACKOFF = dt.timedelta(hours=6)
SECRET_PURPOSE = "portal webhook secret"
USER_AGENT = "billing-portal-webhooks/1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- signing ------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: int = REPLAY_WINDOW,
    now: float | None = None,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    return hmac.compare_digest(expected, parts.get("v1", ""))


# --- endpoints ----------------------------------------------------------------------


class WebhookURLError(ValueError):
    pass


def check_url(url: str) -> str:
    """An endpoint URL we will POST to: https (http only in local development), a host,
    no credentials, at most 2000 characters."""
    url = (url or "").strip()
    if not url or len(url) > 2000:
        raise WebhookURLError("Enter a URL of at most 2000 characters.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not 0-65535)
    except ValueError:
        # "https://[::1/", "https://host:99999/": urlsplit or .port would raise later, in
        # the worker, on every attempt.
        raise WebhookURLError(
            "That is not a valid URL. Check the host and port, like https://billing.example.com/hooks."
        ) from None
    allowed = ("https", "http") if is_local(current_app) else ("https",)
    if parts.scheme not in allowed:
        raise WebhookURLError("The URL must start with https://.")
    if not parts.hostname:
        raise WebhookURLError("The URL must name a host, like https://billing.example.com/hooks.")
    if parts.username or parts.password:
        raise WebhookURLError("Put no user name or password in the URL; the signature is enough.")
    if any(ch.isspace() for ch in url):
        raise WebhookURLError("The URL cannot contain spaces.")
    try:
        literal: IPAddress | None = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None  # a name: checked at every delivery, against what it resolves to
    if literal is not None and not _private_allowed() and not is_public_address(literal):
        raise WebhookURLError("The URL must not point at a private or reserved address.")
    return url


def create_endpoint(
    db: Session, url: str, events: set[str], created_by: str, description: str | None = None
) -> tuple[str, WebhookEndpoint]:
    """A new endpoint and its signing secret (shown once); the caller commits."""
    unknown = events - set(EVENT_TYPES)
    if unknown or not events:
        raise ValueError("Choose at least one event.")
    secret = new_secret()
    endpoint = WebhookEndpoint(
        url=check_url(url),
        description=(description or "").strip()[:200] or None,
        secret_sealed=crypto.seal(SECRET_PURPOSE, secret),
        events=" ".join(e for e in EVENT_TYPES if e in events),
        created_by=created_by,
    )
    db.add(endpoint)
    return secret, endpoint


def endpoint_secret(endpoint: WebhookEndpoint) -> str:
    return crypto.unseal(SECRET_PURPOSE, endpoint.secret_sealed)


# --- events -------------------------------------------------------------------------


def emit(
    db: Session,
    event_type: str,
    bill_group: BillGroup | None,
    obj: dict[str, Any] | None,
    *,
    actor: dict[str, Any],
    changed: list[str] | None = None,
) -> WebhookEvent | None:
    """Queue an event for every active endpoint that takes it, in the caller's
    transaction. None when no endpoint wants it (nothing is stored)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    endpoints = [
        e
        for e in db.scalars(select(WebhookEndpoint).where(WebhookEndpoint.is_active.is_(True)))
        if event_type in e.event_set
    ]
    if not endpoints:
        return None
    now = clock.now()
    public_id = "evt_" + secrets.token_hex(12)
    data: dict[str, Any] = {"actor": actor, "object": obj}
    if bill_group is not None:
        data["bill_group"] = {
            "external_id": bill_group.external_id,
            "name": bill_group.name,
            "public_id": bill_group.public_id,
        }
    if changed is not None:
        data["changed"] = changed
    payload = {
        "id": public_id,
        "type": event_type,
        "api_version": "v1",
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    event = WebhookEvent(
        public_id=public_id,
        type=event_type,
        bill_group_id=bill_group.id if bill_group is not None else None,
        payload=json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str),
        created_at=now,
    )
    db.add(event)
    for endpoint in endpoints:
        db.add(WebhookDelivery(event=event, endpoint=endpoint, next_attempt_at=now, created_at=now))
    return event


# --- delivery -----------------------------------------------------------------------


def backoff(attempts: int) -> dt.timedelta:
    """30 s, 1 min, 2 min ... capped at 6 hours."""
    return min(dt.timedelta(seconds=30 * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def _due(now: dt.datetime):  # type: ignore[no-untyped-def]
    return and_(
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
    )


def claim(db: Session, worker: str, limit: int = 20) -> list[WebhookDelivery]:
    """Lease up to `limit` due deliveries to this worker, the longest waiting first
    (portal.leases: exactly one of two racing workers gets each)."""
    now = clock.now()
    return leases.lease(
        db,
        WebhookDelivery,
        _due(now),
        worker=worker,
        until=now + LEASE,
        limit=limit,
        order_by=(WebhookDelivery.next_attempt_at,),
    )


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


# IPv4-compatible addresses (deprecated, ::a.b.c.d), the local-use NAT64 prefix (RFC 8215:
# whatever a site's own translator reaches), Teredo (a tunnel to an address we cannot
# see) and site-local (deprecated, but routed inside some networks): Python calls many of
# them global.
_REFUSED_V6 = tuple(
    ipaddress.ip_network(net) for net in ("::/96", "64:ff9b:1::/48", "2001::/32", "fec0::/10")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
REFUSED_ADDRESS = "the address is not allowed (private or reserved)"


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a packet to `ip` ends up at: IPv4-mapped, 6to4 or NAT64."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """Whether a webhook may go to `ip`: a global unicast address that does not lead, by
    an IPv6 transition mechanism, to one that is not."""
    if ip.is_multicast or not ip.is_global:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _REFUSED_V6):
            return False
        embedded = _embedded_v4(ip)
        if embedded is not None:
            return is_public_address(embedded)
    return True


def _resolve(host: str, port: int) -> tuple[str | None, str | None]:
    """(address to connect to, None) or (None, why not). Staff register endpoints, but a
    typo or a stolen admin session must not turn the worker into a probe of the internal
    network: outside local development every address the name resolves to must be
    public. The caller connects to the address checked here, not to the name again, so
    a DNS answer that changes in between (rebinding) cannot slip past."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return None, f"cannot resolve {host}: {exc.strerror or type(exc).__name__}"[:500]
    addresses = [str(info[4][0]) for info in infos]
    if not _private_allowed():
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not is_public_address(ip):
                # Staff see the error; what an internal name resolves to is for the logs.
                log.warning("webhook to %s refused: it resolves to %s", host, ip)
                return None, REFUSED_ADDRESS
    return addresses[0], None


def refused_destination(url: str) -> str | None:
    """Why the portal must not fetch `url` (REFUSED_ADDRESS, or why its host cannot be
    resolved), or None: the webhook rule, for any other server-side request to an address
    staff typed (a company sign-in's issuer and the endpoints its discovery names)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "not a valid URL"
    host = parts.hostname or ""
    if not host:
        return "not a valid URL"
    _address, refused = _resolve(host, port)
    return refused


def _private_allowed() -> bool:
    allow = settings().WEBHOOK_ALLOW_PRIVATE_NETWORKS
    return is_local(current_app) if allow is None else bool(allow)


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to a checked address; the Host header still names the host."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """The same over TLS: the certificate is checked against the host name (SNI)."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post(url: str, body: bytes, headers: dict[str, str]) -> Outcome:
    """One POST to the checked address, no redirects followed, a hard timeout."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    started = time.monotonic()
    address, refused = _resolve(host, port)
    if address is None:
        return Outcome(None, refused, 0)
    timeout = float(settings().WEBHOOK_TIMEOUT)
    pinned = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    connection = pinned(host, address, port, timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(4096)
        status: int | None = response.status
        error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        status, error = None, f"{type(exc).__name__}: {exc}"[:500]
    finally:
        connection.close()
    return Outcome(status, error, int((time.monotonic() - started) * 1000))


def attempt(db: Session, delivery: WebhookDelivery, trigger: str = "worker") -> Outcome:
    """Send one delivery now and record the attempt and its result (the caller commits)."""
    body = delivery.event.payload.encode()
    timestamp = int(clock.now().timestamp())
    try:
        secret = endpoint_secret(delivery.endpoint)
    except crypto.InvalidToken:
        secret = None
    if secret is None:
        # SECRET_KEY has changed since the endpoint was registered: we cannot sign, and
        # an unsigned delivery would teach receivers to skip the check. Fail it.
        outcome = Outcome(None, "cannot sign: SECRET_KEY changed; register the endpoint again", 0)
    else:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Portal-Event-Id": delivery.event.public_id,
            "Portal-Event-Type": delivery.event.type,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        outcome = post(delivery.endpoint.url, body, headers)
    now = clock.now()
    trigger = delivery.resend_requested_by or trigger
    delivery.resend_requested_by = None
    db.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            at=now,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
            trigger=trigger,
        )
    )
    delivery.attempts += 1
    delivery.claimed_until = None
    delivery.last_status_code = outcome.status_code
    delivery.last_error = outcome.error
    if outcome.ok:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
    elif secret is None or delivery.attempts >= settings().WEBHOOK_MAX_ATTEMPTS:
        delivery.status = DeliveryStatus.FAILED
    else:
        delivery.status = DeliveryStatus.PENDING
        delivery.next_attempt_at = now + backoff(delivery.attempts)
    return outcome


def send_due(db: Session, worker: str | None = None, limit: int = 20) -> int:
    """Send what is due; returns how many were accepted by their endpoints."""
    worker = worker or secrets.token_hex(8)
    delivered = 0
    for delivery in claim(db, worker, limit):
        if not delivery.endpoint.is_active:
            delivery.status = DeliveryStatus.FAILED
            delivery.last_error = "endpoint disabled"
            delivery.claimed_until = None
            db.commit()
            continue
        try:
            outcome = attempt(db, delivery)
        except Exception as exc:  # one broken delivery must not stop the batch
            db.rollback()
            log.exception("webhook delivery %s could not be attempted", delivery.id)
            _postpone(db, delivery.id, f"{type(exc).__name__}: {exc}")
            continue
        db.commit()
        if outcome.ok:
            delivered += 1
        else:
            log.warning(
                "webhook delivery %s to endpoint %s failed (attempt %s): %s",
                delivery.id,
                delivery.endpoint_id,
                delivery.attempts,
                outcome.error,
            )
    return delivered


def _postpone(db: Session, delivery_id: int, error: str) -> None:
    """Count a failed attempt that raised before it could be recorded, and back off."""
    delivery = db.get(WebhookDelivery, delivery_id)
    if delivery is None:
        return
    delivery.attempts += 1
    delivery.claimed_until = None
    delivery.last_error = error[:500]
    if delivery.attempts >= settings().WEBHOOK_MAX_ATTEMPTS:
        delivery.status = DeliveryStatus.FAILED
    else:
        delivery.next_attempt_at = clock.now() + backoff(delivery.attempts)
    db.commit()


def resend(db: Session, delivery: WebhookDelivery, by: str) -> bool:
    """Queue the delivery again now with a fresh set of attempts, whatever happened
    before (the caller commits). False, and nothing changed, while a worker holds it:
    clearing its lease would let a second worker send it at the same time. The event id
    stays the same, so a receiver that deduplicates ignores a repeat."""
    now = clock.now()
    held = delivery.claimed_until is not None and delivery.claimed_until > now
    if delivery.status == DeliveryStatus.PENDING and held:
        return False
    delivery.status = DeliveryStatus.PENDING
    delivery.claimed_until = None
    delivery.next_attempt_at = now
    delivery.attempts = 0
    delivery.delivered_at = None
    delivery.resend_requested_by = by
    return True
