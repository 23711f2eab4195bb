"""The record types the billing system syncs, once for the API and the import/export:
which model each is, its body, how to load it for serialising and how to serialise it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import selectinload
from sqlalchemy.orm.interfaces import LoaderOption

from portal.models import (
    Account,
    BillGroup,
    Contact,
    CreditNote,
    Entity,
    Invoice,
    InvoiceLine,
    Payment,
    PaymentApplication,
    PaymentMethod,
    Plan,
    Product,
    Subscription,
    SubscriptionItem,
)
from portal.sync import schemas, serialize


@dataclass(frozen=True)
class Context:
    """What serialising depends on besides the row, asked for only by the records that
    need it: the date (an invoice's overdue state), the portal's address (a bill
    group's portal link). Callables, so each face keeps its own clock and settings."""

    today: Callable[[], dt.date]
    base_url: Callable[[], str]


@dataclass(frozen=True)
class Record:
    """One type of synced record."""

    name: str  # the `type` of an import/export line
    resource: str  # the API's resource name, which also names its upsert; "" for contacts
    model: type[Any]
    body: type[schemas.Body]  # what PUT and an import line take
    serialize: Callable[[Any, Context], dict[str, Any]]
    # Loaded with each record, so serialising many is a fixed number of queries.
    options: tuple[LoaderOption, ...] = ()
    # What an upsert compares besides the columns, loaded with the record.
    children: tuple[LoaderOption, ...] = ()


# In dependency order: the order of an export, and a safe order for any import file.
RECORDS: dict[str, Record] = {
    r.name: r
    for r in (
        Record(
            "entity", "entities", Entity, schemas.EntityIn, lambda row, _: serialize.entity(row)
        ),
        Record(
            "account", "accounts", Account, schemas.AccountIn, lambda row, _: serialize.account(row)
        ),
        Record(
            "bill_group",
            "bill-groups",
            BillGroup,
            schemas.BillGroupIn,
            lambda row, at: serialize.bill_group(row, at.base_url()),
            (selectinload(BillGroup.account), selectinload(BillGroup.entity)),
        ),
        Record(
            "contact",
            "",
            Contact,
            schemas.ContactIn,
            lambda row, _: serialize.contact(row),
            (selectinload(Contact.bill_group),),
        ),
        Record(
            "product",
            "products",
            Product,
            schemas.ProductIn,
            lambda row, _: serialize.product(row),
            (selectinload(Product.entity),),
        ),
        # Before subscriptions, which name the plan they are on and those they may move to.
        Record(
            "plan",
            "plans",
            Plan,
            schemas.PlanIn,
            lambda row, _: serialize.plan(row),
            (selectinload(Plan.entity),),
        ),
        Record(
            "subscription",
            "subscriptions",
            Subscription,
            schemas.SubscriptionIn,
            lambda row, _: serialize.subscription(row),
            (
                selectinload(Subscription.bill_group),
                selectinload(Subscription.items).selectinload(SubscriptionItem.product),
                selectinload(Subscription.plan),
                selectinload(Subscription.allowed_plans),
            ),
            (selectinload(Subscription.items), selectinload(Subscription.allowed_plans)),
        ),
        Record(
            "invoice",
            "invoices",
            Invoice,
            schemas.InvoiceIn,
            lambda row, at: serialize.invoice(row, at.today()),
            (
                selectinload(Invoice.bill_group),
                selectinload(Invoice.lines).selectinload(InvoiceLine.product),
            ),
            (selectinload(Invoice.lines),),
        ),
        # Before payments, which may name the payment method used.
        Record(
            "payment_method",
            "payment-methods",
            PaymentMethod,
            schemas.PaymentMethodIn,
            lambda row, _: serialize.payment_method(row),
            (selectinload(PaymentMethod.bill_group),),
        ),
        Record(
            "payment",
            "payments",
            Payment,
            schemas.PaymentIn,
            lambda row, _: serialize.payment(row),
            (
                selectinload(Payment.bill_group),
                selectinload(Payment.payment_method),
                selectinload(Payment.applications).selectinload(PaymentApplication.invoice),
            ),
            (selectinload(Payment.applications),),
        ),
        Record(
            "credit_note",
            "credit-notes",
            CreditNote,
            schemas.CreditNoteIn,
            lambda row, _: serialize.credit_note(row),
            (selectinload(CreditNote.bill_group),),
        ),
    )
}
