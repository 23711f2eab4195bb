"""What the portal page tests share: their bill group, form fields, page and outbox readers."""

from __future__ import annotations

import csv
import html
import io
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.access import add_rule
from portal.config import settings_of
from portal.models import (
    AccessRule,
    AuditEvent,
    BillGroup,
    Contact,
    CustomerRole,
    OutboxMessage,
    PaymentMethod,
)
from tests.conftest import csrf_token, run_worker
from tests.factories import make_bill_group, make_contact

ADDRESS = "ap@acme.com"


BILLING_EMAIL = "billing@acme.com"


GROUP_NAME = "Acme Europe"


CARD = "4242 4242 4242 4242"


DECLINED = "4000000000000002"


pytestmark = pytest.mark.usefixtures("clock")  # midday on TODAY, whatever the wall clock says


def portal_group(db: Session, name: str = GROUP_NAME, **overrides: Any) -> BillGroup:
    """A bill group that admits acme.com, with a billing contact; committed."""
    group = make_bill_group(db, name=name, **overrides)
    # A billing manager's rule: these pages are mostly about changing things.
    add_rule(db, group, "acme.com", created_by="test", role=CustomerRole.BILLING_MANAGER)
    make_contact(db, group, email=BILLING_EMAIL, phone="+49 30 1234567")
    db.commit()
    return group


def set_role(app: Flask, db: Session, group: BillGroup, role: CustomerRole) -> None:
    """Change the group's one rule to `role` through the one action, as staff would."""
    from portal.actions import Actor
    from portal.actions.rules import change_role

    db.expire_all()
    (rule,) = db.scalars(select(AccessRule).where(AccessRule.bill_group_id == group.id)).all()
    with app.app_context():
        change_role(db, Actor.staff("manager@staff.example.com"), group, rule.id, role)
        db.commit()


def url(group: BillGroup, path: str = "") -> str:
    return f"/p/{group.public_id}{path}"


def form_data(client: FlaskClient, page: str, **fields: Any) -> dict[str, Any]:
    """The CSRF token of `page` (as the browser would have it) and the fields to post."""
    response = client.get(page)
    assert response.status_code == 200, response.status_code
    return {"csrf_token": csrf_token(response.text), **fields}


ROW_RE = re.compile(r'<a href="/p/[\w-]+/invoices/\d+">([^<]*)</a>')


def listed(page_html: str) -> list[str]:
    """The invoice numbers in a page's invoice table, in order."""
    return [html.unescape(number) for number in ROW_RE.findall(page_html)]


# The CSV export is streamed: tests fetch it with buffered=True, which reads and closes
# the response as a WSGI server does, so the request's database session is released (an
# open one would hold its transaction, and on PostgreSQL block the next test's TRUNCATE).
def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def field_errors(page_html: str, field_id: str) -> list[str]:
    """The error messages rendered inside the form field whose label is for `field_id`."""
    match = re.search(
        rf'<div class="field[^"]*">\s*<label for="{field_id}">.*?</div>', page_html, re.S
    )
    assert match, f"no field {field_id!r} on the page"
    return [html.unescape(m) for m in re.findall(r'class="error-message"[^>]*>([^<]*)<', match[0])]


def input_value(page_html: str, field_id: str) -> str | None:
    match = re.search(rf'<input[^>]*\bid="{field_id}"[^>]*>', page_html)
    assert match, f"no input {field_id!r}"
    value = re.search(r'\bvalue="([^"]*)"', match[0])
    return html.unescape(value[1]) if value else None


def flashes(page_html: str) -> list[str]:
    return [
        html.unescape(m)
        for m in re.findall(r'<div class="notice" role="status">([^<]*)<', page_html)
    ]


def audit_rows(db: Session, action: str) -> list[AuditEvent]:
    db.expire_all()
    return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def send_notices(app: Flask) -> None:
    """Let the notice window close, then run the worker: notices are merged, not sent
    from the request (portal.notices)."""
    app.extensions["portal.clock"].advance(minutes=settings_of(app).NOTICE_WINDOW_MINUTES)
    run_worker(app)


def outbox_count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(OutboxMessage)) or 0


def plain_text(message: Any) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def card_fields(**overrides: str) -> dict[str, str]:
    return {
        "holder_name": "Ada Lovelace",
        "number": CARD,
        "exp_month": "12",
        "exp_year": "2030",
        "cvc": "123",
    } | overrides


def methods_of(db: Session, group: BillGroup) -> list[PaymentMethod]:
    db.expire_all()
    return list(
        db.scalars(
            select(PaymentMethod)
            .where(PaymentMethod.bill_group_id == group.id)
            .order_by(PaymentMethod.id)
        )
    )


def contact_of(db: Session, group: BillGroup, kind: str) -> Contact | None:
    """The bill group's contact of that kind as the database has it now, if any."""
    db.expire_all()
    return db.scalar(select(Contact).where(Contact.bill_group_id == group.id, Contact.kind == kind))


def billing_contact(db: Session, group: BillGroup) -> Contact:
    contact = contact_of(db, group, "billing")
    assert contact is not None
    return contact


def shipping_contact(db: Session, group: BillGroup) -> Contact | None:
    return contact_of(db, group, "shipping")


def save_contact(client: FlaskClient, group: BillGroup, kind: str, **fields: str) -> Any:
    """Post the contact form of that kind, with the page's CSRF token."""
    page = url(group, f"/contacts/{kind}")
    return client.post(page, data=form_data(client, page, **fields))


def contact_fields(**overrides: str) -> dict[str, str]:
    """The billing contact as the form shows it, with changes."""
    return {
        "name": "Jo Bloggs",
        "company": "Acme GmbH",
        "email": BILLING_EMAIL,
        "phone": "+49 30 1234567",
        "line1": "Hauptstraße 1",
        "line2": "",
        "city": "Berlin",
        "region": "",
        "postal_code": "10115",
        "country": "DE",
    } | overrides


# What every face says of a contact's phone number that is not one.
PHONE_ERROR = "Enter a phone number using digits, spaces, + ( ) and -."


DETAILS_FIELDS = ("po_number", "vat_number", "registration_number")

# Billing details that break a rule of portal.details, and what every face says:
# (field, value, message).
DETAIL_RULES = [
    (
        "vat_number",
        "DE136695977",
        "That is not a valid VAT number for Germany. Check it against your VAT "
        "registration certificate.",
    ),
    ("vat_number", "136695976", "Start the VAT number with its country code, like DE123456789."),
    ("vat_number", "DE136\x07695976", "The VAT number contains characters that are not allowed."),
    ("po_number", "PO-1\nPO-2", "The PO number contains characters that are not allowed."),
    (
        "registration_number",
        "HRB 1234!",
        "The registration number can contain letters, digits, spaces and . / - _ # ( ) only.",
    ),
]


def details_of(db: Session, group: BillGroup) -> tuple[str | None, ...]:
    db.refresh(group)
    return tuple(getattr(group, key) for key in DETAILS_FIELDS)
