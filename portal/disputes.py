"""Questions and disputes on invoices: the reasons a customer disputes for, the rule of
a message, the queries the pages read, and the email that tells the customer an answer.
The writes are portal.actions.disputes'."""

from __future__ import annotations

import unicodedata

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from emails.render import Email, render
from portal import links, notices
from portal.actions import Invalid
from portal.details import FORBIDDEN_CATEGORIES
from portal.models import (
    BillGroup,
    Dispute,
    DisputeKind,
    DisputeMessage,
    DisputeState,
    Invoice,
)

# Why a customer disputes an invoice: a short list (the webhook and the API carry the
# code), and the message in their own words.
REASONS: dict[str, str] = {
    "wrong_amount": "The amount is wrong",
    "not_received": "We did not receive what was billed",
    "duplicate": "We were billed twice",
    "cancelled_service": "The service was cancelled",
    "other": "Another reason",
}
MESSAGE_MAX = 5000
# A message may run over lines (and a tab pasted from a spreadsheet); nothing else of the
# one-line rule's forbidden characters (portal.details) is let through.
_LINE_BREAKS = {"\n", "\t"}


def clean_message(value: str | None, *, what: str = "message") -> str:
    """A message as stored: required, at most MESSAGE_MAX characters as given, line breaks
    kept (CR LF and CR become LF), no other control or invisible characters, no lone
    surrogates. Invalid with the field "message" otherwise."""
    raw = value or ""
    if len(raw) > MESSAGE_MAX:
        raise Invalid(f"The {what} can be at most {MESSAGE_MAX} characters.", "message")
    text = raw.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        raise Invalid(f"Enter a {what}.", "message")
    if any(
        ch not in _LINE_BREAKS and unicodedata.category(ch) in FORBIDDEN_CATEGORIES for ch in text
    ):
        raise Invalid(f"The {what} contains characters that are not allowed.", "message")
    return text


def reason_label(dispute: Dispute) -> str | None:
    return None if dispute.reason is None else REASONS.get(dispute.reason, dispute.reason)


def _with_thread(query: Select[Dispute]) -> Select[Dispute]:
    return query.options(
        selectinload(Dispute.messages).selectinload(DisputeMessage.attachment),
        selectinload(Dispute.invoice),
    )


def of_invoice(db: Session, invoice: Invoice) -> list[Dispute]:
    """The invoice's questions and disputes with their messages, the open one first."""
    return list(
        db.scalars(
            _with_thread(select(Dispute).where(Dispute.invoice_id == invoice.id)).order_by(
                (Dispute.state == DisputeState.OPEN).desc(), Dispute.id.desc()
            )
        )
    )


def of_bill_group(db: Session, group: BillGroup, limit: int = 100) -> list[Dispute]:
    """The bill group's, open ones first, then newest first (the staff's bill group page)."""
    return list(
        db.scalars(
            select(Dispute)
            .where(Dispute.bill_group_id == group.id)
            .options(selectinload(Dispute.invoice))
            .order_by((Dispute.state == DisputeState.OPEN).desc(), Dispute.id.desc())
            .limit(limit)
        )
    )


def with_thread(db: Session, dispute_id: int) -> Dispute | None:
    return db.scalar(_with_thread(select(Dispute).where(Dispute.id == dispute_id)))


def open_count(db: Session, group: BillGroup) -> int:
    return (
        db.scalar(
            select(func.count())
            .select_from(Dispute)
            .where(Dispute.bill_group_id == group.id, Dispute.state == DisputeState.OPEN)
        )
        or 0
    )


def answer_recipients(dispute: Dispute) -> list[str]:
    """Who is told of an answer: whoever raised it, and the billing contact (its
    confirmed address), each once."""
    seen: dict[str, str] = {}
    for address in [dispute.raised_by, *notices.recipients(dispute.bill_group)]:
        seen.setdefault(address.casefold(), address)
    return list(seen.values())


def answer_email(dispute: Dispute, message: DisputeMessage, to: str) -> Email:
    """The email that tells the customer staff (or the billing system) answered."""
    group = dispute.bill_group
    invoice = dispute.invoice
    return render(
        "dispute_answered",
        to,
        entity=group.entity,
        bill_group=group,
        invoice_number=invoice.number,
        what=dispute.kind.label.lower(),
        resolved=dispute.state == DisputeState.RESOLVED,
        answer=message.body,
        portal_url=links.portal_url(group, f"/invoices/{invoice.id}#thread"),
    )


def badge(kind: DisputeKind | None) -> str | None:
    """The words of the invoice's badge while a question or dispute is open."""
    if kind is None:
        return None
    return "In dispute" if kind == DisputeKind.DISPUTE else "Question open"


def open_on(db: Session, invoice: Invoice) -> Dispute | None:
    return db.scalar(
        select(Dispute).where(Dispute.invoice_id == invoice.id, Dispute.state == DisputeState.OPEN)
    )
