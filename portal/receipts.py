"""Payment receipts: the PDF (on invoice_pdf's page, header and tables) and the email
that carries it, sent when a payment made in the portal succeeds.

The pay flow only marks the payment (`queue`, in the charge's own transaction); the
worker makes the receipt (`send_due`): it renders the PDF once, queues an email with it
to the customer who paid and to the billing contact, and clears the mark, all in one
transaction, so the confirm never waits for the PDF and a receipt that fails to render
is tried again without touching the payment."""

from __future__ import annotations

import logging

from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Spacer, Table
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from emails import outbox
from emails.render import Attachment, Email, render
from portal import links, notices
from portal.config import settings
from portal.db import rowcount
from portal.invoice_pdf import (
    BODY,
    BODY_RIGHT,
    CELL_PADDING,
    MUTED_LEFT,
    TITLE,
    Formats,
    build,
    cell,
    para,
    ruled_table,
)
from portal.models import BillGroup, Payment, PaymentStatus, ReceiptDue
from portal.money import format_money

log = logging.getLogger(__name__)

# Receipts one worker pass makes.
BATCH = 20


def queue(db: Session, payment: Payment) -> None:
    """Mark a succeeded payment for its receipt, in the caller's transaction."""
    db.add(ReceiptDue(payment_id=payment.id))


def send_due(db: Session, limit: int = BATCH) -> int:
    """Make the receipts waiting, oldest first: each is claimed by deleting its mark (one
    of two racing workers wins it) and committed with its emails. Returns how many."""
    due = db.scalars(select(ReceiptDue.payment_id).order_by(ReceiptDue.queued_at).limit(limit))
    made = 0
    for payment_id in list(due):
        claimed = db.execute(delete(ReceiptDue).where(ReceiptDue.payment_id == payment_id))
        if rowcount(claimed) != 1:
            db.rollback()
            continue
        try:
            _queue_emails(db, payment_id)
            db.commit()
        except Exception:  # the mark comes back with the rollback: tried again next pass
            db.rollback()
            log.exception("The receipt of payment %s could not be made", payment_id)
        else:
            made += 1
    db.commit()
    return made


def _queue_emails(db: Session, payment_id: int) -> None:
    payment = db.get(Payment, payment_id)
    if payment is None or payment.status not in (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED):
        return  # gone before its receipt: nothing to send
    group = payment.bill_group
    to = list(dict.fromkeys([a for a in (payment.created_by, *notices.recipients(group)) if a]))
    pdf = render_pdf(payment, locale=settings().LOCALE)  # once for everyone
    for address in to:
        outbox.queue(db, receipt_email(group, payment, address, pdf))


def number(payment: Payment) -> str:
    """The receipt's number: the payment's reference, else its id."""
    return payment.reference or f"P-{payment.id}"


def filename(payment: Payment) -> str:
    return f"receipt-{number(payment)}.pdf"


def method_of(payment: Payment) -> str:
    return payment.method_description or "—"


def render_pdf(payment: Payment, *, locale: str = "en_GB") -> bytes:
    """The receipt of a payment as an A4 PDF: who paid what, when, how, for which invoices."""
    group = payment.bill_group
    entity = group.entity
    fmt = Formats(payment.currency, locale)

    def story(width: float) -> list[Flowable]:
        facts = [
            ("Receipt", number(payment)),
            ("Paid on", fmt.date(payment.received_at.date())),
            ("Amount", fmt.money(payment.amount_minor)),
            ("Paid with", method_of(payment)),
            ("Paid by", payment.created_by or group.account.name),
            ("Account", f"{group.account.name} · {group.name}"),
        ]
        if payment.refunded_minor:
            facts.append(("Refunded", fmt.money(payment.refunded_minor)))
        value_width = width - 35 * mm
        table = Table(
            [
                [cell(label, 35 * mm, MUTED_LEFT), cell(value, value_width - CELL_PADDING)]
                for label, value in facts
            ],
            colWidths=[35 * mm, value_width],
            hAlign="LEFT",
        )
        # The plain-string cells in the document's font (a Table's own is Helvetica).
        table.setStyle(
            [
                ("FONT", (0, 0), (-1, -1), BODY.fontName, BODY.fontSize, BODY.leading),
                ("TEXTCOLOR", (0, 0), (0, -1), MUTED_LEFT.textColor),
                ("TEXTCOLOR", (1, 0), (1, -1), BODY.textColor),
            ]
        )
        rows: list[list[object]] = [["Invoice", "Amount applied"]]
        for application in sorted(payment.applications, key=lambda a: a.invoice_id):
            rows.append(
                [
                    cell(application.invoice.number, width - 50 * mm - 2 * CELL_PADDING),
                    fmt.money(application.amount_minor),
                ]
            )
        unapplied = payment.amount_minor - sum(a.amount_minor for a in payment.applications)
        if unapplied > 0:
            rows.append(["Not applied to an invoice (credit)", fmt.money(unapplied)])
        rows.append([para("Total paid", BODY_RIGHT), fmt.money(payment.amount_minor)])
        return [
            para("Payment receipt", TITLE),
            Spacer(0, 4 * mm),
            table,
            Spacer(0, 6 * mm),
            ruled_table(rows, [width - 50 * mm, 50 * mm]),
        ]

    return build(
        entity,
        title=f"Receipt {number(payment)}",
        footer=f"Receipt {number(payment)}  ·  Questions? {entity.support_email}",
        story=story,
    )


def receipt_email(group: BillGroup, payment: Payment, to: str, pdf: bytes | None = None) -> Email:
    """The receipt email, multipart text and HTML, with the PDF attached (`pdf`, when the
    caller has rendered it already for another recipient)."""
    assert payment.status in (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED)
    locale = settings().LOCALE
    if pdf is None:
        pdf = render_pdf(payment, locale=locale)
    return render(
        "payment_receipt",
        to,
        attachments=(Attachment(filename(payment), "application/pdf", pdf),),
        entity=group.entity,
        bill_group=group,
        payment=payment,
        receipt_number=number(payment),
        amount=format_money(payment.amount_minor, payment.currency, locale),
        method=method_of(payment),
        invoices=[
            (a.invoice.number, format_money(a.amount_minor, payment.currency, locale))
            for a in sorted(payment.applications, key=lambda a: a.invoice_id)
        ],
        paid_at=payment.received_at,
        portal_url=links.portal_url(group, "/payments"),
    )
