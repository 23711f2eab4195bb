"""The records the billing system sends, as pydantic models: types, sizes and formats.

Money is integer minor units and must arrive as a JSON integer (strict: "12.50", 12.5
and "1250" are refused). Checks that the customer pages also make (VAT numbers, contact
fields) call the same functions in portal.details, so the API refuses exactly what the
pages refuse. Checks that need the database (references, uniqueness) are in upsert.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from portal import details
from portal.access import AccessError, canonical_email
from portal.models import (
    BillingFrequency,
    ContactKind,
    InvoiceStatus,
    PaymentMethodType,
    PaymentStatus,
    SubscriptionStatus,
)
from portal.money import MoneyError, check_currency

EXTERNAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
_EXTERNAL_ID = re.compile(EXTERNAL_ID_PATTERN)
MAX_MINOR = 10**15  # a quadrillion minor units: beyond any invoice, inside BIGINT
MAX_LINES = 1000
MAX_ITEMS = 200


def is_external_id(value: str) -> bool:
    return bool(_EXTERNAL_ID.match(value))


def _detail(check: Any) -> Any:
    """Run a portal.details check; its DetailError becomes pydantic's ValueError."""

    def run(value: Any) -> Any:
        try:
            return check(value)
        except details.DetailError as exc:
            raise ValueError(exc.message) from None

    return run


def _text(max_length: int, what: str) -> Any:
    return _detail(lambda v: details.clean_text(v, max_length=max_length, what=what))


def _required_text(max_length: int, what: str) -> Any:
    def run(value: str | None) -> str:
        text: str | None = _text(max_length, what)(value)
        if text is None:
            raise ValueError(f"Enter the {what}.")
        return text

    return run


def _currency(value: str) -> str:
    try:
        return check_currency(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None


def _email(value: str) -> str:
    try:
        return canonical_email(value)
    except AccessError as exc:
        raise ValueError(exc.message) from None


# Decimal() also reads " 5", "+5", "1e3", "5_0" and "١٢" (Arabic-Indic digits): one
# spelling per number, as the billing system's own export writes it.
_DECIMAL = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?")


def _quantity(value: Any) -> Decimal:
    """A quantity as a JSON string or integer ("2.5", 3): never a float, which would
    carry binary rounding into an invoice."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError('Send the quantity as a string like "2.5" or an integer.')
    if isinstance(value, str) and not _DECIMAL.fullmatch(value):
        raise ValueError(f'{value!r} is not a quantity: send digits, like "2.5" or "12".')
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number.") from None
    if not number.is_finite() or number <= 0 or number >= Decimal(10) ** 14:
        raise ValueError("The quantity must be a positive number below 10^14.")
    if number != number.quantize(Decimal("0.0001")):
        raise ValueError("The quantity can have at most four decimal places.")
    return number


ExternalId = Annotated[
    StrictStr,
    Field(
        pattern=EXTERNAL_ID_PATTERN,
        description="The billing system's own id: 1-100 of A-Z a-z 0-9 . _ : -",
        examples=["inv_2026_0042"],
    ),
]
Minor = Annotated[
    StrictInt,
    Field(ge=0, le=MAX_MINOR, description="Integer minor units (cents, pence, yen)."),
]
Currency = Annotated[
    StrictStr,
    Field(min_length=3, max_length=3, description="ISO 4217 code", examples=["EUR"]),
    AfterValidator(_currency),
]
Quantity = Annotated[
    Decimal,
    BeforeValidator(_quantity),
    Field(description='Positive decimal as a string ("2.5") or an integer; 4 places at most.'),
]
Day = Annotated[dt.date, Field(description="ISO 8601 date, YYYY-MM-DD")]


def _storable_time(value: dt.datetime) -> dt.datetime:
    """A time that exists in UTC, where it is stored: 0001-01-01T00:00:00+01:00 is in
    year 0 there, and would fail at the write instead of here."""
    if value.tzinfo is not None:
        try:
            value.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError("The time is outside the years 1 to 9999 once in UTC.") from None
    return value


Moment = Annotated[
    dt.datetime,
    AfterValidator(_storable_time),
    Field(description="ISO 8601 with a time zone"),
]
Name200 = Annotated[StrictStr, AfterValidator(_required_text(200, "name"))]


def optional_text(max_length: int, what: str) -> Any:
    return Annotated[
        StrictStr | None,
        Field(default=None, max_length=max_length),
        AfterValidator(_text(max_length, what)),
    ]


def describe(
    exc: ValidationError, prefix: tuple[str | int, ...] = ()
) -> list[tuple[str | None, str]]:
    """A ValidationError as (field, message) pairs a person can act on: the field as a
    dotted path ("lines.0.amount_minor", None for the body as a whole), the message naming
    it. `prefix` is prepended to every path (the import puts bodies under "data")."""
    described = []
    for error in exc.errors():
        loc = prefix + tuple(error["loc"])
        field = ".".join(str(part) for part in loc) or None
        named = field or "body"
        kind = error["type"]
        if kind == "missing":
            message = f"{named} is required."
        elif kind == "extra_forbidden":
            message = f"{named} is not a field of this record."
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            if kind != "value_error":
                message = f"{named}: {message}"
        described.append((field, message))
    return described


class Body(BaseModel):
    """Every request body: unknown fields are refused, not ignored, so a typo (or a card
    number under any name) never passes silently."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)


# --- the records ------------------------------------------------------------------------


class EntityIn(Body):
    name: Name200
    legal_name: optional_text(200, "legal name") = None  # type: ignore[valid-type]
    support_email: Annotated[StrictStr, Field(max_length=320), AfterValidator(_email)]
    brand_colour: Annotated[StrictStr, Field(pattern=r"^#[0-9a-fA-F]{6}$")] = "#2f5bea"
    address: Annotated[StrictStr | None, Field(max_length=1000)] = None
    country: Annotated[
        StrictStr | None,
        AfterValidator(lambda v: None if v is None else _detail(details.country)(v)),
    ] = None
    vat_number: Annotated[StrictStr | None, AfterValidator(_detail(details.vat_number))] = None


class AccountIn(Body):
    name: Name200


class BillGroupIn(Body):
    account: ExternalId
    entity: ExternalId
    name: Name200
    currency: Currency
    billing_frequency: BillingFrequency
    contract_start: Day
    contract_end: Day | None = None
    next_billing_date: Day | None = None
    auto_pay: StrictBool = False
    portal_enabled: StrictBool = True
    # The customer's billing details form's rules (portal.details.BILLING_DETAILS).
    po_number: Annotated[StrictStr | None, AfterValidator(_detail(details.po_number))] = None
    vat_number: Annotated[StrictStr | None, AfterValidator(_detail(details.vat_number))] = None
    registration_number: Annotated[
        StrictStr | None, AfterValidator(_detail(details.registration_number))
    ] = None

    @model_validator(mode="after")
    def _dates(self) -> BillGroupIn:
        if self.contract_end is not None and self.contract_end < self.contract_start:
            raise ValueError("contract_end is before contract_start.")
        return self


def _check(field: str) -> AfterValidator:
    """The contact field's rule in portal.details: the API and the import refuse what
    the customer's form refuses, with the same message."""
    return AfterValidator(_detail(details.CONTACT[field].check))


def _limit(field: str) -> Any:
    """The rule's length, documented as maxLength but refused by the rule itself (a
    pydantic max_length would answer first, in its own words)."""
    limit = details.CONTACT[field].max_length
    return Field(json_schema_extra={"maxLength": limit} if limit is not None else None)


class ContactIn(Body):
    """The contact fields, under the same rules as the customer's contact form."""

    name: Annotated[StrictStr, _limit("name"), _check("name")]
    company: Annotated[StrictStr | None, _limit("company"), _check("company")] = None
    email: Annotated[StrictStr | None, _limit("email"), _check("email")] = None
    phone: Annotated[StrictStr | None, _limit("phone"), _check("phone")] = None
    line1: Annotated[StrictStr, _limit("line1"), _check("line1")]
    line2: Annotated[StrictStr | None, _limit("line2"), _check("line2")] = None
    city: Annotated[StrictStr, _limit("city"), _check("city")]
    region: Annotated[StrictStr | None, _limit("region"), _check("region")] = None
    postal_code: Annotated[StrictStr | None, _limit("postal_code"), _check("postal_code")] = None
    country: Annotated[StrictStr, _limit("country"), _check("country")]


class ProductIn(Body):
    entity: ExternalId
    name: Name200
    description: Annotated[StrictStr | None, Field(max_length=5000)] = None
    sku: optional_text(64, "SKU") = None  # type: ignore[valid-type]


class SubscriptionItemIn(Body):
    product: ExternalId
    quantity: Annotated[StrictInt, Field(ge=1, le=10**9)] = 1
    unit_price_minor: Minor


class SubscriptionIn(Body):
    bill_group: ExternalId
    status: SubscriptionStatus
    period: BillingFrequency
    start_date: Day
    renewal_date: Day | None = None
    end_date: Day | None = None
    items: Annotated[list[SubscriptionItemIn], Field(max_length=MAX_ITEMS)] = []

    @model_validator(mode="after")
    def _dates(self) -> SubscriptionIn:
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date.")
        return self


class InvoiceLineIn(Body):
    description: Annotated[StrictStr, AfterValidator(_required_text(500, "line description"))]
    quantity: Quantity
    unit_price_minor: Minor
    amount_minor: Minor
    tax_rate_bp: Annotated[
        StrictInt, Field(ge=0, le=10000, description="Basis points: 2000 is 20 %.")
    ] = 0
    tax_minor: Minor = 0
    product: ExternalId | None = None
    period_start: Day | None = None
    period_end: Day | None = None


class InvoiceIn(Body):
    bill_group: ExternalId
    number: Annotated[
        StrictStr,
        Field(min_length=1, max_length=40),
        AfterValidator(_required_text(40, "invoice number")),
    ]
    status: InvoiceStatus
    issue_date: Day
    due_date: Day
    currency: Currency | None = Field(
        default=None, description="Must be the bill group's currency; defaults to it."
    )
    period_start: Day | None = None
    period_end: Day | None = None
    amount_paid_minor: Minor = 0
    po_number: optional_text(64, "PO number") = None  # type: ignore[valid-type]
    memo: Annotated[StrictStr | None, Field(max_length=5000)] = None
    lines: Annotated[list[InvoiceLineIn], Field(min_length=1, max_length=MAX_LINES)]
    total_minor: Minor | None = Field(
        default=None, description="Optional check: refused unless it equals the lines' sum."
    )

    @model_validator(mode="after")
    def _consistent(self) -> InvoiceIn:
        if self.due_date < self.issue_date:
            raise ValueError("due_date is before issue_date.")
        total = sum(line.amount_minor + line.tax_minor for line in self.lines)
        if total > MAX_MINOR:
            raise ValueError("The invoice total is too large.")
        if self.total_minor is not None and self.total_minor != total:
            raise ValueError(f"total_minor is {self.total_minor} but the lines add up to {total}.")
        if self.amount_paid_minor > total:
            raise ValueError("amount_paid_minor is more than the invoice total.")
        if self.status == InvoiceStatus.PAID and self.amount_paid_minor != total:
            raise ValueError("A paid invoice has amount_paid_minor equal to its total.")
        return self


class PaymentApplicationIn(Body):
    invoice: ExternalId
    amount_minor: Annotated[StrictInt, Field(ge=1, le=MAX_MINOR)]


class PaymentIn(Body):
    bill_group: ExternalId
    amount_minor: Annotated[StrictInt, Field(ge=1, le=MAX_MINOR)]
    currency: Currency
    status: PaymentStatus
    received_at: Moment
    method_description: optional_text(100, "method description") = None  # type: ignore[valid-type]
    reference: optional_text(100, "reference") = None  # type: ignore[valid-type]
    payment_method: ExternalId | None = None
    applications: Annotated[list[PaymentApplicationIn], Field(max_length=MAX_LINES)] = []

    @model_validator(mode="after")
    def _consistent(self) -> PaymentIn:
        if self.received_at.tzinfo is None:
            raise ValueError("received_at needs a time zone, e.g. 2026-11-30T09:00:00Z.")
        if sum(a.amount_minor for a in self.applications) > self.amount_minor:
            raise ValueError("The applications add up to more than the payment.")
        invoices = [a.invoice for a in self.applications]
        if len(set(invoices)) != len(invoices):
            raise ValueError("Each invoice can appear once in applications.")
        return self


def _looks_like_card_number(value: str) -> bool:
    digits = re.sub(r"[\s-]", "", value)
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        number = int(char)
        if index % 2:
            number = number * 2 - 9 if number > 4 else number * 2
        total += number
    return total % 10 == 0


def _not_a_card_number(value: str) -> str:
    if _looks_like_card_number(value):
        raise ValueError(
            "That looks like a card number. Send the gateway's token, never the number."
        )
    return value


class PaymentMethodIn(Body):
    """Display details and the gateway's token; a card number is refused wherever it is
    put (unknown fields are refused, and no field accepts one)."""

    bill_group: ExternalId
    type: PaymentMethodType
    brand: Annotated[
        StrictStr | None,
        Field(max_length=40),
        AfterValidator(lambda v: _not_a_card_number(v) if v else v),
    ] = None
    last4: Annotated[StrictStr, Field(pattern=r"^[0-9]{4}$")]
    exp_month: Annotated[StrictInt | None, Field(ge=1, le=12)] = None
    exp_year: Annotated[StrictInt | None, Field(ge=2000, le=2200)] = None
    holder_name: Annotated[
        StrictStr | None,
        Field(max_length=200),
        AfterValidator(lambda v: _not_a_card_number(v) if v else v),
    ] = None
    gateway: Annotated[StrictStr, Field(min_length=1, max_length=40)]
    gateway_token: Annotated[
        StrictStr, Field(min_length=1, max_length=255), AfterValidator(_not_a_card_number)
    ]
    is_default: StrictBool = False

    @model_validator(mode="after")
    def _expiry(self) -> PaymentMethodIn:
        if (self.exp_month is None) != (self.exp_year is None):
            raise ValueError("Send exp_month and exp_year together, or neither.")
        return self


class AccessRuleIn(Body):
    value: Annotated[
        StrictStr,
        Field(
            min_length=1,
            max_length=320,
            description="One email address or one domain; lists are refused.",
            examples=["acme.com", "cfo@acme-holdings.com"],
        ),
    ]
    include_subdomains: StrictBool = False
    fold_in: StrictBool = Field(
        default=False,
        description="Remove the address rules a new domain rule makes redundant.",
    )


CONTACT_KINDS: tuple[str, ...] = tuple(kind.value for kind in ContactKind)
ContactKindName = Literal["billing", "shipping"]

# What `PUT /api/v1/<resource>/{external_id}` and the import take, by resource name.
UPSERT_BODIES: dict[str, type[Body]] = {
    "entities": EntityIn,
    "accounts": AccountIn,
    "bill-groups": BillGroupIn,
    "products": ProductIn,
    "subscriptions": SubscriptionIn,
    "invoices": InvoiceIn,
    "payments": PaymentIn,
    "payment-methods": PaymentMethodIn,
}
