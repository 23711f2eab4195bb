"""A mailbox page for local development only (registered in debug mode): the demo's
emails, readable without an SMTP server."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import select

from emails.outbox import unseal
from portal import db
from portal.models import OutboxMessage

bp = Blueprint("devmail", __name__, url_prefix="/dev")


@bp.get("/mailbox")
def mailbox() -> str:
    messages = (
        db.session()
        .scalars(select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(20))
        .all()
    )
    bodies = {m.id: unseal(m.text_body) if m.text_body else "(removed once sent)" for m in messages}
    return render_template("portal/devmail.html", messages=messages, bodies=bodies)
