"""The billing domain model; import models from here."""

from portal.models.access import AccessRule, CustomerRole, RuleKind
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
from portal.models.changes import ChangeCounter, ChangeMixin
from portal.models.dispute import (
    Dispute,
    DisputeAttachment,
    DisputeKind,
    DisputeMessage,
    DisputeState,
)
from portal.models.entity import Entity
from portal.models.integration import (
    ApiKey,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from portal.models.invoice_copy import InvoiceCopy, InvoiceCopyRecipient
from portal.models.notice import BillGroupChange, ContactConfirmation, Notice, NoticeChange
from portal.models.outbox import OutboxMessage
from portal.models.paying import (
    FINAL_STATES,
    AttemptState,
    CreditApplication,
    CreditNote,
    GatewayEventSeen,
    PaymentAttempt,
    PaymentAttemptLine,
    PaymentSource,
    ReceiptDue,
    SandboxCharge,
)
from portal.models.payment_method import PaymentMethod, PaymentMethodType
from portal.models.portal_session import PortalSessionToken, ReturnOrigin
from portal.models.reminder import (
    ReminderKind,
    ReminderOutcome,
    ReminderSent,
    ReminderUnsubscription,
)
from portal.models.signin import AuditEvent, CustomerSession, SignInChallenge
from portal.models.sso import SsoAttempt, SsoMode, SsoProvider
from portal.models.staff import PERMISSIONS, StaffRole, StaffSession, StaffUser
from portal.models.subscription_change import (
    CHANGE_LABELS,
    ChangeKind,
    Plan,
    RequestState,
    SubscriptionChangeRequest,
    subscription_plan_options,
)

__all__ = [
    "ReminderKind",
    "ReminderOutcome",
    "ReminderSent",
    "ReminderUnsubscription",
    "BillGroupChange",
    "InvoiceCopy",
    "InvoiceCopyRecipient",
    "Dispute",
    "DisputeAttachment",
    "DisputeKind",
    "DisputeMessage",
    "DisputeState",
    "CHANGE_LABELS",
    "ChangeKind",
    "Plan",
    "RequestState",
    "SubscriptionChangeRequest",
    "subscription_plan_options",
    "FINAL_STATES",
    "AttemptState",
    "CreditApplication",
    "CreditNote",
    "GatewayEventSeen",
    "PaymentAttempt",
    "PaymentAttemptLine",
    "PaymentSource",
    "ReceiptDue",
    "SandboxCharge",
    "SsoAttempt",
    "SsoMode",
    "SsoProvider",
    "AccessRule",
    "Account",
    "ApiKey",
    "AuditEvent",
    "BillGroup",
    "BillingFrequency",
    "ChangeCounter",
    "ChangeMixin",
    "Contact",
    "ContactConfirmation",
    "ContactKind",
    "CustomerSession",
    "DeliveryStatus",
    "DisplayStatus",
    "Entity",
    "Invoice",
    "InvoiceLine",
    "InvoiceStatus",
    "Notice",
    "NoticeChange",
    "OutboxMessage",
    "Payment",
    "PaymentApplication",
    "PaymentMethod",
    "PaymentMethodType",
    "PaymentStatus",
    "PortalSessionToken",
    "Product",
    "ReturnOrigin",
    "RuleKind",
    "CustomerRole",
    "SignInChallenge",
    "PERMISSIONS",
    "StaffRole",
    "StaffSession",
    "StaffUser",
    "Subscription",
    "SubscriptionItem",
    "SubscriptionStatus",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
]
