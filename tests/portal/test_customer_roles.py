"""Customer roles: a viewer's rule reads, a billing manager's rule also changes and pays.

The role is read from the rule that admits the address on every request; the pages show
a viewer no control that changes anything, and every POST a viewer forges is a 403 with
a `customer.forbidden` audit row and nothing else written. The walk over app.url_map
makes a future write view that forgets the check fail here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.actions import Actor
from portal.customer.viewer import FORM_FOR_MANAGERS
from portal.models import (
    AccessRule,
    AuditEvent,
    BillGroup,
    Contact,
    CustomerRole,
    Invoice,
    OutboxMessage,
    PaymentAttempt,
    PaymentMethod,
    SubscriptionChangeRequest,
    WebhookEvent,
)
from tests.conftest import csrf_token
from tests.factories import make_changeable_subscription, make_invoice, make_payment_method
from tests.portal.pages_helpers import ADDRESS, set_role, url

STAFF = Actor.staff("manager@staff.example.com")
READ_ONLY_NOTE = "You can view this bill group."


@pytest.fixture
def things(db: Session, group: BillGroup) -> dict[str, Any]:
    """An open invoice, a second payment method and a changeable subscription: every
    control a billing manager could use has something to act on."""
    invoice = make_invoice(db, group, number="INV-ROLE-1")
    make_payment_method(db, group, is_default=True, last4="4242")
    other = make_payment_method(db, group, is_default=False, last4="1881")
    subscription = make_changeable_subscription(db, group)
    db.commit()
    return {"invoice": invoice.id, "method": other.id, "subscription": subscription.id}


@pytest.fixture
def viewer(app: Flask, db: Session, group: BillGroup, customer: FlaskClient) -> FlaskClient:
    """The signed-in customer, whose rule has just become a viewer's."""
    set_role(app, db, group, CustomerRole.VIEWER)
    return customer


def forbidden_rows(db: Session) -> list[AuditEvent]:
    db.expire_all()
    return list(
        db.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "customer.forbidden")
            .order_by(AuditEvent.id)
        )
    )


def written(db: Session, group: BillGroup) -> dict[str, Any]:
    """Everything a customer's write could change."""
    db.expire_all()
    count = lambda model: db.scalar(select(func.count()).select_from(model))  # noqa: E731
    db.refresh(group)
    return {
        "group": (group.po_number, group.vat_number, group.registration_number, group.auto_pay),
        "contacts": sorted(
            (c.kind.value, c.name, c.email, c.pending_email)
            for c in db.scalars(select(Contact).where(Contact.bill_group_id == group.id))
        ),
        "default": sorted(
            (m.id, m.is_default)
            for m in db.scalars(
                select(PaymentMethod).where(PaymentMethod.bill_group_id == group.id)
            )
        ),
        "methods": count(PaymentMethod),
        "attempts": count(PaymentAttempt),
        "changes": count(SubscriptionChangeRequest),
        "events": count(WebhookEvent),
        "outbox": count(OutboxMessage),
        "invoices": sorted((i.id, i.balance_minor) for i in db.scalars(select(Invoice))),
        "audit": db.scalar(
            select(func.count(AuditEvent.id)).where(
                AuditEvent.action != "customer.forbidden",
                ~AuditEvent.action.startswith("session."),
                ~AuditEvent.action.startswith("access_rule."),
            )
        ),
    }


def portal_posts(app: Flask) -> list[tuple[str, str]]:
    """(endpoint, URL rule) of every customer portal route that takes a POST."""
    return sorted(
        (rule.endpoint, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("customer.") and "POST" in (rule.methods or ())
    )


def fill(rule: str, group: BillGroup, ids: dict[str, Any]) -> str:
    """A URL for the rule: this bill group, ids of this bill group's own records."""
    values = {
        "public_id": group.public_id,
        "kind": "billing",
        "method_id": str(ids["method"]),
        "subscription_id": str(ids["subscription"]),
        "invoice_id": str(ids["invoice"]),
        "key": "k" * 32,
    }
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values.get(m.group(1), "1"), rule)


# --- the walk --------------------------------------------------------------------------


def test_every_portal_post_is_refused_to_a_viewer_with_an_audit_row_and_nothing_written(
    app, db, group, things, viewer
):
    token = csrf_token(viewer.get(url(group, "/overview")).text)
    posts = portal_posts(app)
    # Not vacuous: the write views of today are all in the walk.
    endpoints = {endpoint for endpoint, _ in posts}
    assert {
        "customer.billing_details",
        "customer.edit_contact",
        "customer.add_payment_method",
        "customer.make_default",
        "customer.pay_form",
        "customer.pay_confirm",
        "customer.autopay",
        "customer.credits_page",
        "customer.subscriptions_request",
    } <= endpoints
    before = written(db, group)
    walked = []
    for endpoint, rule in posts:
        if app.view_functions[endpoint].__dict__.get("viewers_may_post"):
            continue  # what anyone signed in may do for themselves: tested where it lives
        data = {
            "csrf_token": token,
            "po_number": "PO-FORGED",
            "enabled": "on",
            "name": "Forged",
            "email": "forged@acme.com",
            "kind": "pause",
            "key": "k" * 32,
            "amount_minor": "100",
            "invoice": str(things["invoice"]),
            "role": "billing_manager",
        }
        response = viewer.post(fill(rule, group, things), data=data)
        assert response.status_code == 403, (endpoint, response.status_code)
        walked.append(endpoint)
    assert written(db, group) == before
    rows = forbidden_rows(db)
    assert [row.detail for row in rows] == [f"POST {endpoint}" for endpoint in walked]
    assert {(row.actor_type, row.actor, row.outcome, row.bill_group_id) for row in rows} == {
        ("customer", ADDRESS, "viewer", group.id)
    }


def test_a_billing_manager_is_not_refused_by_the_role_check(db, group, things, customer):
    """The same walk's first step for a manager: the view runs (and, here, saves)."""
    page = customer.get(url(group, "/billing-details")).text
    posted = customer.post(
        url(group, "/billing-details"),
        data={"csrf_token": csrf_token(page), "po_number": "PO-77"},
    )
    assert posted.status_code == 303
    db.expire_all()
    assert db.get(BillGroup, group.id).po_number == "PO-77"
    assert forbidden_rows(db) == []


def test_a_viewer_posting_a_role_field_does_not_escalate(db, group, things, viewer):
    """There is no customer endpoint that takes a role; a role smuggled into any form is
    refused with the form, and the rule keeps its role."""
    token = csrf_token(viewer.get(url(group, "/overview")).text)
    for role in ("billing_manager", "admin", "owner"):
        response = viewer.post(
            url(group, "/billing-details"),
            data={"csrf_token": token, "role": role, "po_number": "PO-1"},
        )
        assert response.status_code == 403
    db.expire_all()
    assert db.scalar(select(AccessRule.role)) == CustomerRole.VIEWER
    assert "Billing manager" not in viewer.get(url(group, "/overview")).text


# --- what the pages show ----------------------------------------------------------------


CONTROLS = {
    "/overview": ["/autopay", "Turn on", "Turn off"],
    "/invoices": ["Pay selected"],
    "/billing-details": ['name="po_number"', "Save billing details"],
    "/contacts": ["/contacts/billing", "/contacts/shipping"],
    "/payment-methods": ["Make default", "Add a card"],
}


def test_a_billing_manager_sees_the_controls(group, things, customer):
    for page, marks in CONTROLS.items():
        text = customer.get(url(group, page)).text
        assert any(mark in text for mark in marks), page
        assert READ_ONLY_NOTE not in text
    assert "Pay this invoice" in customer.get(url(group, f"/invoices/{things['invoice']}")).text
    assert "Billing manager" in customer.get(url(group, "/overview")).text


def test_a_viewer_sees_every_page_without_its_controls_and_a_line_saying_whom_to_ask(
    group, things, viewer
):
    for page, marks in CONTROLS.items():
        response = viewer.get(url(group, page))
        assert response.status_code == 200, page
        for mark in marks:
            assert mark not in response.text, (page, mark)
        assert READ_ONLY_NOTE in response.text
        assert group.entity.support_email in response.text
    overview = viewer.get(url(group, "/overview")).text
    assert '<span class="role-tag">Viewer</span>' in overview
    invoice = viewer.get(url(group, f"/invoices/{things['invoice']}")).text
    assert "Pay this invoice" not in invoice and "Download PDF" in invoice
    subscriptions = viewer.get(url(group, "/subscriptions")).text
    assert "/change?kind=" not in subscriptions
    credits = viewer.get(url(group, "/credits")).text
    assert "A billing manager at your company can apply credit" in credits


def test_a_viewer_reads_every_read_page_and_downloads_pdfs_and_csvs(group, things, viewer):
    for page in ("/subscriptions", "/payments", "/statement", f"/invoices/{things['invoice']}"):
        assert viewer.get(url(group, page)).status_code == 200, page
    pdf = viewer.get(url(group, f"/invoices/{things['invoice']}.pdf"))
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    csv = viewer.get(url(group, "/invoices.csv"), buffered=True)
    assert csv.status_code == 200
    assert viewer.get(url(group, "/statement.pdf")).data.startswith(b"%PDF")


@pytest.mark.parametrize(
    "page",
    [
        "/contacts/billing",
        "/payment-methods/new",
        "/pay",
        "/pay/review/" + "k" * 32,
        "/subscriptions/{subscription}/change?kind=pause",
        "/subscriptions/{subscription}/review?kind=pause",
    ],
)
def test_a_viewer_opening_a_form_page_is_sent_to_the_overview_with_the_note(
    db, group, things, viewer, page
):
    response = viewer.get(url(group, page.format(**things)))
    assert response.status_code == 303
    assert response.headers["Location"].endswith(url(group, "/overview"))
    landed = viewer.get(response.headers["Location"]).text
    assert READ_ONLY_NOTE in landed and FORM_FOR_MANAGERS in landed
    assert forbidden_rows(db) == []  # reading is not a forbidden act


# --- the role is the rule's, now ------------------------------------------------------------


def test_a_role_changed_while_signed_in_applies_at_the_next_request(
    app, db, group, things, customer
):
    page = customer.get(url(group, "/billing-details")).text
    token = csrf_token(page)
    assert "Save billing details" in page
    set_role(app, db, group, CustomerRole.VIEWER)
    # The page the manager had open still has its form; its POST is now refused.
    refused = customer.post(
        url(group, "/billing-details"), data={"csrf_token": token, "po_number": "PO-LATE"}
    )
    assert refused.status_code == 403
    db.expire_all()
    assert db.get(BillGroup, group.id).po_number != "PO-LATE"
    assert "Save billing details" not in customer.get(url(group, "/billing-details")).text
    # And back: no new sign-in needed.
    set_role(app, db, group, CustomerRole.BILLING_MANAGER)
    again = customer.get(url(group, "/billing-details")).text
    assert "Save billing details" in again
    saved = customer.post(
        url(group, "/billing-details"), data={"csrf_token": csrf_token(again), "po_number": "PO-9"}
    )
    assert saved.status_code == 303


def test_the_preview_shows_a_billing_managers_pages_with_the_controls_disabled(
    app, db, group, things, staff_client
):
    set_role(app, db, group, CustomerRole.VIEWER)
    client = staff_client()
    page = client.get(f"/admin/preview/{group.public_id}/billing-details").text
    assert "Save billing details" in page and "disabled" in page
    assert READ_ONLY_NOTE not in page
    assert "people a viewer rule admits see no buttons" in page
