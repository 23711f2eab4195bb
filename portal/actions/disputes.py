"""Questions and disputes on invoices, written once for every face: a customer raises
one (`raise_dispute`) and writes again while it is open (`reply`); staff or the billing
system answer, and may resolve it (`answer`).

Each runs in the caller's transaction under the bill group's lock: the dispute or its
message (and a file, checked by portal.attachments), the invoice's open-dispute kind
for its badge, the audit row, the webhook event (dispute.opened, .replied, .answered,
.resolved) and, for an answer, the email to the customer, all commit together. One is
open per invoice at a time: the lock orders concurrent raises, and a partial unique
index refuses a second open row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emails import outbox
from portal import attachments, audit, billing, clock, events
from portal import disputes as rules
from portal.actions import Actor, Conflict, Forbidden, Invalid, NotFound
from portal.locks import lock_bill_group
from portal.models import (
    BillGroup,
    Dispute,
    DisputeAttachment,
    DisputeKind,
    DisputeMessage,
    DisputeState,
)

ALREADY_OPEN = (
    "A question or dispute is already open on this invoice: add to that conversation "
    "instead. You can raise another once it is resolved."
)
CLOSED = "This conversation is resolved; nothing more can be added to it."


@dataclass(frozen=True)
class Upload:
    """A file as a face received it: the name it was sent with, and its bytes."""

    filename: str | None
    data: bytes


def _checked(upload: Upload | None) -> attachments.CheckedFile | None:
    if upload is None:
        return None
    try:
        return attachments.check(upload.filename, upload.data)
    except attachments.AttachmentError as exc:
        raise Invalid(exc.message, "attachment") from None


def _message(
    dispute: Dispute, actor: Actor, body: str, checked: attachments.CheckedFile | None
) -> DisputeMessage:
    message = DisputeMessage(
        author_type=actor.kind,
        author=actor.name[:254],
        body=body,
        created_at=clock.now(),
    )
    if checked is not None:
        message.attachment = DisputeAttachment(
            filename=checked.filename,
            content_type=checked.content_type,
            size=checked.size,
            sha256=checked.sha256,
            data=checked.data,
        )
    dispute.messages.append(message)
    return message


def _audit(db: Session, actor: Actor, dispute: Dispute, outcome: str, **detail: object) -> None:
    audit.record(
        db,
        "dispute",
        outcome,
        **actor.audit(),
        bill_group_id=dispute.bill_group_id,
        detail=json.dumps(
            {"dispute": dispute.id, "invoice": dispute.invoice_id, **detail}, ensure_ascii=False
        )[:500],
    )


def raise_dispute(
    db: Session,
    actor: Actor,
    group: BillGroup,
    invoice_id: int,
    *,
    kind: DisputeKind | str,
    reason: str | None,
    message: str | None,
    upload: Upload | None = None,
) -> Dispute:
    """Raise a question or dispute on one of `group`'s invoices, as the customer `actor`.
    Another group's invoice (or a draft) is NotFound; a wrong kind, reason, message or
    file is Invalid; one already open is a Conflict. Nothing is written on any of them."""
    if actor.kind != "customer":
        raise Forbidden("Only a customer raises a question or dispute on an invoice.")
    invoice = billing.find_invoice(db, group, invoice_id)
    if invoice is None:
        raise NotFound("There is no such invoice in this account.")
    try:
        kind = DisputeKind(kind)
    except ValueError:
        raise Invalid("Choose a question or a dispute.", "kind") from None
    if kind == DisputeKind.DISPUTE:
        if reason not in rules.REASONS:
            raise Invalid("Choose why you dispute the invoice.", "reason")
    else:
        reason = None
    body = rules.clean_message(message)
    checked = _checked(upload)
    lock_bill_group(db, group.id)
    if db.scalar(
        select(Dispute.id).where(
            Dispute.invoice_id == invoice.id, Dispute.state == DisputeState.OPEN
        )
    ):
        raise Conflict(ALREADY_OPEN, code="already_open")
    dispute = Dispute(
        bill_group_id=group.id,
        invoice_id=invoice.id,
        kind=kind,
        reason=reason,
        state=DisputeState.OPEN,
        raised_by=actor.name,
    )
    try:
        with db.begin_nested():
            db.add(dispute)
            db.flush()
    except IntegrityError:
        # Another raise got in first (the lock makes this rare; the index makes it safe).
        raise Conflict(ALREADY_OPEN, code="already_open") from None
    _message(dispute, actor, body, checked)
    invoice.open_dispute_kind = kind
    db.flush()
    _audit(db, actor, dispute, "opened", kind=kind.value, reason=reason, file=checked is not None)
    events.dispute_event(db, "dispute.opened", dispute, actor.event())
    return dispute


def _open_dispute(db: Session, dispute_id: int, group: BillGroup | None) -> Dispute:
    """The dispute, locked through its bill group, still open; NotFound outside `group`."""
    dispute = db.get(Dispute, dispute_id)
    if dispute is None or (group is not None and dispute.bill_group_id != group.id):
        raise NotFound("There is no such question or dispute.")
    lock_bill_group(db, dispute.bill_group_id)
    db.refresh(dispute)
    if dispute.state != DisputeState.OPEN:
        raise Conflict(CLOSED, code="resolved")
    return dispute


def reply(
    db: Session,
    actor: Actor,
    group: BillGroup,
    dispute_id: int,
    *,
    message: str | None,
    upload: Upload | None = None,
) -> DisputeMessage:
    """The customer writes again on an open question or dispute of `group`."""
    if actor.kind != "customer":
        raise Forbidden("Staff and the billing system answer with `answer`.")
    body = rules.clean_message(message)
    checked = _checked(upload)
    dispute = _open_dispute(db, dispute_id, group)
    written = _message(dispute, actor, body, checked)
    dispute.updated_at = clock.now()  # renumbered in the API's feed: the thread grew
    db.flush()
    _audit(db, actor, dispute, "replied", file=checked is not None)
    events.dispute_event(db, "dispute.replied", dispute, actor.event())
    return written


def answer(
    db: Session,
    actor: Actor,
    dispute_id: int,
    *,
    message: str | None,
    resolve: bool,
    group: BillGroup | None = None,
) -> Dispute:
    """Staff or the billing system answer an open question or dispute, and resolve it or
    keep it open; whoever raised it and the billing contact are emailed the answer. A
    resolved one is a Conflict (a second resolve of two at once included)."""
    if actor.kind not in ("staff", "api"):
        raise Forbidden("Only staff or the billing system answer a question or dispute.")
    body = rules.clean_message(message, what="answer")
    dispute = _open_dispute(db, dispute_id, group)
    written = _message(dispute, actor, body, None)
    now = clock.now()
    dispute.updated_at = now
    if resolve:
        dispute.state = DisputeState.RESOLVED
        dispute.resolved_by = actor.label
        dispute.resolved_at = now
        dispute.invoice.open_dispute_kind = None
    db.flush()
    _audit(db, actor, dispute, "resolved" if resolve else "answered")
    events.dispute_event(db, "dispute.answered", dispute, actor.event())
    if resolve:
        events.dispute_event(db, "dispute.resolved", dispute, actor.event())
    for address in rules.answer_recipients(dispute):
        outbox.queue(db, rules.answer_email(dispute, written, address))
    return dispute
