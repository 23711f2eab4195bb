"""The append-only audit trail. Callers pass facts, never secrets."""

from __future__ import annotations

from flask import has_request_context, request
from sqlalchemy.orm import Session

from portal import clock
from portal.models import AuditEvent


def client_ip() -> str | None:
    """The client's address as ProxyFix resolved it (PROXY_FIX_X_FOR hops)."""
    return request.remote_addr if has_request_context() else None


def record(
    db: Session,
    action: str,
    outcome: str,
    *,
    actor_type: str,
    actor: str | None = None,
    bill_group_id: int | None = None,
    detail: str | None = None,
    ip: str | None = None,
) -> AuditEvent:
    """Add an event to the caller's transaction, so it commits (or not) with the change."""
    event = AuditEvent(
        at=clock.now(),
        action=action,
        outcome=outcome,
        actor_type=actor_type,
        actor=actor,
        bill_group_id=bill_group_id,
        # Outside a request (the worker), the caller passes the IP it recorded.
        ip=ip or client_ip(),
        detail=detail,
    )
    db.add(event)
    return event
