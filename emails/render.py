"""One folder per email: templates/emails/<name>/{subject.txt, body.txt, body.html}."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import render_template


@dataclass(frozen=True)
class Attachment:
    """A file sent with an email (a receipt PDF)."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Email:
    kind: str
    to: str
    subject: str
    text: str
    html: str
    # Replies reach a person: the seller's contact address, for email sent on its behalf.
    reply_to: str | None = None
    attachments: tuple[Attachment, ...] = ()
    # Extra headers, (name, value): a reminder's List-Unsubscribe (RFC 8058).
    headers: tuple[tuple[str, str], ...] = ()


def render(
    kind: str,
    to: str,
    *,
    attachments: tuple[Attachment, ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
    **context: Any,
) -> Email:
    base = f"emails/{kind}"
    subject = " ".join(render_template(f"{base}/subject.txt", **context).split())
    # Every email about a bill group has its seller (the entity) in the context, and
    # answers to that seller's contact, not to the portal's own no-reply sender.
    entity = context.get("entity")
    return Email(
        kind=kind,
        to=to,
        subject=subject,
        text=render_template(f"{base}/body.txt", **context),
        html=render_template(f"{base}/body.html", **context),
        reply_to=getattr(entity, "support_email", None) or None,
        attachments=attachments,
        headers=headers,
    )
