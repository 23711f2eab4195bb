"""Plain factories: make_*(db, **overrides) builds a valid object, adds and flushes it."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from portal.models import (
    Account,
    BillGroup,
    BillingFrequency,
    Contact,
    ContactKind,
    CreditNote,
    Entity,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Payment,
    PaymentApplication,
    PaymentMethod,
    PaymentMethodType,
    PaymentSource,
    PaymentStatus,
    Plan,
    Product,
    Subscription,
    SubscriptionItem,
    SubscriptionStatus,
)

_seq = itertools.count(1)
TODAY = dt.date(2026, 11, 21)
DAY = dt.timedelta(days=1)
T = TypeVar("T")


def _added(db: Session, row: T) -> T:
    db.add(row)
    db.flush()
    return row


def make_entity(db: Session, **overrides: Any) -> Entity:
    values: dict[str, Any] = {
        "name": f"Seller {next(_seq)}",
        "support_email": "billing@seller.example.com",
        "brand_colour": "#0f766e",
    }
    return _added(db, Entity(**(values | overrides)))


def make_account(db: Session, **overrides: Any) -> Account:
    return _added(db, Account(**({"name": f"Customer {next(_seq)}"} | overrides)))


def make_bill_group(db: Session, **overrides: Any) -> BillGroup:
    values: dict[str, Any] = {
        "name": f"Bill group {next(_seq)}",
        "currency": "EUR",
        "billing_frequency": BillingFrequency.MONTHLY,
        "contract_start": TODAY - dt.timedelta(days=365),
    }
    values |= overrides
    if "entity" not in values and "entity_id" not in values:
        values["entity"] = make_entity(db)
    if "account" not in values and "account_id" not in values:
        values["account"] = make_account(db)
    return _added(db, BillGroup(**values))


def make_invoice(db: Session, bill_group: BillGroup | None = None, **overrides: Any) -> Invoice:
    group = bill_group or make_bill_group(db)
    issue = overrides.pop("issue_date", TODAY - dt.timedelta(days=10))
    lines = overrides.pop("lines", None)
    values: dict[str, Any] = {
        "bill_group": group,
        "entity_id": group.entity_id,
        "currency": group.currency,
        "number": f"INV-{next(_seq):06d}",
        "status": InvoiceStatus.OPEN,
        "issue_date": issue,
        "due_date": issue + dt.timedelta(days=30),
    }
    invoice = Invoice(**(values | overrides))
    for position, (description, quantity, unit, tax_bp) in enumerate(
        lines or [("Service", "1", 10000, 2000)], start=1
    ):
        amount = int(Decimal(quantity) * unit)
        invoice.lines.append(
            InvoiceLine(
                position=position,
                description=description,
                quantity=Decimal(quantity),
                unit_price_minor=unit,
                amount_minor=amount,
                tax_rate_bp=tax_bp,
                tax_minor=amount * tax_bp // 10000,
            )
        )
    invoice.recalculate()
    if invoice.status == InvoiceStatus.PAID and "amount_paid_minor" not in overrides:
        invoice.amount_paid_minor = invoice.total_minor
    db.add(invoice)
    db.flush()
    return invoice


def add_payment(db: Session, invoice: Invoice, amount_minor: int, **overrides: Any) -> Payment:
    """A payment received for the invoice and applied to it in full."""
    values: dict[str, Any] = {
        "bill_group": invoice.bill_group,
        "amount_minor": amount_minor,
        "currency": invoice.currency,
        "status": PaymentStatus.SUCCEEDED,
        "received_at": dt.datetime(2026, 11, 15, 9, tzinfo=dt.UTC),
        "reference": "BACS-20261115",
    }
    payment = Payment(**(values | overrides))
    payment.applications.append(PaymentApplication(invoice=invoice, amount_minor=amount_minor))
    invoice.amount_paid_minor += amount_minor
    return _added(db, payment)


def add_unapplied_payment(
    db: Session, bill_group: BillGroup, amount_minor: int = 4000, **overrides: Any
) -> Payment:
    """A payment received for the bill group and applied to no invoice: credit."""
    values: dict[str, Any] = {
        "bill_group": bill_group,
        "amount_minor": amount_minor,
        "currency": bill_group.currency,
        "status": PaymentStatus.SUCCEEDED,
        "received_at": dt.datetime(2026, 11, 18, 9, tzinfo=dt.UTC),
        "reference": "WIRE-1",
    }
    return _added(db, Payment(**(values | overrides)))


def add_portal_payment(
    db: Session, bill_group: BillGroup, amount_minor: int, **overrides: Any
) -> Payment:
    """A payment the customer made in the portal through the sandbox gateway."""
    values: dict[str, Any] = {
        "source": PaymentSource.PORTAL,
        "gateway": "sandbox",
        "gateway_reference": f"ch_{next(_seq)}",
        "created_by": "ap@acme.com",
        "received_at": dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC),
    }
    return add_unapplied_payment(db, bill_group, amount_minor, **(values | overrides))


def make_credit_note(
    db: Session, bill_group: BillGroup, amount_minor: int = 5000, **overrides: Any
) -> CreditNote:
    """A credit note of the billing system's for the bill group, nothing applied yet."""
    values: dict[str, Any] = {
        "bill_group_id": bill_group.id,
        "number": f"CN-{next(_seq)}",
        "currency": bill_group.currency,
        "issue_date": TODAY - 3 * DAY,
        "amount_minor": amount_minor,
    }
    return _added(db, CreditNote(**(values | overrides)))


def make_payment_method(db: Session, bill_group: BillGroup, **overrides: Any) -> PaymentMethod:
    values: dict[str, Any] = {
        "bill_group": bill_group,
        "type": PaymentMethodType.CARD,
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2030,
        "gateway": "sandbox",
        "gateway_token": f"tok_{next(_seq)}",
    }
    return _added(db, PaymentMethod(**(values | overrides)))


def make_contact(db: Session, bill_group: BillGroup, **overrides: Any) -> Contact:
    """The bill group's billing contact, in Berlin, unless overridden."""
    values: dict[str, Any] = {
        "bill_group": bill_group,
        "kind": ContactKind.BILLING,
        "name": "Jo Bloggs",
        "company": "Acme GmbH",
        "email": "billing@acme.com",
        "line1": "Hauptstraße 1",
        "city": "Berlin",
        "postal_code": "10115",
        "country": "DE",
    }
    return _added(db, Contact(**(values | overrides)))


def make_subscription(db: Session, bill_group: BillGroup, **overrides: Any) -> Subscription:
    """An active monthly subscription to three Analytics Pro licences at 49.00 each, begun
    100 days before TODAY and renewing 9 days after."""
    product = Product(entity=bill_group.entity, name="Analytics Pro")
    values: dict[str, Any] = {
        "bill_group": bill_group,
        "status": SubscriptionStatus.ACTIVE,
        "period": BillingFrequency.MONTHLY,
        "start_date": TODAY - 100 * DAY,
        "renewal_date": TODAY + 9 * DAY,
        "items": [SubscriptionItem(product=product, quantity=3, unit_price_minor=4900)],
    }
    return _added(db, Subscription(**(values | overrides)))


def make_plan(db: Session, entity: Entity, **overrides: Any) -> Plan:
    """A plan of `entity`'s catalogue: Team, 99.00 EUR a month."""
    values: dict[str, Any] = {
        "entity": entity,
        "name": "Team",
        "price_minor": 9900,
        "currency": "EUR",
        "period": BillingFrequency.MONTHLY,
        "external_id": f"plan-{next(_seq)}",
    }
    return _added(db, Plan(**(values | overrides)))


def make_changeable_subscription(
    db: Session, bill_group: BillGroup, **overrides: Any
) -> Subscription:
    """An active subscription on the Team plan, 5 seats (1 to 20), that may move to the
    Business or Starter plans, pause, cancel now or at term end."""
    entity = bill_group.entity
    team = make_plan(db, entity, name="Team", price_minor=9900, currency=bill_group.currency)
    business = make_plan(
        db, entity, name="Business", price_minor=24900, currency=bill_group.currency
    )
    starter = make_plan(db, entity, name="Starter", price_minor=2900, currency=bill_group.currency)
    values: dict[str, Any] = {
        "plan": team,
        "quantity": 5,
        "quantity_min": 1,
        "quantity_max": 20,
        "allowed_plans": [team, business, starter],
        "allow_pause": True,
        "allow_cancel_now": True,
        "allow_cancel_at_term_end": True,
        "external_id": f"sub-{next(_seq)}",
    }
    return make_subscription(db, bill_group, **(values | overrides))
