"""The records the billing system sends, as pydantic models: types, sizes and formats.

Money is integer minor units and must arrive as a JSON integer (strict: "12.50", 12.5
and "1250" are refused). Checks that the customer pages also make (VAT numbers, contact
fields) call the same functions in portal.details, so the API refuses exactly what the
pages refuse. Checks that need the database (references, uniqueness) are in upsert.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import sys
import unicodedata
from collections.abc import Callable
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
    WithJsonSchema,
    model_validator,
)

from portal import details, disputes, hygiene
from portal.access import AccessError, canonical_email
from portal.actions import Invalid
from portal.models import (
    BillingFrequency,
    ContactKind,
    InvoiceStatus,
    PaymentMethodType,
    PaymentStatus,
    SubscriptionStatus,
)
from portal.money import MoneyError, check_currency, currency_codes

EXTERNAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
_EXTERNAL_ID = re.compile(EXTERNAL_ID_PATTERN)
MAX_MINOR = 10**15  # a quadrillion minor units: beyond any invoice, inside BIGINT
MAX_LINES = 1000
MAX_ITEMS = 200


def is_external_id(value: str) -> bool:
    return bool(_EXTERNAL_ID.match(value))


# --- the text rules as JSON Schema patterns -----------------------------------------------
#
# portal.details.clean_text trims the value, then refuses FORBIDDEN_CATEGORIES in what is
# left; the body's hygiene check (portal.hygiene.JSON_FORBIDDEN) refuses its characters
# anywhere. The patterns below are built from those two definitions, not copied from
# them, so the document cannot say one thing while the rules do another.


def _escape(code: int) -> str:
    # Astral characters stay literal: the pattern dialects disagree on how to escape them.
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


def _class(codes: list[int]) -> str:
    """A regex character class body for these code points, as ranges."""
    parts: list[str] = []
    start = prev = None
    for code in [*sorted(codes), None]:
        if code is not None and prev is not None and code == prev + 1:
            prev = code
            continue
        if start is not None and prev is not None:
            parts.append(_escape(start) if start == prev else f"{_escape(start)}-{_escape(prev)}")
        start = prev = code
    return "".join(parts)


@functools.cache
def _text_classes() -> tuple[str, str, str]:
    """(forbidden, spaces, trimmed): the characters no text may hold, those the trim
    removes, and of those the ones the body's hygiene check lets through."""
    forbidden, spaces, trimmed = [], [], []
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char) == "Cs":
            continue  # never in UTF-8; a lone escape is refused by the hygiene check
        refused_anywhere = hygiene.JSON_FORBIDDEN.search(char) is not None
        if unicodedata.category(char) in details.FORBIDDEN_CATEGORIES or refused_anywhere:
            forbidden.append(code)
        if char.isspace():
            spaces.append(code)
            if not refused_anywhere:
                trimmed.append(code)
    return _class(forbidden), _class(spaces), _class(trimmed)


@functools.cache
def hygiene_pattern() -> str:
    """What any string in a body may hold: none of hygiene.JSON_FORBIDDEN."""
    refused = [code for code in range(0x80) if hygiene.JSON_FORBIDDEN.search(chr(code)) is not None]
    return f"^[^{_class(refused)}]*$"


def text_pattern(core: str | None = None, *, required: bool) -> str:
    """The pattern of a value clean_text accepts: spaces around it, and inside them
    `core` (by default any text without the forbidden characters that starts and ends
    with something other than a space); with `required`, `core` must be there."""
    forbidden, spaces, trimmed = _text_classes()
    if core is None:
        core = f"[^{forbidden}{spaces}](?:[^{forbidden}]*[^{forbidden}{spaces}])?"
    return f"^[{trimmed}]*(?:{core}){'' if required else '?'}[{trimmed}]*$"


def reference_pattern() -> str:
    """details.reference_number (PO and registration numbers) as a pattern."""
    last = details.REFERENCE_REST.replace(" ", "")
    core = f"[{details.REFERENCE_FIRST}](?:[{details.REFERENCE_REST}]*[{last}])?"
    return text_pattern(core, required=False)


def phone_pattern() -> str:
    """details.phone as a pattern: the rule's last character is never a trimmed space."""
    low, high = details.PHONE_REST_LENGTH
    last = details.PHONE_REST.replace(" ", "")
    core = f"{details.PHONE_FIRST}[{details.PHONE_REST}]{{{low - 1},{high - 1}}}[{last}]"
    return text_pattern(core, required=False)


def documented(
    max_length: int | None = None,
    *,
    required: bool = False,
    pattern: Callable[[], str] | None = None,
    **extra: Any,
) -> Callable[[dict[str, Any]], None]:
    """A json_schema_extra that writes a text rule into the field's schema, when the
    document is built (the patterns take a scan of Unicode to build)."""

    def write(schema: dict[str, Any]) -> None:
        target = _string_branch(schema)
        if max_length is not None:
            target["maxLength"] = max_length
        if required:
            target["minLength"] = 1
        target["pattern"] = pattern() if pattern else text_pattern(required=required)
        target.update(extra)

    return write


def _string_branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The string alternative of a `string | null` schema, or the schema itself."""
    for branch in schema.get("anyOf", ()):
        if branch.get("type") == "string":
            found: dict[str, Any] = branch
            return found
    return schema


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


# A positive decimal below 10^14 with at most four places, written plainly: "2", "2.5",
# "0.0125". One type, a string, so that no float's binary rounding reaches an invoice.
QUANTITY_PATTERN = (
    r"^(?:[1-9][0-9]{0,13}(?:\.[0-9]{1,4})?"
    r"|0\.(?:[1-9][0-9]{0,3}|0[1-9][0-9]{0,2}|00[1-9][0-9]?|000[1-9]))$"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)


def _quantity(value: Any) -> Decimal:
    """A quantity as a JSON string like "2.5": never a number, whose binary rounding
    would reach an invoice."""
    if not isinstance(value, str):
        raise ValueError('Send the quantity as a string like "2.5".')
    if not _QUANTITY.match(value):
        raise ValueError(
            f"{value!r} is not a quantity: a positive number below 10^14 with at most "
            'four decimal places, like "2.5".'
        )
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        raise ValueError(f"{value!r} is not a number.") from None


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


def enum_of(values: Callable[[], list[str]]) -> Callable[[dict[str, Any]], None]:
    """A json_schema_extra listing the values a rule accepts (looked up when the
    document is built: the lists come from Babel)."""

    def write(schema: dict[str, Any]) -> None:
        _string_branch(schema)["enum"] = values()

    return write


Currency = Annotated[
    StrictStr,
    Field(
        min_length=3,
        max_length=3,
        description="ISO 4217 code",
        examples=["EUR"],
        json_schema_extra=enum_of(currency_codes),
    ),
    AfterValidator(_currency),
]
Quantity = Annotated[
    Decimal,
    BeforeValidator(_quantity),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": QUANTITY_PATTERN,
            "description": 'A positive decimal as a string ("2.5"), four places at most.',
            "examples": ["12", "1.5"],
        }
    ),
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
Name200 = Annotated[
    StrictStr,
    Field(json_schema_extra=documented(200, required=True)),
    AfterValidator(_required_text(200, "name")),
]


def optional_text(max_length: int, what: str) -> Any:
    return Annotated[
        StrictStr | None,
        Field(default=None, max_length=max_length, json_schema_extra=documented(max_length)),
        AfterValidator(_text(max_length, what)),
    ]


def _countries() -> list[str]:
    return [code for code, _name in details.countries()]


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


# The document's account of each portal.details rule a body field follows.
_RULE_PATTERNS: dict[Callable[..., Any], Callable[[], str]] = {
    details.po_number: reference_pattern,
    details.registration_number: reference_pattern,
    details.phone: phone_pattern,
}


def blank_pattern() -> str:
    """A value clean_text takes for none: nothing but the spaces it trims."""
    _forbidden, _spaces, trimmed = _text_classes()
    return f"^[{trimmed}]*$"


def _optional_email(max_length: int | None) -> Callable[[dict[str, Any]], None]:
    """details.contact_email: an address, or blank (none)."""

    def write(schema: dict[str, Any]) -> None:
        address: dict[str, Any] = {"type": "string", "format": "email"}
        if max_length is not None:
            address["maxLength"] = max_length
        blank = {"type": "string", "pattern": blank_pattern()}
        schema["anyOf"] = [address, blank, {"type": "null"}]

    return write


def _rule_schema(rules: dict[str, details.Rule], field: str) -> Callable[[dict[str, Any]], None]:
    rule = rules[field]
    if rule.check is details.country:
        return enum_of(_countries)
    if rule.check is details.contact_email:
        return _optional_email(rule.max_length)
    return documented(
        rule.max_length, required=rule.required, pattern=_RULE_PATTERNS.get(rule.check)
    )


# The billing details, under the customer's form's rules (portal.details.BILLING_DETAILS).
PoNumber = Annotated[
    StrictStr | None,
    Field(json_schema_extra=_rule_schema(details.BILLING_DETAILS, "po_number")),
    AfterValidator(_detail(details.po_number)),
]
VatNumber = Annotated[
    StrictStr | None,
    Field(json_schema_extra=_rule_schema(details.BILLING_DETAILS, "vat_number")),
    AfterValidator(_detail(details.vat_number)),
]
RegistrationNumber = Annotated[
    StrictStr | None,
    Field(json_schema_extra=_rule_schema(details.BILLING_DETAILS, "registration_number")),
    AfterValidator(_detail(details.registration_number)),
]


# --- the records ------------------------------------------------------------------------


class EntityIn(Body):
    name: Name200
    legal_name: optional_text(200, "legal name") = None  # type: ignore[valid-type]
    support_email: Annotated[
        StrictStr,
        Field(max_length=320, json_schema_extra={"format": "email"}),
        AfterValidator(_email),
    ]
    brand_colour: Annotated[StrictStr, Field(pattern=r"^#[0-9a-fA-F]{6}$")] = "#2f5bea"
    address: Annotated[StrictStr | None, Field(max_length=1000)] = None
    country: Annotated[
        StrictStr | None,
        Field(json_schema_extra=enum_of(_countries)),
        AfterValidator(lambda v: None if v is None else _detail(details.country)(v)),
    ] = None
    vat_number: VatNumber = None


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
    po_number: PoNumber = None
    vat_number: VatNumber = None
    registration_number: RegistrationNumber = None

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
    """The rule, documented (length, pattern or list) but refused by the rule itself (a
    pydantic max_length would answer first, in its own words)."""
    return Field(json_schema_extra=_rule_schema(details.CONTACT, field))


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


class PlanIn(Body):
    """One plan of the seller's catalogue: what the customer sees when asking for a change."""

    entity: ExternalId
    name: Name200
    description: Annotated[StrictStr | None, Field(max_length=5000)] = None
    price_minor: Minor
    currency: Currency
    period: BillingFrequency


SeatCount = Annotated[StrictInt, Field(ge=1, le=10**9)]
MAX_PLAN_OPTIONS = 50


class AllowedChangesIn(Body):
    """The changes a customer may ask for on this subscription (all off by default)."""

    plans: Annotated[
        list[ExternalId],
        Field(
            max_length=MAX_PLAN_OPTIONS,
            description="The plans it may move to (plans of the bill group's seller), each once.",
            json_schema_extra={"uniqueItems": True},
        ),
    ] = []
    quantity_min: SeatCount | None = None
    quantity_max: SeatCount | None = None
    cancel_now: StrictBool = False
    cancel_at_term_end: StrictBool = False
    pause: StrictBool = False
    resume: StrictBool = False
    convert_trial: StrictBool = False
    extend_trial: StrictBool = False

    @model_validator(mode="after")
    def _range(self) -> AllowedChangesIn:
        low, high = self.quantity_min, self.quantity_max
        if low is not None and high is not None and low > high:
            raise ValueError("quantity_min is above quantity_max.")
        if len(set(self.plans)) != len(self.plans):
            raise ValueError("plans names a plan twice.")
        return self


class SubscriptionIn(Body):
    bill_group: ExternalId
    status: SubscriptionStatus
    period: BillingFrequency
    start_date: Day
    renewal_date: Day | None = None
    end_date: Day | None = None
    items: Annotated[list[SubscriptionItemIn], Field(max_length=MAX_ITEMS)] = []
    plan: ExternalId | None = None
    quantity: SeatCount | None = None
    trial_end: Day | None = None
    allowed_changes: AllowedChangesIn = AllowedChangesIn()

    @model_validator(mode="after")
    def _dates(self) -> SubscriptionIn:
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date.")
        return self


class ChangeAcceptIn(Body):
    """Accepting a subscription change request: a note for the customer, and the
    subscription as it is now (written as its PUT would be), if the billing system has it."""

    reason: Annotated[
        StrictStr | None,
        Field(max_length=1000, json_schema_extra=documented(1000)),
        AfterValidator(_text(1000, "reason")),
    ] = None
    subscription: SubscriptionIn | None = None


class ChangeRefuseIn(Body):
    """Refusing a subscription change request: why, in words for the customer."""

    reason: Annotated[
        StrictStr,
        Field(json_schema_extra=documented(1000, required=True)),
        AfterValidator(_required_text(1000, "reason")),
    ]


class InvoiceLineIn(Body):
    description: Annotated[
        StrictStr,
        Field(json_schema_extra=documented(500, required=True)),
        AfterValidator(_required_text(500, "line description")),
    ]
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
        Field(min_length=1, max_length=40, json_schema_extra=documented(40, required=True)),
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


class CreditNoteIn(Body):
    """A credit the billing system issued to a bill group. `amount_applied_minor` is
    what the billing system reports already applied; what customers apply in the portal
    is added to it (the portal keeps the larger of the two, never less than it applied)."""

    bill_group: ExternalId
    number: Annotated[
        StrictStr,
        Field(min_length=1, max_length=40, json_schema_extra=documented(40, required=True)),
        AfterValidator(_required_text(40, "credit note number")),
    ]
    currency: Currency = Field(description="Must be the bill group's currency.")
    issue_date: Day
    amount_minor: Annotated[StrictInt, Field(ge=1, le=MAX_MINOR)]
    amount_applied_minor: Minor = 0
    reason: optional_text(500, "reason") = None  # type: ignore[valid-type]
    voided: StrictBool = False

    @model_validator(mode="after")
    def _consistent(self) -> CreditNoteIn:
        if self.amount_applied_minor > self.amount_minor:
            raise ValueError("amount_applied_minor is more than the credit note's amount.")
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


CustomerRoleName = Literal["viewer", "billing_manager"]


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
    role: CustomerRoleName | None = Field(
        default=None,
        description=(
            "What the people the rule admits may do: `viewer` reads only, `billing_manager` "
            "may also change billing details, contacts and payment methods, and pay. "
            "Left out: `viewer` for a domain, `billing_manager` for an address."
        ),
    )
    fold_in: StrictBool = Field(
        default=False,
        description="Remove the address rules a new domain rule makes redundant.",
    )


class AccessRuleChange(Body):
    """Another customer role for an existing rule; it applies at the next request of anyone
    the rule admits."""

    role: CustomerRoleName


class PortalSessionIn(Body):
    """What the seller's app sends to sign its customer in to the portal
    (POST /api/v1/portal-sessions); portal.actions.portal_sessions checks the rest."""

    bill_group: ExternalId
    email: Annotated[
        StrictStr,
        Field(
            min_length=1,
            max_length=320,
            description="The customer's address; an access rule of the bill group must admit it.",
            examples=["ap@acme.com"],
        ),
    ]
    path: Annotated[
        StrictStr | None,
        Field(
            max_length=400,
            description=(
                "The portal page to land on, a path of the bill group's portal: /overview "
                "(the default), /invoices, /invoices/<invoice external id or number>, "
                "/subscriptions, /payment-methods, /payments, /billing-details, /contacts."
            ),
            examples=["/invoices/INV-1"],
        ),
    ] = None
    return_url: Annotated[
        StrictStr | None,
        Field(
            max_length=2000,
            description=(
                'Your page for the portal header\'s "Back to <seller>" link; its origin must '
                "be one an admin allowed for the seller (staff pages, Return origins)."
            ),
            examples=["https://app.example.com/account"],
        ),
    ] = None


CONTACT_KINDS: tuple[str, ...] = tuple(kind.value for kind in ContactKind)
ContactKindName = Literal["billing", "shipping"]

# What `PUT /api/v1/<resource>/{external_id}` and the import take, by resource name.
UPSERT_BODIES: dict[str, type[Body]] = {
    "entities": EntityIn,
    "accounts": AccountIn,
    "bill-groups": BillGroupIn,
    "products": ProductIn,
    "plans": PlanIn,
    "subscriptions": SubscriptionIn,
    "invoices": InvoiceIn,
    "payments": PaymentIn,
    "payment-methods": PaymentMethodIn,
    "credit-notes": CreditNoteIn,
}


@functools.cache
def message_pattern() -> str:
    """What portal.disputes.clean_message accepts, as a pattern: any text without the
    one-line rule's forbidden characters but tab, CR and LF, with something other than
    a space in it."""
    allowed = {0x09, 0x0A, 0x0D}
    forbidden, spaces = [], []
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char) == "Cs" or code in allowed:
            continue
        if unicodedata.category(char) in details.FORBIDDEN_CATEGORIES:
            forbidden.append(code)
    for code in range(sys.maxunicode + 1):
        if chr(code).isspace() and unicodedata.category(chr(code)) != "Cs":
            spaces.append(code)
    no, blank = _class(forbidden), _class(sorted(set(spaces) | set(forbidden)))
    return f"^[^{no}]*[^{blank}][^{no}]*$"


def _message(value: str) -> str:
    try:
        return disputes.clean_message(value, what="answer")
    except Invalid as exc:
        raise ValueError(exc.message) from None


class DisputeAnswerIn(Body):
    """Answering a customer's question or dispute: the message (over lines if need be,
    emailed to the customer), and whether that resolves it."""

    message: Annotated[
        StrictStr,
        Field(
            min_length=1,
            max_length=5000,
            description="The answer, for the customer; line breaks are kept.",
            json_schema_extra=lambda schema: schema.update(pattern=message_pattern()),
        ),
        AfterValidator(_message),
    ]
    resolve: StrictBool = False
