"""Invoice copies: the worker's side. An invoice the billing system sends gets one
InvoiceCopy row per confirmed recipient, written with the invoice
(portal.actions.invoice_copies.queue_for_invoice); here the worker turns each into an
`invoice_issued` email with the invoice's PDF attached. A recipient has no portal
access, so the email carries no portal link: it says who added the address and gives a
one-click "stop sending me copies" link (a GET shows a button, the POST removes)."""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from emails import outbox
from emails.render import Attachment, Email, render
from portal import clock, confirmations, invoice_pdf, links
from portal.config import settings
from portal.db import rowcount
from portal.models import Invoice, InvoiceCopy, InvoiceCopyRecipient

log = logging.getLogger(__name__)

# Copies one worker pass makes (each renders a PDF).
BATCH = 20


def send_due(db: Session, limit: int = BATCH) -> int:
    """Queue the emails of waiting copies, oldest first; each is claimed by one
    conditional UPDATE (of two racing workers one wins) and committed with its email.
    Returns how many emails were queued."""
    due = list(
        db.scalars(
            select(InvoiceCopy.id)
            .where(InvoiceCopy.sent_at.is_(None))
            .order_by(InvoiceCopy.id)
            .limit(limit)
        )
    )
    db.rollback()
    made = 0
    for copy_id in due:
        claimed = db.execute(
            update(InvoiceCopy)
            .where(InvoiceCopy.id == copy_id, InvoiceCopy.sent_at.is_(None))
            .values(sent_at=clock.now())
            .execution_options(synchronize_session=False)
        )
        if rowcount(claimed) != 1:
            db.rollback()
            continue
        try:
            queued = _queue_email(db, copy_id)
            db.commit()
        except Exception:  # the claim rolls back with it: tried again next pass
            db.rollback()
            log.exception("The copy %s of an invoice could not be made", copy_id)
        else:
            made += queued
    return made


def _queue_email(db: Session, copy_id: int) -> bool:
    copy = db.get(InvoiceCopy, copy_id)
    assert copy is not None
    recipient = copy.recipient
    invoice = copy.invoice
    # Removed, or (never the case by construction) not confirmed, or voided since: skip.
    if recipient is None or recipient.confirmed_at is None or invoice.voided_at is not None:
        copy.skipped = True
        return False
    token = secrets.token_urlsafe(32)
    copy.stop_token_hash = confirmations.token_hash(token)
    outbox.queue(db, invoice_email(invoice, recipient, token))
    return True


def invoice_email(invoice: Invoice, recipient: InvoiceCopyRecipient, stop_token: str) -> Email:
    """The `invoice_issued` email to one copy recipient, the PDF attached."""
    group = invoice.bill_group
    pdf = invoice_pdf.render(invoice, today=clock.today(), locale=settings().LOCALE)
    return render(
        "invoice_issued",
        recipient.email,
        attachments=(Attachment(f"{invoice.number}.pdf", "application/pdf", pdf),),
        entity=group.entity,
        bill_group=group,
        invoice=invoice,
        added_by=recipient.added_by,
        stop_url=links.portal_url(group, f"/invoice-copies/stop/{stop_token}"),
    )
