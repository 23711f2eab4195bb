"""Notices to the billing contact when billing details or payment methods change: a
compensating control for email sign-in (SECURITY.md), so a change made by whoever got
into a mailbox does not go unseen."""

from __future__ import annotations

from flask import current_app
from sqlalchemy.orm import Session

from emails import outbox
from emails.render import render
from portal import clock
from portal.models import BillGroup, ContactKind

FIELD_NAMES = {
    "po_number": "PO number",
    "vat_number": "VAT number",
    "registration_number": "registration number",
    "name": "name",
    "company": "company",
    "email": "email address",
    "phone": "phone number",
    "line1": "address",
    "line2": "address",
    "city": "town or city",
    "region": "region",
    "postal_code": "postcode",
    "country": "country",
}


def recipients(group: BillGroup) -> list[str]:
    """Who hears about a change: the billing contact, as it is before the change."""
    contact = group.contact(ContactKind.BILLING)
    return [contact.email] if contact and contact.email else []


def details_changed(
    db: Session, group: BillGroup, actor: str, what: str, fields: list[str], to: list[str]
) -> None:
    """Queue the notice in the caller's transaction."""
    names = sorted({FIELD_NAMES.get(field, field) for field in fields})
    for address in to:
        outbox.queue(
            db,
            render(
                "details_changed",
                address,
                entity=group.entity,
                bill_group=group,
                actor=actor,
                what=what,
                fields=names,
                when=clock.now(),
                portal_url=f"{current_app.config['PORTAL_BASE_URL']}/p/{group.public_id}",
            ),
        )
