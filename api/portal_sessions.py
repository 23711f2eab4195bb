"""Portal sessions for the seller's own app: POST /api/v1/portal-sessions makes a
one-time link that signs its customer in to a bill group's portal
(portal.actions.portal_sessions). Needs the `sessions` scope, and spends a budget of
its own per key on top of the key's request budget."""

from __future__ import annotations

from flask import Response, jsonify
from sqlalchemy import select

from api.base import ApiError, acting_key, body, bp, current_key, requires
from portal import db, throttle
from portal.actions import ActionError, portal_sessions
from portal.models import BillGroup
from portal.sync import schemas, serialize

BUDGET = "api-portal-sessions"


@bp.post("/portal-sessions")
@requires("sessions")
def create_portal_session() -> tuple[Response, int]:
    key = current_key()
    data = body(schemas.PortalSessionIn)
    if not throttle.within((BUDGET, str(key.id))):
        raise ApiError(
            429,
            "This key has made too many portal sessions. Wait and retry.",
            retry_after=throttle.retry_after(BUDGET, str(key.id)),
        )
    session = db.session()
    group = session.scalar(select(BillGroup).where(BillGroup.external_id == data.bill_group))
    if group is None:
        raise ApiError(
            422,
            f"There is no bill group with external id {data.bill_group!r}.",
            field="bill_group",
        )
    try:
        made = portal_sessions.make_portal_session(
            session,
            acting_key(),
            group,
            data.email,
            api_key_id=key.id,
            path=data.path,
            return_url=data.return_url,
        )
    except ActionError as exc:
        session.rollback()
        raise ApiError(exc.status, exc.message, field=exc.field, code=exc.code) from None
    session.commit()
    # No Location: the session cannot be read back, its URL is shown this once.
    return jsonify({"url": made.url, "expires_at": serialize.iso(made.expires_at)}), 201
