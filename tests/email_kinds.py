"""One rendered example of every kind of email the portal sends, built as the code that
sends it builds it (the same templates and, where there is one, the same builder), for
the checks every kind must pass: the wire format and headers, SpamAssassin, the Nu HTML
Checker. A new folder under templates/emails/ fails tests/test_mail_wire.py until it has
an example here.

Each example also names the facts a reader needs, which both the plain-text and the
HTML part must carry: the link, the code, the expiry, who sent it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from emails.render import Attachment, Email, render
from portal.disputes import answer_email as dispute_answer_email
from portal.models import (
    Account,
    BillGroup,
    BillGroupChange,
    BillingFrequency,
    ChangeKind,
    Dispute,
    DisputeKind,
    DisputeMessage,
    DisputeState,
    Entity,
    Invoice,
    InvoiceStatus,
    NoticeChange,
    Payment,
    PaymentApplication,
    PaymentStatus,
    Plan,
    Product,
    ReminderKind,
    RequestState,
    Subscription,
    SubscriptionChangeRequest,
    SubscriptionItem,
)
from portal.notices import notice_email
from portal.receipts import receipt_email
from portal.reminders import reminder_email
from portal.subscriptions import answer_email

TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "emails"
SELLER = "Northwind Cloud"
SELLER_CONTACT = "billing@northwind-cloud.com"
PORTAL = "https://portal.example.test/p/PUBLICID"
WHEN = dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Example:
    email: Email
    facts: tuple[str, ...]  # in both parts, word for word


def every_kind() -> dict[str, Example]:
    """name -> example; call inside an app's request context."""
    entity = Entity(name=SELLER, support_email=SELLER_CONTACT)
    group = BillGroup(
        name="Acme UK operations",
        public_id="PUBLICID",
        entity=entity,
        account=Account(name="Acme Ltd"),
        currency="GBP",
    )
    seller = (SELLER, SELLER_CONTACT)
    link = f"{PORTAL}/verify/TOKEN"
    changes = [
        NoticeChange(
            at=WHEN + dt.timedelta(minutes=i),
            actor="ap@acme.com",
            what="billing details",
            fields="VAT number\nPO number",
            change=BillGroupChange(
                what="billing details",
                page="/billing-details",
                changes=json.dumps(
                    [["VAT number", "GB123456789", "GB987654321"], ["PO number", None, "PO-7"]]
                ),
            ),
        )
        for i in range(2)
    ]

    def signin(link: str | None) -> Email:
        return render(
            "signin_link",
            "ap@acme.com",
            entity=entity,
            bill_group=group,
            link=link,
            code="1234-5678",
            minutes=15,
            portal_url=PORTAL,
        )

    payment = Payment(
        id=7,
        bill_group=group,
        amount_minor=12000,
        currency="GBP",
        status=PaymentStatus.SUCCEEDED,
        received_at=WHEN,
        reference="sandbox_ch_RECEIPT",
        method_description="Visa ending 4242",
        created_by="ap@acme.com",
    )
    payment.applications.append(
        PaymentApplication(
            invoice=Invoice(id=1, number="INV-0042"), invoice_id=1, amount_minor=12000
        )
    )

    business = Plan(
        name="Business", price_minor=24900, currency="GBP", period=BillingFrequency.MONTHLY
    )
    change = SubscriptionChangeRequest(
        bill_group=group,
        subscription=Subscription(plan=Plan(name="Team"), items=[]),
        kind=ChangeKind.PLAN,
        to_plan=business,
        state=RequestState.ACCEPTED,
        requested_by="ap@acme.com",
        answer_reason="From your next invoice",
    )

    reminded = BillGroup(
        id=42,
        name="Acme UK operations",
        public_id="PUBLICID",
        entity=entity,
        account=Account(name="Acme Ltd"),
        currency="GBP",
    )
    owed = Invoice(
        id=9,
        number="INV-0042",
        currency="GBP",
        status=InvoiceStatus.OPEN,
        issue_date=dt.date(2026, 11, 20),
        due_date=dt.date(2026, 12, 10),
        total_minor=12000,
        amount_paid_minor=2000,
        amount_credited_minor=0,
    )
    renewing = Subscription(
        id=5,
        plan=Plan(name="Team"),
        renewal_date=dt.date(2026, 12, 10),
        items=[
            SubscriptionItem(product=Product(name="Team seats"), quantity=3, unit_price_minor=4900)
        ],
    )

    def reminder(kind: ReminderKind, target: Invoice | Subscription) -> Email:
        return reminder_email(kind, reminded, target, "ap@acme.com")

    dispute = Dispute(
        bill_group=group,
        invoice=Invoice(id=42, number="INV-0042"),
        kind=DisputeKind.DISPUTE,
        reason="wrong_amount",
        state=DisputeState.RESOLVED,
        raised_by="ap@acme.com",
    )
    answered = DisputeMessage(
        author_type="staff",
        author="ops@northwind-cloud.com",
        body="We credited the 45 seats.\nThe credit note follows.",
    )

    examples = {
        "reminder_upcoming": Example(
            reminder(ReminderKind.UPCOMING, renewing),
            ("Team", "10 December 2026", "£147.00", f"{PORTAL}/subscriptions", *seller),
        ),
        "reminder_due_soon": Example(
            reminder(ReminderKind.DUE_SOON, owed),
            ("INV-0042", "10 December 2026", "£100.00", f"{PORTAL}/invoices/9", *seller),
        ),
        "reminder_overdue": Example(
            reminder(ReminderKind.OVERDUE, owed),
            ("INV-0042", "10 December 2026", "£100.00", f"{PORTAL}/invoices/9", *seller),
        ),
        "signin_link": Example(
            signin(link), (link, "1234-5678", "15 minutes", "Acme UK operations", *seller)
        ),
        "signin_code_only": Example(
            signin(None), ("1234-5678", "15 minutes", "Acme UK operations", *seller)
        ),
        "contact_named": Example(
            render(
                "contact_named",
                "new-ap@acme.com",
                entity=entity,
                bill_group=group,
                link=f"{PORTAL}/contact/confirm/TOKEN",
                hours=72,
            ),
            (f"{PORTAL}/contact/confirm/TOKEN", "72 hours", "Acme UK operations", *seller),
        ),
        "details_changed": Example(
            notice_email(group, "ap@acme.com", changes),
            (
                f"{PORTAL}/billing-details",
                f"{PORTAL}/billing-details/history",
                "03 December 2026 at 09:30",
                "VAT number, PO number",
                "GB123456789",
                "GB987654321",
                "ap@acme.com",
                *seller,
            ),
        ),
        "staff_second_factor": Example(
            render(
                "staff_second_factor",
                "ops@northwind-cloud.com",
                account="ops@northwind-cloud.com",
                change="reset",
                by="admin@northwind-cloud.com",
                when=WHEN,
                issuer="Northwind billing portal",
                sign_in_url="https://portal.example.test/admin/sign-in",
            ),
            (
                "https://portal.example.test/admin/sign-in",
                "admin@northwind-cloud.com",
                "03 December 2026 at 09:30",
                "Northwind billing portal",
            ),
        ),
        "bank_details_changed": Example(
            render(
                "bank_details_changed",
                "admin@northwind-cloud.com",
                account="admin@northwind-cloud.com",
                seller=SELLER,
                by="manager@northwind-cloud.com",
                when=WHEN,
                old_last4="3000",
                new_last4="0131",
                fields="IBAN, BIC",
                issuer="Northwind billing portal",
                sign_in_url="https://portal.example.test/admin/sign-in",
            ),
            (
                "https://portal.example.test/admin/sign-in",
                "manager@northwind-cloud.com",
                "03 December 2026 at 09:30",
                "ending 3000",
                "ending 0131",
                "IBAN, BIC",
                SELLER,
            ),
        ),
        "payment_receipt": Example(
            receipt_email(group, payment, "ap@acme.com"),
            (
                "£120.00",
                "sandbox_ch_RECEIPT",
                "INV-0042",
                "Visa ending 4242",
                "03 December 2026 at 09:30",
                f"{PORTAL}/payments",
                *seller,
            ),
        ),
        "invoice_copy_confirm": Example(
            render(
                "invoice_copy_confirm",
                "ap-inbox@acme.com",
                entity=entity,
                bill_group=group,
                added_by="cfo@acme.com",
                link=f"{PORTAL}/invoice-copies/confirm/TOKEN",
                hours=72,
            ),
            (
                f"{PORTAL}/invoice-copies/confirm/TOKEN",
                "72 hours",
                "cfo@acme.com",
                "Acme UK operations",
                *seller,
            ),
        ),
        "invoice_issued": Example(
            render(
                "invoice_issued",
                "ap-inbox@acme.com",
                attachments=(Attachment("INV-0042.pdf", "application/pdf", b"%PDF-1.4\n%%EOF\n"),),
                entity=entity,
                bill_group=group,
                invoice=Invoice(
                    number="INV-0042",
                    issue_date=dt.date(2026, 12, 1),
                    due_date=dt.date(2026, 12, 31),
                    total_minor=12000,
                    currency="GBP",
                ),
                added_by="cfo@acme.com",
                stop_url=f"{PORTAL}/invoice-copies/stop/TOKEN",
            ),
            (
                "INV-0042",
                "£120.00",
                "1 December 2026",
                "31 December 2026",
                "cfo@acme.com",
                f"{PORTAL}/invoice-copies/stop/TOKEN",
                *seller,
            ),
        ),
        "dispute_answered": Example(
            dispute_answer_email(dispute, answered, "ap@acme.com"),
            (
                "INV-0042",
                "We credited the 45 seats.",
                "resolved",
                f"{PORTAL}/invoices/42#thread",
                *seller,
            ),
        ),
        "subscription_change_answered": Example(
            answer_email(change, "en_GB"),
            (
                "Move to the Business plan",
                "£249.00",
                "From your next invoice",
                "Team",
                f"{PORTAL}/subscriptions",
                *seller,
            ),
        ),
    }
    return examples


# Mail to staff: no seller, so no Reply-To.
STAFF_KINDS = frozenset({"staff_second_factor", "bank_details_changed"})


def template_kinds() -> set[str]:
    return {folder.name for folder in TEMPLATES.iterdir() if folder.is_dir()}
