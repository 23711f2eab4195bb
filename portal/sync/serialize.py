"""Records as the billing system reads them: the JSON of the API's responses, of the
export, and of the objects inside webhook events. References are external ids."""

from __future__ import annotations

import datetime as dt
from typing import Any

from portal import links
from portal.models import (
    AccessRule,
    Account,
    BillGroup,
    Contact,
    CreditNote,
    Dispute,
    DisputeAttachment,
    DisputeMessage,
    Entity,
    Invoice,
    InvoiceCopyRecipient,
    Payment,
    PaymentMethod,
    Plan,
    Product,
    Subscription,
    SubscriptionChangeRequest,
)


def iso(value: dt.datetime | dt.date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return value.isoformat()


def _ref(record: Any) -> str | None:
    return None if record is None else record.external_id


def _stamps(record: Any) -> dict[str, Any]:
    return {"created_at": iso(record.created_at), "updated_at": iso(record.updated_at)}


def _columns(record: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The named attributes, as they are."""
    return {name: getattr(record, name) for name in names}


def entity(record: Entity) -> dict[str, Any]:
    return {
        "external_id": record.external_id,
        "name": record.name,
        "legal_name": record.legal_name,
        "support_email": record.support_email,
        "brand_colour": record.brand_colour,
        "address": record.address,
        "country": record.country,
        "vat_number": record.vat_number,
        **_stamps(record),
    }


def account(record: Account) -> dict[str, Any]:
    return {"external_id": record.external_id, "name": record.name, **_stamps(record)}


def bill_group(record: BillGroup, base_url: str) -> dict[str, Any]:
    return {
        "external_id": record.external_id,
        "account": _ref(record.account),
        "entity": _ref(record.entity),
        "name": record.name,
        "currency": record.currency,
        "billing_frequency": record.billing_frequency.value,
        "contract_start": iso(record.contract_start),
        "contract_end": iso(record.contract_end),
        "next_billing_date": iso(record.next_billing_date),
        "auto_pay": record.auto_pay,
        "portal_enabled": record.portal_enabled,
        "po_number": record.po_number,
        "vat_number": record.vat_number,
        "registration_number": record.registration_number,
        "portal_url": links.portal_url(record, base_url=base_url),
        **_stamps(record),
    }


CONTACT_FIELDS = (
    "name",
    "company",
    "email",
    "phone",
    "line1",
    "line2",
    "city",
    "region",
    "postal_code",
    "country",
)


def contact(record: Contact) -> dict[str, Any]:
    return {
        "bill_group": _ref(record.bill_group),
        "kind": record.kind.value,
        **_columns(record, CONTACT_FIELDS),
        **_stamps(record),
    }


def product(record: Product) -> dict[str, Any]:
    return {
        "external_id": record.external_id,
        "entity": _ref(record.entity),
        **_columns(record, ("name", "description", "sku")),
        **_stamps(record),
    }


def subscription(record: Subscription) -> dict[str, Any]:
    return {
        "external_id": record.external_id,
        "bill_group": _ref(record.bill_group),
        "status": record.status.value,
        "period": record.period.value,
        "start_date": iso(record.start_date),
        "renewal_date": iso(record.renewal_date),
        "end_date": iso(record.end_date),
        "items": [
            {
                "product": _ref(item.product),
                "product_name": item.product.name,
                "quantity": item.quantity,
                "unit_price_minor": item.unit_price_minor,
                "amount_minor": item.amount_minor,
            }
            for item in record.items
        ],
        "amount_per_period_minor": record.amount_per_period_minor,
        "plan": _ref(record.plan),
        "quantity": record.quantity,
        "trial_end": iso(record.trial_end),
        "allowed_changes": allowed_changes(record),
        **_stamps(record),
    }


def allowed_changes(record: Subscription) -> dict[str, Any]:
    """What the customer may ask for, as the billing system sent it (the seller's
    switches per entity may still turn a kind off)."""
    return {
        "plans": [plan.external_id for plan in record.allowed_plans if plan.external_id],
        "quantity_min": record.quantity_min,
        "quantity_max": record.quantity_max,
        "cancel_now": record.allow_cancel_now,
        "cancel_at_term_end": record.allow_cancel_at_term_end,
        "pause": record.allow_pause,
        "resume": record.allow_resume,
        "convert_trial": record.allow_convert_trial,
        "extend_trial": record.allow_extend_trial,
    }


def plan(record: Plan) -> dict[str, Any]:
    return {
        "external_id": record.external_id,
        "entity": _ref(record.entity),
        "name": record.name,
        "description": record.description,
        "price_minor": record.price_minor,
        "currency": record.currency,
        "period": record.period.value,
        **_stamps(record),
    }


def _plan_side(found: Plan | None, quantity: int | None) -> dict[str, Any]:
    return {
        "plan": _ref(found),
        "plan_name": None if found is None else found.name,
        "price_minor": None if found is None else found.price_minor,
        "currency": None if found is None else found.currency,
        "period": None if found is None else found.period.value,
        "quantity": quantity,
    }


def subscription_change_request(record: SubscriptionChangeRequest) -> dict[str, Any]:
    """A change a customer asked for: what the subscription was, what they asked for,
    and the answer once there is one."""
    return {
        "id": record.id,
        "subscription": _ref(record.subscription),
        "bill_group": _ref(record.bill_group),
        "kind": record.kind.value,
        "state": record.state.value,
        "current": _plan_side(record.from_plan, record.from_quantity),
        "requested": _plan_side(record.to_plan, record.to_quantity),
        "reason": record.reason,
        "comment": record.comment,
        "requested_by": record.requested_by,
        "answered_by": record.answered_by,
        "answer_reason": record.answer_reason,
        "answered_at": iso(record.answered_at),
        **_stamps(record),
    }


def invoice(record: Invoice, today: dt.date) -> dict[str, Any]:
    return {
        "external_id": record.external_id,
        "bill_group": _ref(record.bill_group),
        "number": record.number,
        "currency": record.currency,
        "status": record.status.value,
        "display_status": record.display_status(today).value,
        "issue_date": iso(record.issue_date),
        "due_date": iso(record.due_date),
        "period_start": iso(record.period_start),
        "period_end": iso(record.period_end),
        "subtotal_minor": record.subtotal_minor,
        "tax_minor": record.tax_minor,
        "total_minor": record.total_minor,
        "amount_paid_minor": record.amount_paid_minor,
        "balance_minor": record.balance_minor,
        "po_number": record.po_number,
        "memo": record.memo,
        "lines": [
            {
                "description": line.description,
                # A string, so 0.1 stays 0.1: JSON numbers are binary floats to many readers.
                "quantity": format(line.quantity.normalize(), "f"),
                "unit_price_minor": line.unit_price_minor,
                "amount_minor": line.amount_minor,
                "tax_rate_bp": line.tax_rate_bp,
                "tax_minor": line.tax_minor,
                "product": _ref(line.product),
                "period_start": iso(line.period_start),
                "period_end": iso(line.period_end),
            }
            for line in record.lines
        ],
        **_stamps(record),
    }


def payment(record: Payment) -> dict[str, Any]:
    return {
        "external_id": record.external_id,
        "bill_group": _ref(record.bill_group),
        "amount_minor": record.amount_minor,
        "currency": record.currency,
        "status": record.status.value,
        "received_at": iso(record.received_at),
        "method_description": record.method_description,
        "reference": record.reference,
        "payment_method": _ref(record.payment_method),
        "source": record.source.value,
        "gateway": record.gateway,
        "gateway_reference": record.gateway_reference,
        "failure_message": record.failure_message,
        "refunded_minor": record.refunded_minor,
        "created_by": record.created_by,
        "applications": [
            {"invoice": _ref(application.invoice), "amount_minor": application.amount_minor}
            for application in sorted(record.applications, key=lambda a: a.invoice_id)
        ],
        **_stamps(record),
    }


def credit_note(record: CreditNote) -> dict[str, Any]:
    return {
        "external_id": record.external_id,
        "bill_group": _ref(record.bill_group),
        "number": record.number,
        "currency": record.currency,
        "issue_date": iso(record.issue_date),
        "amount_minor": record.amount_minor,
        "amount_applied_minor": record.amount_applied_minor,
        "remaining_minor": record.remaining_minor,
        "reason": record.reason,
        "voided": record.voided_at is not None,
        "voided_at": iso(record.voided_at),
        **_stamps(record),
    }


def payment_method(record: PaymentMethod) -> dict[str, Any]:
    return {
        "external_id": record.external_id,
        "bill_group": _ref(record.bill_group),
        "type": record.type.value,
        "brand": record.brand,
        "last4": record.last4,
        "exp_month": record.exp_month,
        "exp_year": record.exp_year,
        "holder_name": record.holder_name,
        "gateway": record.gateway,
        "gateway_token": record.gateway_token,
        "is_default": record.is_default,
        **_stamps(record),
    }


def access_rule(record: AccessRule) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind.value,
        "value": record.value,
        "label": record.label,
        "include_subdomains": record.include_subdomains,
        "role": record.role.value,
        "created_by": record.created_by,
        "created_at": iso(record.created_at),
    }


def invoice_copy_recipient(record: InvoiceCopyRecipient) -> dict[str, Any]:
    return {
        "id": record.id,
        "email": record.email,
        "status": record.status,
        "added_by": record.added_by,
        "created_at": iso(record.created_at),
        "confirmed_at": iso(record.confirmed_at),
    }


def dispute_attachment(record: DisputeAttachment) -> dict[str, Any]:
    return {
        "id": record.id,
        "filename": record.filename,
        "content_type": record.content_type,
        "size": record.size,
        "sha256": record.sha256,
    }


def dispute_message(record: DisputeMessage) -> dict[str, Any]:
    return {
        "id": record.id,
        "author_type": record.author_type,
        "author": record.author,
        "body": record.body,
        "attachment": None if record.attachment is None else dispute_attachment(record.attachment),
        "created_at": iso(record.created_at),
    }


def dispute(record: Dispute) -> dict[str, Any]:
    """A question or dispute on an invoice, with its whole thread (files by reference)."""
    return {
        "id": record.id,
        "bill_group": _ref(record.bill_group),
        "invoice": _ref(record.invoice),
        "invoice_number": record.invoice.number,
        "kind": record.kind.value,
        "reason": record.reason,
        "state": record.state.value,
        "raised_by": record.raised_by,
        "resolved_by": record.resolved_by,
        "resolved_at": iso(record.resolved_at),
        "messages": [dispute_message(message) for message in record.messages],
        **_stamps(record),
    }
