"""The billing domain model; import models from here."""

from portal.models.access import AccessRule, RuleKind
from portal.models.account import Account, BillGroup, BillingFrequency, Contact, ContactKind
from portal.models.billing import (
    DisplayStatus,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Payment,
    PaymentApplication,
    PaymentStatus,
    Product,
    Subscription,
    SubscriptionItem,
    SubscriptionStatus,
)
from portal.models.entity import Entity
from portal.models.payment_method import PaymentMethod, PaymentMethodType
from portal.models.staff import StaffRole, StaffUser

__all__ = [
    "AccessRule",
    "Account",
    "BillGroup",
    "BillingFrequency",
    "Contact",
    "ContactKind",
    "DisplayStatus",
    "Entity",
    "Invoice",
    "InvoiceLine",
    "InvoiceStatus",
    "Payment",
    "PaymentApplication",
    "PaymentMethod",
    "PaymentMethodType",
    "PaymentStatus",
    "Product",
    "RuleKind",
    "StaffRole",
    "StaffUser",
    "Subscription",
    "SubscriptionItem",
    "SubscriptionStatus",
]
