"""The OpenAPI 3.1 document, served at /api/v1/openapi.json.

Request schemas are the pydantic models the API validates with (portal.sync.schemas);
response schemas are the models below, written to match portal.sync.serialize. They
forbid extra fields, and tests/api validates every response the suite receives against
this document, so the document cannot drift from what the API does.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any, Literal

from flask import Response, jsonify
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from api.base import CURSOR_PATTERN, DEFAULT_LIMIT, ERROR_CODES, MAX_LIMIT, PREFIX, bp
from portal import webhooks
from portal.sync import schemas
from portal.web import MAX_ID


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Stamped(Out):
    created_at: dt.datetime
    updated_at: dt.datetime


class Entity(Stamped):
    external_id: str | None
    name: str
    legal_name: str | None
    support_email: str
    brand_colour: str
    address: str | None
    country: str | None
    vat_number: str | None


class Account(Stamped):
    external_id: str | None
    name: str


class BillGroup(Stamped):
    external_id: str | None
    account: str | None
    entity: str | None
    name: str
    currency: str
    billing_frequency: Literal["monthly", "quarterly", "semiannual", "annual"]
    contract_start: dt.date
    contract_end: dt.date | None
    next_billing_date: dt.date | None
    auto_pay: bool
    portal_enabled: bool
    po_number: str | None
    vat_number: str | None
    registration_number: str | None
    portal_url: str


class Contact(Stamped):
    bill_group: str | None
    kind: Literal["billing", "shipping"]
    name: str
    company: str | None
    email: str | None
    phone: str | None
    line1: str | None
    line2: str | None
    city: str | None
    region: str | None
    postal_code: str | None
    country: str | None


class Product(Stamped):
    external_id: str | None
    entity: str | None
    name: str
    description: str | None
    sku: str | None


class Plan(Stamped):
    external_id: str | None
    entity: str | None
    name: str
    description: str | None
    price_minor: int
    currency: str
    period: Literal["monthly", "quarterly", "semiannual", "annual"]


class AllowedChanges(Out):
    plans: list[str]
    quantity_min: int | None
    quantity_max: int | None
    cancel_now: bool
    cancel_at_term_end: bool
    pause: bool
    resume: bool
    convert_trial: bool
    extend_trial: bool


class ChangeSide(Out):
    """A subscription's plan and quantity: as it was when asked, or as asked for."""

    plan: str | None
    plan_name: str | None
    price_minor: int | None
    currency: str | None
    period: Literal["monthly", "quarterly", "semiannual", "annual"] | None
    quantity: int | None


class SubscriptionChangeRequest(Stamped):
    id: int
    subscription: str | None
    bill_group: str | None
    kind: Literal[
        "plan",
        "quantity",
        "pause",
        "resume",
        "convert_trial",
        "extend_trial",
        "cancel_at_term_end",
        "cancel_now",
    ]
    state: Literal["requested", "accepted", "refused"]
    current: ChangeSide
    requested: ChangeSide
    reason: Literal["too_expensive", "not_using", "missing_features", "switching", "other"] | None
    comment: str | None
    requested_by: str
    answered_by: str | None
    answer_reason: str | None
    answered_at: dt.datetime | None


class DisputeAttachment(Out):
    id: int
    filename: str
    content_type: Literal["application/pdf", "image/png", "image/jpeg", "image/webp"]
    size: int
    sha256: str


class DisputeMessage(Out):
    id: int
    author_type: Literal["customer", "staff", "api"]
    author: str
    body: str
    attachment: DisputeAttachment | None
    created_at: dt.datetime


class Dispute(Stamped):
    id: int
    bill_group: str | None
    invoice: str | None
    invoice_number: str
    kind: Literal["question", "dispute"]
    reason: (
        Literal["wrong_amount", "not_received", "duplicate", "cancelled_service", "other"] | None
    )
    state: Literal["open", "resolved"]
    raised_by: str
    resolved_by: str | None
    resolved_at: dt.datetime | None
    messages: list[DisputeMessage]


class SubscriptionItem(Out):
    product: str | None
    product_name: str
    quantity: int
    unit_price_minor: int
    amount_minor: int


class Subscription(Stamped):
    external_id: str | None
    bill_group: str | None
    status: Literal["trialing", "active", "past_due", "paused", "cancelled"]
    period: Literal["monthly", "quarterly", "semiannual", "annual"]
    start_date: dt.date
    renewal_date: dt.date | None
    end_date: dt.date | None
    items: list[SubscriptionItem]
    amount_per_period_minor: int
    plan: str | None
    quantity: int | None
    trial_end: dt.date | None
    allowed_changes: AllowedChanges


class InvoiceLine(Out):
    description: str
    quantity: str
    unit_price_minor: int
    amount_minor: int
    tax_rate_bp: int
    tax_minor: int
    product: str | None
    period_start: dt.date | None
    period_end: dt.date | None


class Invoice(Stamped):
    external_id: str | None
    bill_group: str | None
    number: str
    currency: str
    status: Literal["draft", "open", "paid", "void"]
    display_status: Literal["draft", "open", "overdue", "paid", "void"]
    issue_date: dt.date
    due_date: dt.date
    period_start: dt.date | None
    period_end: dt.date | None
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    amount_paid_minor: int
    balance_minor: int
    po_number: str | None
    memo: str | None
    lines: list[InvoiceLine]


class PaymentApplication(Out):
    invoice: str | None
    amount_minor: int


class Payment(Stamped):
    external_id: str | None
    bill_group: str | None
    amount_minor: int
    currency: str
    status: Literal["succeeded", "pending", "failed", "refunded"]
    received_at: dt.datetime
    method_description: str | None
    reference: str | None
    payment_method: str | None
    source: Literal["billing_system", "portal", "autopay"]
    gateway: str | None
    gateway_reference: str | None
    failure_message: str | None
    refunded_minor: int
    created_by: str | None
    applications: list[PaymentApplication]


class PaymentMethod(Stamped):
    external_id: str | None
    bill_group: str | None
    type: Literal["card", "sepa_debit", "us_bank_account"]
    brand: str | None
    last4: str
    exp_month: int | None
    exp_year: int | None
    holder_name: str | None
    gateway: str
    gateway_token: str
    is_default: bool


class CreditNote(Stamped):
    external_id: str | None
    bill_group: str | None
    number: str
    currency: str
    issue_date: dt.date
    amount_minor: int
    amount_applied_minor: int
    remaining_minor: int
    reason: str | None
    voided: bool
    voided_at: dt.datetime | None


class AccessRule(Out):
    id: int
    kind: Literal["domain", "email"]
    value: str
    label: str
    include_subdomains: bool
    role: Literal["viewer", "billing_manager"]
    created_by: str
    created_at: dt.datetime


class InvoiceCopyRecipient(Out):
    id: int
    email: str
    status: Literal["pending", "confirmed"]
    added_by: str
    created_at: dt.datetime
    confirmed_at: dt.datetime | None


class PortalLink(Out):
    url: str
    available: bool
    portal_enabled: bool
    contract_active: bool


class PortalSession(Out):
    url: str
    expires_at: dt.datetime


class ErrorItem(Out):
    field: str | None
    message: str


class ErrorBody(Out):
    code: str
    message: str
    field: str | None
    errors: list[ErrorItem] | None = None


class Error(Out):
    error: ErrorBody


RECORDS: dict[str, type[Out]] = {
    "entities": Entity,
    "accounts": Account,
    "bill-groups": BillGroup,
    "products": Product,
    "plans": Plan,
    "subscriptions": Subscription,
    "invoices": Invoice,
    "payments": Payment,
    "payment-methods": PaymentMethod,
    "credit-notes": CreditNote,
}
FILTERS = {
    "bill-groups": ["account"],
    "subscriptions": ["bill_group"],
    "invoices": ["bill_group"],
    "payments": ["bill_group"],
    "payment-methods": ["bill_group"],
    "credit-notes": ["bill_group"],
}
OUTPUTS: list[type[Out]] = [
    *RECORDS.values(),
    Contact,
    AccessRule,
    InvoiceCopyRecipient,
    PortalLink,
    PortalSession,
    SubscriptionChangeRequest,
    Dispute,
    Error,
]
INPUTS: list[type[BaseModel]] = [
    *schemas.UPSERT_BODIES.values(),
    schemas.ContactIn,
    schemas.AccessRuleIn,
    schemas.AccessRuleChange,
    schemas.PortalSessionIn,
    schemas.ChangeAcceptIn,
    schemas.ChangeRefuseIn,
    schemas.DisputeAnswerIn,
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _list_of(name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["data", "next_cursor"],
        "properties": {
            "data": {"type": "array", "items": _ref(name)},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as ?cursor= for the next page; null on the last.",
            },
        },
    }


def _feed_of(name: str) -> dict[str, Any]:
    """A list that is a change feed: a page of it also says where to resume."""
    listed = _list_of(name)
    resume = {
        "type": "string",
        "description": (
            "Always set, even on an empty page: keep it and pass it as ?cursor= on your "
            "next poll to read every change committed since, in commit order. The same "
            "as next_cursor while more rows are waiting."
        ),
    }
    return listed | {
        "required": [*listed["required"], "resume_cursor"],
        "properties": listed["properties"] | {"resume_cursor": resume},
    }


ERROR_DESCRIPTIONS = {
    400: "Bad request: a query parameter, or a body that is not JSON, UTF-8 or clean text",
    404: "Not found",
    409: "Conflict with another record, or with the record's current state",
    413: "The request body is larger than the portal accepts",
    415: "The body is not sent as application/json",
    422: (
        "The body breaks a rule: one the schema states, or one it cannot (a reference to a "
        "record that does not exist, a VAT number's check digits, an address the email rules "
        "refuse, dates or totals that do not agree)"
    ),
    429: "Too many requests from this key, or too many failed keys from this client",
    503: "The portal's database is unavailable; retry later",
}
HEADERS: dict[str, dict[str, Any]] = {
    "Location": {
        "description": "Where the new record is read from (a path under the API).",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds until the budget that was spent has room again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in statuses:
        description = ERROR_DESCRIPTIONS.get(status, ERROR_CODES[status].replace("_", " "))
        responses[str(status)] = {"description": description, **_json(_ref("Error"))}
        if status == 429:
            responses[str(status)]["headers"] = {"Retry-After": HEADERS["Retry-After"]}
    return responses


def _created(schema: str) -> dict[str, Any]:
    return {
        "description": "Created",
        "headers": {"Location": {**HEADERS["Location"], "required": True}},
        **_json(_ref(schema)),
    }


# Every operation can meet a query string with control characters (400), a body that is
# too large, cut short or compressed (413, 400, 415: bodies are read whole before any
# view, portal.bodies), a key that is missing, wrong or short of a scope, a spent
# budget, and a database that is down.
READ_ERRORS = (400, 401, 403, 413, 415, 429, 503)
WRITE_ERRORS = (*READ_ERRORS, 404, 409, 422)
EXTERNAL_ID = {
    "name": "external_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": schemas.EXTERNAL_ID_PATTERN},
    "description": "The billing system's own id for the record.",
}
KIND = {
    "name": "kind",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": list(schemas.CONTACT_KINDS)},
}
LIST_PARAMETERS = [
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    {
        "name": "cursor",
        "in": "query",
        "schema": {"type": "string", "pattern": CURSOR_PATTERN},
        "description": (
            "Where to continue: a next_cursor or resume_cursor from this list "
            "(empty: the first page)."
        ),
    },
    {
        "name": "updated_since",
        "in": "query",
        "schema": {"type": "string", "format": "date-time"},
        "description": (
            "Only records changed at or after this time (ISO 8601 with a zone): a place "
            "to start. Resume with resume_cursor, not with a time: a change stamped "
            "earlier can commit later."
        ),
    },
]


def _filter(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "schema": {"type": "string", "pattern": schemas.EXTERNAL_ID_PATTERN},
        "description": (
            f"Only records of the {name.replace('_', ' ')} with this external id "
            "(none, when there is no such record)."
        ),
    }


def _operation(
    operation_id: str,
    summary: str,
    scope: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    request: str | None = None,
    tag: str,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "description": f"Needs an API key with the `{scope}` scope.",
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if request:
        operation["requestBody"] = {"required": True, **_json(_ref(request))}
    return operation


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", " ").split())


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for name, out in RECORDS.items():
        schema, tag, camel = out.__name__, name, _camel(name)
        body = schemas.UPSERT_BODIES[name].__name__
        paths[f"/{name}"] = {
            "get": _operation(
                f"list{camel}",
                f"List {name.replace('-', ' ')}, oldest change first",
                "read",
                {
                    "200": {"description": "A page", **_json(_feed_of(schema))},
                    **_errors(*READ_ERRORS),
                },
                parameters=[*LIST_PARAMETERS, *(_filter(f) for f in FILTERS.get(name, []))],
                tag=tag,
            )
        }
        paths[f"/{name}/{{external_id}}"] = {
            "get": _operation(
                f"get{schema}",
                f"Read one {schema}",
                "read",
                {
                    "200": {"description": "The record", **_json(_ref(schema))},
                    **_errors(404, *READ_ERRORS),
                },
                parameters=[EXTERNAL_ID],
                tag=tag,
            ),
            "put": _operation(
                f"put{schema}",
                f"Create or update a {schema} by external id (idempotent)",
                "write",
                {
                    "200": {"description": "Updated (or unchanged)", **_json(_ref(schema))},
                    "201": _created(schema),
                    **_errors(*WRITE_ERRORS),
                },
                parameters=[EXTERNAL_ID],
                request=body,
                tag=tag,
            ),
        }
    paths["/invoices/{external_id}/pdf"] = {
        "get": _operation(
            "getInvoicePdf",
            "The invoice as a PDF",
            "read",
            {
                "200": {
                    "description": "The PDF",
                    "content": {
                        "application/pdf": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
                **_errors(404, *READ_ERRORS),
            },
            parameters=[EXTERNAL_ID],
            tag="invoices",
        )
    }
    paths["/bill-groups/{external_id}/portal-link"] = {
        "get": _operation(
            "getPortalLink",
            "The bill group's portal link, to send to the customer",
            "read",
            {
                "200": {"description": "The link", **_json(_ref("PortalLink"))},
                **_errors(404, *READ_ERRORS),
            },
            parameters=[EXTERNAL_ID],
            tag="bill-groups",
        )
    }
    paths["/contacts"] = {
        "get": _operation(
            "listContacts",
            "List contacts, oldest change first: what customers changed",
            "read",
            {
                "200": {"description": "A page", **_json(_feed_of("Contact"))},
                **_errors(*READ_ERRORS),
            },
            parameters=[*LIST_PARAMETERS, _filter("bill_group")],
            tag="contacts",
        )
    }
    paths["/bill-groups/{external_id}/contacts"] = {
        "get": _operation(
            "listBillGroupContacts",
            "The bill group's billing and shipping contacts",
            "read",
            {
                "200": {"description": "The contacts", **_json(_list_of("Contact"))},
                **_errors(404, *READ_ERRORS),
            },
            parameters=[EXTERNAL_ID],
            tag="contacts",
        )
    }
    paths["/bill-groups/{external_id}/contacts/{kind}"] = {
        "get": _operation(
            "getContact",
            "One contact of the bill group",
            "read",
            {
                "200": {"description": "The contact", **_json(_ref("Contact"))},
                **_errors(404, *READ_ERRORS),
            },
            parameters=[EXTERNAL_ID, KIND],
            tag="contacts",
        ),
        "put": _operation(
            "putContact",
            "Create or replace the contact (the customer's form rules apply)",
            "write",
            {
                "200": {"description": "Updated (or unchanged)", **_json(_ref("Contact"))},
                "201": _created("Contact"),
                **_errors(*WRITE_ERRORS),
            },
            parameters=[EXTERNAL_ID, KIND],
            request="ContactIn",
            tag="contacts",
        ),
    }
    rule_id = {
        "name": "rule_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
    }
    paths["/bill-groups/{external_id}/access-rules"] = {
        "get": _operation(
            "listAccessRules",
            "Who may sign in to the bill group's portal",
            "read",
            {
                "200": {"description": "The rules", **_json(_list_of("AccessRule"))},
                **_errors(404, *READ_ERRORS),
            },
            parameters=[EXTERNAL_ID],
            tag="access-rules",
        ),
        "post": _operation(
            "createAccessRule",
            "Add one domain or address rule; overlaps are refused with 409",
            "write",
            {
                "201": {**_created("AccessRule"), "description": "Added"},
                **_errors(*WRITE_ERRORS),
            },
            parameters=[EXTERNAL_ID],
            request="AccessRuleIn",
            tag="access-rules",
        ),
    }
    paths["/bill-groups/{external_id}/access-rules/{rule_id}"] = {
        "delete": _operation(
            "deleteAccessRule",
            "Remove a rule; anyone it let in is signed out at their next request",
            "write",
            {"204": {"description": "Removed"}, **_errors(404, *READ_ERRORS)},
            parameters=[EXTERNAL_ID, rule_id],
            tag="access-rules",
        ),
    }
    paths["/bill-groups/{external_id}/access-rules/{rule_id}/role"] = {
        "put": _operation(
            "changeAccessRuleRole",
            "Give a rule another customer role; it applies at the next request of anyone it admits",
            "write",
            {
                "200": {"description": "The rule as changed", **_json(_ref("AccessRule"))},
                **_errors(*WRITE_ERRORS),
            },
            parameters=[EXTERNAL_ID, rule_id],
            request="AccessRuleChange",
            tag="access-rules",
        ),
    }
    paths["/bill-groups/{external_id}/invoice-copy-recipients"] = {
        "get": _operation(
            "listInvoiceCopyRecipients",
            "The extra addresses the customer added to receive the bill group's invoices "
            "(no portal access); only confirmed ones are sent invoice copies",
            "read",
            {
                "200": {
                    "description": "The recipients, oldest first",
                    **_json(_list_of("InvoiceCopyRecipient")),
                },
                **_errors(404, *READ_ERRORS),
            },
            parameters=[EXTERNAL_ID],
            tag="bill-groups",
        )
    }
    paths["/portal-sessions"] = {
        "post": _operation(
            "createPortalSession",
            "A one-time link that signs your customer in to a bill group's portal",
            "sessions",
            {
                "201": {
                    "description": (
                        "Made: send the customer's browser to `url` within five minutes "
                        "(it works once). 422 when no access rule admits the address (the "
                        "message says why), the path is not a page of that portal, or the "
                        "return_url's origin is not allowed."
                    ),
                    **_json(_ref("PortalSession")),
                },
                **_errors(*READ_ERRORS, 422),
            },
            request="PortalSessionIn",
            tag="portal-sessions",
        )
    }
    _change_request_paths(paths)
    _dispute_paths(paths)
    return paths


REQUEST_ID = {
    "name": "request_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
    "description": "The portal's id of the change request (in its webhook and the list).",
}


def _change_request_paths(paths: dict[str, Any]) -> None:
    """What customers asked to change on their subscriptions, and the answers."""
    tag = "subscription-change-requests"
    state = {
        "name": "state",
        "in": "query",
        "schema": {"type": "string", "enum": ["requested", "accepted", "refused"]},
        "description": "Only requests in this state (requested: waiting for an answer).",
    }
    paths["/subscription-change-requests"] = {
        "get": _operation(
            "listSubscriptionChangeRequests",
            "List change requests, oldest change first: poll for those waiting",
            "read",
            {
                "200": {"description": "A page", **_json(_feed_of("SubscriptionChangeRequest"))},
                **_errors(*READ_ERRORS),
            },
            parameters=[*LIST_PARAMETERS, state, _filter("bill_group")],
            tag=tag,
        )
    }
    paths["/subscription-change-requests/{request_id}"] = {
        "get": _operation(
            "getSubscriptionChangeRequest",
            "Read one change request",
            "read",
            {
                "200": {"description": "The request", **_json(_ref("SubscriptionChangeRequest"))},
                **_errors(404, *READ_ERRORS),
            },
            parameters=[REQUEST_ID],
            tag=tag,
        )
    }
    for verb, body, summary in (
        (
            "accept",
            "ChangeAcceptIn",
            "Accept the change (once); optionally send the subscription as it now is",
        ),
        ("refuse", "ChangeRefuseIn", "Refuse the change (once), with a reason for the customer"),
    ):
        paths[f"/subscription-change-requests/{{request_id}}/{verb}"] = {
            "post": _operation(
                f"{verb}SubscriptionChangeRequest",
                summary,
                "write",
                {
                    "200": {
                        "description": "Answered; the customer is emailed the answer",
                        **_json(_ref("SubscriptionChangeRequest")),
                    },
                    **_errors(*WRITE_ERRORS),
                },
                parameters=[REQUEST_ID],
                request=body,
                tag=tag,
            )
        }


def _id_parameter(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        "description": what,
    }


def _dispute_paths(paths: dict[str, Any]) -> None:
    """Questions and disputes customers raised on invoices, their threads, and answers."""
    tag = "disputes"
    dispute_id = _id_parameter("dispute_id", "The portal's id of the dispute.")
    state = {
        "name": "state",
        "in": "query",
        "schema": {"type": "string", "enum": ["open", "resolved"]},
        "description": "Only disputes in this state (open: waiting for an answer).",
    }
    paths["/disputes"] = {
        "get": _operation(
            "listDisputes",
            "List questions and disputes with their messages, oldest change first",
            "read",
            {
                "200": {"description": "A page", **_json(_feed_of("Dispute"))},
                **_errors(*READ_ERRORS),
            },
            parameters=[*LIST_PARAMETERS, state, _filter("bill_group"), _filter("invoice")],
            tag=tag,
        )
    }
    paths["/disputes/{dispute_id}"] = {
        "get": _operation(
            "getDispute",
            "Read one question or dispute with its messages",
            "read",
            {
                "200": {"description": "The dispute", **_json(_ref("Dispute"))},
                **_errors(404, *READ_ERRORS),
            },
            parameters=[dispute_id],
            tag=tag,
        )
    }
    paths["/disputes/{dispute_id}/attachments/{attachment_id}"] = {
        "get": _operation(
            "getDisputeAttachment",
            "A file of the thread, as checked and kept (PDF or image)",
            "read",
            {
                "200": {
                    "description": "The file, as an attachment",
                    "content": {
                        kind: {"schema": {"type": "string", "format": "binary"}}
                        for kind in ("application/pdf", "image/png", "image/jpeg", "image/webp")
                    },
                },
                **_errors(404, *READ_ERRORS),
            },
            parameters=[dispute_id, _id_parameter("attachment_id", "The attachment's id.")],
            tag=tag,
        )
    }
    paths["/disputes/{dispute_id}/answer"] = {
        "post": _operation(
            "answerDispute",
            "Answer an open question or dispute, and resolve it or keep it open",
            "write",
            {
                "200": {
                    "description": "Answered; the customer is emailed the answer",
                    **_json(_ref("Dispute")),
                },
                **_errors(*WRITE_ERRORS),
            },
            parameters=[dispute_id],
            request="DisputeAnswerIn",
            tag=tag,
        )
    }


# --- webhooks ----------------------------------------------------------------------------

# What each event's data.object is (portal.events): the record as the API serialises it.
EVENT_OBJECTS: dict[str, dict[str, Any]] = {
    "portal.signed_in": {"type": "null"},
    "contact.updated": _ref("Contact"),
    "billing_details.updated": _ref("BillingDetails"),
    "payment_method.added": _ref("PaymentMethod"),
    "payment_method.default_changed": _ref("PaymentMethod"),
    "access_rule.created": _ref("AccessRule"),
    "access_rule.updated": _ref("AccessRule"),
    "access_rule.deleted": _ref("AccessRule"),
    "payment.succeeded": _ref("Payment"),
    "payment.failed": _ref("Payment"),
    "autopay.changed": _ref("AutoPay"),
    "credit.applied": _ref("CreditApplied"),
    "subscription.change_requested": _ref("SubscriptionChangeRequest"),
    "dispute.opened": _ref("Dispute"),
    "dispute.replied": _ref("Dispute"),
    "dispute.answered": _ref("Dispute"),
    "dispute.resolved": _ref("Dispute"),
}
EVENT_SUMMARIES = {
    "portal.signed_in": "A customer signed in to a bill group's portal",
    "contact.updated": "A billing or shipping contact was created or changed",
    "billing_details.updated": "The PO, VAT or registration number changed",
    "payment_method.added": "A payment method was added",
    "payment_method.default_changed": "Another payment method became the default",
    "access_rule.created": "An access rule was added",
    "access_rule.updated": 'An access rule\'s customer role changed (`changed` is ["role"])',
    "access_rule.deleted": "An access rule was removed (the rule as it was)",
    "payment.succeeded": "A customer paid in the portal (the payment and what it paid)",
    "payment.failed": "A customer's payment in the portal was declined (nothing applied)",
    "autopay.changed": "Automatic payment was turned on or off for the bill group",
    "credit.applied": "A customer applied a credit note or an unapplied payment to an invoice",
    "subscription.change_requested": (
        "A customer asked for a change to a subscription: accept or refuse it with "
        "POST /subscription-change-requests/{id}/accept or /refuse"
    ),
    "dispute.opened": (
        "A customer asked a question about an invoice or disputed it: answer with "
        "POST /disputes/{id}/answer"
    ),
    "dispute.replied": "The customer wrote again on an open question or dispute",
    "dispute.answered": "Staff or the billing system answered a question or dispute",
    "dispute.resolved": "A question or dispute was resolved (the invoice is no longer in dispute)",
}


class BillingDetails(Out):
    po_number: str | None
    vat_number: str | None
    registration_number: str | None


class EventBillGroup(Out):
    external_id: str | None
    name: str
    public_id: str


class PersonActor(Out):
    type: Literal["customer", "staff"]
    email: str


class KeyActor(Out):
    type: Literal["api"]
    key: str


class NamedActor(Out):
    type: Literal["import", "system"]
    name: str


class AutoPay(Out):
    auto_pay: bool
    next_billing_date: dt.date | None
    payment_method: PaymentMethod | None


class CreditApplied(Out):
    source: Literal["credit_note", "payment"]
    amount_minor: int
    currency: str
    credit_note: CreditNote | None
    payment: Payment | None
    invoice: Invoice


EVENT_PARTS: list[type[Out]] = [
    BillingDetails,
    EventBillGroup,
    PersonActor,
    KeyActor,
    NamedActor,
    AutoPay,
    CreditApplied,
]


def _event_schema(event_type: str) -> dict[str, Any]:
    """The payload portal.webhooks.emit sends for this event type."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "type", "api_version", "created_at", "data"],
        "properties": {
            "id": {
                "type": "string",
                "pattern": "^evt_[0-9a-f]{24}$",
                "description": "The same on every retry and resend: deduplicate by it.",
            },
            "type": {"const": event_type},
            "api_version": {"const": "v1"},
            "created_at": {"type": "string", "format": "date-time"},
            "data": {
                "type": "object",
                "additionalProperties": False,
                "required": ["actor", "object"],
                "properties": {
                    "actor": {"oneOf": [_ref("PersonActor"), _ref("KeyActor"), _ref("NamedActor")]},
                    "object": EVENT_OBJECTS[event_type],
                    "bill_group": _ref("EventBillGroup"),
                    "changed": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "The fields that changed.",
                    },
                },
            },
        },
    }


def _webhooks() -> dict[str, Any]:
    headers = [
        {
            "name": webhooks.SIGNATURE_HEADER,
            "in": "header",
            "required": True,
            "schema": {"type": "string", "pattern": "^t=[0-9]+,v1=[0-9a-f]{64}$"},
            "description": (
                "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>' keyed with the "
                "endpoint's secret>. Reject a t more than "
                f"{webhooks.REPLAY_WINDOW} seconds away from your clock."
            ),
        },
        {"name": "Portal-Event-Id", "in": "header", "required": True, "schema": {"type": "string"}},
        {
            "name": "Portal-Event-Type",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "enum": list(webhooks.EVENT_TYPES)},
        },
    ]
    return {
        event_type: {
            "post": {
                "operationId": f"webhook_{event_type.replace('.', '_')}",
                "summary": EVENT_SUMMARIES[event_type],
                "description": (
                    "POSTed to each endpoint subscribed to this event, signed; retried with "
                    "backoff until the endpoint answers 2xx."
                ),
                "parameters": headers,
                "requestBody": {"required": True, **_json(_event_schema(event_type))},
                "responses": {"2XX": {"description": "Received; any other answer is retried"}},
            }
        }
        for event_type in webhooks.EVENT_TYPES
    }


# --- links, for clients and for stateful testing -----------------------------------------

_SAME_ID = {"external_id": "$request.path.external_id"}


def _link(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": parameters, "description": description}


def _child(operation_id: str, field: str, what: str) -> dict[str, Any]:
    """A link to writing a record that refers to this one by `field` in its body."""
    return {
        "operationId": operation_id,
        "requestBody": {field: "$request.path.external_id"},
        "description": f"Write {what} that belongs to it",
    }


# Records whose body names a parent by external id: parent resource -> links.
CHILDREN: dict[str, dict[str, dict[str, Any]]] = {
    "entities": {
        "PutBillGroup": _child("putBillGroup", "entity", "a bill group"),
        "PutProduct": _child("putProduct", "entity", "a product"),
        "PutPlan": _child("putPlan", "entity", "a plan"),
    },
    "accounts": {"PutBillGroup": _child("putBillGroup", "account", "a bill group")},
    "bill-groups": {
        "PutSubscription": _child("putSubscription", "bill_group", "a subscription"),
        "PutInvoice": _child("putInvoice", "bill_group", "an invoice"),
        "PutPayment": _child("putPayment", "bill_group", "a payment"),
        "PutPaymentMethod": _child("putPaymentMethod", "bill_group", "a payment method"),
    },
}


def _add_links(paths: dict[str, Any]) -> None:
    """Responses that name a record link to the operations that use it: the record
    written is read back, its children are written under it, a rule created is deleted."""
    for name, out in RECORDS.items():
        schema = out.__name__
        links = {
            f"Get{schema}": _link(f"get{schema}", f"Read the {schema} back", **_SAME_ID),
        }
        if name == "bill-groups":
            links |= {
                "PutContact": _link("putContact", "Give the bill group a contact", **_SAME_ID),
                "CreateAccessRule": _link(
                    "createAccessRule", "Let people in to the bill group", **_SAME_ID
                ),
                "ListAccessRules": _link("listAccessRules", "Who may sign in", **_SAME_ID),
                "GetPortalLink": _link("getPortalLink", "The link to send", **_SAME_ID),
                "ListBillGroupContacts": _link(
                    "listBillGroupContacts", "The bill group's contacts", **_SAME_ID
                ),
            }
        if name == "invoices":
            links["GetInvoicePdf"] = _link("getInvoicePdf", "The invoice's PDF", **_SAME_ID)
        links |= CHILDREN.get(name, {})
        put = paths[f"/{name}/{{external_id}}"]["put"]["responses"]
        for status in ("200", "201"):
            put[status]["links"] = links
    contact = paths["/bill-groups/{external_id}/contacts/{kind}"]["put"]["responses"]
    for status in ("200", "201"):
        contact[status]["links"] = {
            "GetContact": _link(
                "getContact",
                "Read the contact back",
                external_id="$request.path.external_id",
                kind="$request.path.kind",
            )
        }
    created = paths["/bill-groups/{external_id}/access-rules"]["post"]["responses"]["201"]
    created["links"] = {
        "DeleteAccessRule": _link(
            "deleteAccessRule",
            "Remove the rule just added",
            external_id="$request.path.external_id",
            rule_id="$response.body#/id",
        )
    }


def _hygiene(schema: Any) -> None:
    """Every string a body may carry is refused with a control character in it
    (api.base.body, portal.hygiene): say so on each text field that has no stricter
    pattern, list or format of its own."""
    if isinstance(schema, list):
        for item in schema:
            _hygiene(item)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and not {"pattern", "enum", "format", "const"} & set(schema):
        schema["pattern"] = schemas.hygiene_pattern()
    for value in schema.values():
        _hygiene(value)


@functools.cache
def document() -> dict[str, Any]:
    _, inputs = models_json_schema(
        [(model, "validation") for model in INPUTS],
        ref_template="#/components/schemas/{model}",
    )
    _, outputs = models_json_schema(
        [(model, "serialization") for model in OUTPUTS],
        ref_template="#/components/schemas/{model}",
    )
    _, parts = models_json_schema(
        [(model, "serialization") for model in EVENT_PARTS],
        ref_template="#/components/schemas/{model}",
    )
    request_schemas = inputs.get("$defs", {})
    _hygiene(request_schemas)
    components = {**request_schemas, **outputs.get("$defs", {}), **parts.get("$defs", {})}
    paths = _paths()
    _add_links(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Billing portal API",
            "version": "1.0.0",
            "description": (
                "Keep the portal in step with your billing system. Authenticate with "
                "`Authorization: Bearer <key>` (admins create keys under Staff → API keys). "
                "PUT is an idempotent upsert by your own external id; money is integer "
                "minor units, a JSON number without a fraction (1250 or 1250.0, never 12.5); "
                "lists are change feeds in commit order with cursor pagination: resume from "
                "resume_cursor to read every change at least once. Text never "
                "holds control characters (tab, CR and LF only where a field says so) or "
                "lone surrogates. The webhooks section lists every event the portal sends, "
                "each signed with "
                "`Portal-Signature: t=<unix>,v1=<hex HMAC-SHA256 of '<t>.<body>'>`."
            ),
        },
        "servers": [{"url": PREFIX}],
        "security": [{"bearer": []}],
        "paths": paths,
        "webhooks": _webhooks(),
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The document is public: it describes the API and holds no data."""
    return jsonify(document())
