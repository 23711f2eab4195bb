"""Staff-side forms."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Unpack

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    Field,
    HiddenField,
    PasswordField,
    RadioField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    widgets,
)
from wtforms.validators import DataRequired, InputRequired, Length, Optional, ValidationError

from portal import apikeys, bank, webhooks
from portal.disputes import MESSAGE_MAX
from portal.forms import Attributes, QueryForm, SecretInput, code, on_or_after, text
from portal.models import BillingFrequency, CustomerRole, RuleKind
from portal.money import MoneyError, check_currency

# What an address or a domain is typed as: exactly, with no spelling or capital fixed.
_VERBATIM: Attributes = {"spellcheck": "false", "autocapitalize": "none", "autocomplete": "off"}


def _email(message: str, autocomplete: str, spellcheck: str | None = None) -> StringField:
    """A staff member's address (type=email): required, with `message` when left empty."""
    attributes: Attributes = {"type": "email", "autocomplete": autocomplete}
    if spellcheck is not None:
        attributes["spellcheck"] = spellcheck
    return text("Email address", InputRequired(message), Length(max=320), **attributes)


def _password(label: str, autocomplete: str, *validators: object) -> PasswordField:
    return PasswordField(
        label, validators=[*validators, Length(max=1000)], render_kw={"autocomplete": autocomplete}
    )


class SignInForm(FlaskForm):
    # "username" is not allowed on type=email (HTML autofill); "email" is, and password
    # managers pair it with the current-password field all the same.
    email = _email("Enter your email address.", "email")
    password = _password("Password", "current-password", InputRequired("Enter your password."))
    next = HiddenField()


class CodeForm(FlaskForm):
    code = code("Code from your authenticator app, or a recovery code", "Enter the code.")


class EnrolForm(FlaskForm):
    """A code from the app being set up; replacing a second factor also needs a fresh
    proof of the current one (a code from the old app or a recovery code)."""

    code = code("Code from the new authenticator app", "Enter the code.")
    current_code = text(
        "Code from your current authenticator app, or a recovery code",
        Length(max=20),
        widget=SecretInput(),
        autocomplete="one-time-code",
    )


# --- accounts and bill groups -------------------------------------------------------


def _strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


def _upper(value: str | None) -> str | None:
    return value.strip().upper() if isinstance(value, str) else value


# Control, format and line-separator characters: invisible, or able to break a page or CSV.
_INVISIBLE = ("Cc", "Cf", "Zl", "Zp")


def _plain_text(form: FlaskForm, field: Field) -> None:
    if field.data and any(unicodedata.category(ch) in _INVISIBLE for ch in field.data):
        raise ValidationError("That contains invisible or control characters. Type it again.")


def _currency(form: FlaskForm, field: Field) -> None:
    try:
        field.data = check_currency(field.data or "")
    except MoneyError:
        raise ValidationError(
            "Enter a three-letter ISO 4217 currency code, such as EUR, GBP or USD."
        ) from None


def _plain(
    label: str, what: str, max_length: int, *required: object, **attributes: Unpack[Attributes]
) -> StringField:
    """What staff type to name or describe something: trimmed, at most max_length
    characters, and nothing invisible."""
    too_long = f"{what} can be at most {max_length} characters."
    return text(
        label,
        *required,
        Length(max=max_length, message=too_long),
        _plain_text,
        filters=[_strip],
        **attributes,
    )


def _optional_int(value: object) -> int | None:
    """A chosen row's id: ASCII digits only, as in every route ("١", "+1" and " 1" are
    not entity 1, though int() reads them so)."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _day(label: str, *validators: object) -> DateField:
    return DateField(
        label,
        validators=list(validators) or [Optional()],
        invalid_value_message="Enter a real date, for example 2026-03-31.",
    )


def _search(label: str, length: Length, autocapitalize: str | None = None) -> StringField:
    """A search box: what is typed, trimmed, and never spell-checked."""
    attributes: Attributes = {"type": "search", "spellcheck": "false"}
    if autocapitalize is not None:
        attributes["autocapitalize"] = autocapitalize
    return text(label, length, filters=[_strip], **attributes)


class AccountSearchForm(QueryForm):
    q = _search("Account name", Length(max=200, message="Search for at most 200 characters."))


class AccountForm(FlaskForm):
    name = _plain("Account name", "The account name", 200, DataRequired("Enter the account name."))
    external_id = _plain("External id (optional)", "The external id", 100, spellcheck="false")


class BillGroupForm(FlaskForm):
    entity_id = SelectField("Entity (the seller)", coerce=_optional_int, validate_choice=False)
    name = _plain(
        "Bill group name", "The bill group name", 200, DataRequired("Enter the bill group name.")
    )
    currency = text(
        "Currency",
        DataRequired("Enter the currency code."),
        _currency,
        filters=[_upper],
        maxlength=3,
        spellcheck="false",
        autocapitalize="characters",
    )
    billing_frequency = SelectField(
        "Billing frequency",
        choices=[SelectChoice(f.value, f.label) for f in BillingFrequency],
        default=BillingFrequency.MONTHLY.value,
    )
    next_billing_date = _day("Next billing date (optional)")
    auto_pay = BooleanField("Auto-pay: charge the default payment method on each invoice")
    contract_start = _day("Contract start", InputRequired("Enter the contract start date."))
    contract_end = _day("Contract end (optional)")
    portal_enabled = BooleanField("Portal enabled: customers with access can sign in")

    def validate_entity_id(self, field: SelectField) -> None:
        if field.data not in {choice.value for choice in field.choices}:
            raise ValidationError("Choose an entity.")

    validate_contract_end = on_or_after(
        "contract_start", "The contract end must be on or after the contract start."
    )


# --- portal access settings (admin/access.py) -------------------------------------------


ROLE_CHOICES = [SelectChoice(role.value, role.label) for role in CustomerRole]


def _role(default: CustomerRole, id: str) -> SelectField:
    """A rule's customer role (`id`: two add forms share the page). Not checked against the
    choices here: the posted value goes to the action (portal.access.parse_role), whose
    refusal of a forged "admin" says which roles there are."""
    return SelectField(
        "Customer role",
        choices=ROLE_CHOICES,
        default=default.value,
        validate_choice=False,
        id=id,
    )


class RuleRoleForm(FlaskForm):
    """Another role for an existing rule (one per row of the rules table)."""

    role = _role(CustomerRole.VIEWER, "role")


class DomainRuleForm(FlaskForm):
    domain = text(
        "Domain",
        DataRequired("Enter a domain like company.com."),
        Length(max=320, message="That is too long to be a domain."),
        **_VERBATIM,
    )
    include_subdomains = BooleanField("and its subdomains")
    role = _role(CustomerRole.default_for(RuleKind.DOMAIN), "domain-role")
    # Posted only by the "Add the domain and remove those addresses" button.
    fold_in = BooleanField("Remove the address rules the domain covers")


class SsoForm(FlaskForm):
    company_name = text(
        "Company name",
        DataRequired("Enter the company's name as its people know it."),
        Length(max=80, message="At most 80 characters."),
    )
    issuer = text(
        "Issuer URL",
        DataRequired("Enter the provider's issuer URL, like https://login.acme.com."),
        Length(max=500, message="At most 500 characters."),
        **_VERBATIM,
    )
    client_id = text(
        "Client id",
        DataRequired("Enter the client id the provider gave you."),
        Length(max=255, message="At most 255 characters."),
        **_VERBATIM,
    )
    # Never rendered back; empty keeps the stored secret.
    client_secret = StringField(
        "Client secret",
        validators=[Length(max=1000, message="At most 1000 characters.")],
        widget=SecretInput(),
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )
    mode = SelectField(
        "How customers at this domain sign in",
        choices=[
            SelectChoice("offered", "Offered: company sign-in or the emailed link"),
            SelectChoice("required", "Required: company sign-in only, no emailed link"),
        ],
        default="offered",
    )


class EmailRuleForm(FlaskForm):
    email = text(
        "Email address",
        DataRequired("Enter an email address like name@company.com."),
        Length(max=320, message="That is too long to be an email address."),
        **(_VERBATIM | {"type": "email"}),
    )
    role = _role(CustomerRole.default_for(RuleKind.EMAIL), "email-role")


class AccessCheckForm(QueryForm):
    """The access checker."""

    address = text(
        "Email address to check",
        DataRequired("Enter the email address to check."),
        Length(max=320, message="That is too long to be an email address."),
        **_VERBATIM,
    )


# --- audit trail ----------------------------------------------------------------------

# The families of audited actions, by prefix (an action is "<family>.<what>").
AUDIT_ACTIONS = {
    "signin.": "Customer sign-in",
    "session.": "Customer sessions",
    "access_rule.": "Access rules",
    "portal.": "Portal enabled or disabled",
    "preview.": "Staff previews",
    "billing_details.": "Billing details changed by customers",
    "contact.": "Contacts changed by customers",
    "payment_method.": "Payment methods changed by customers",
    "account.": "Accounts",
    "bill_group.": "Bill groups",
    "staff.": "Staff sign-in",
    "api_key.": "API keys",
    "webhook_endpoint.": "Webhook endpoints",
    "webhook_delivery.": "Webhook resends",
    "portal_session.": "Portal sessions made through the API",
    "return_origin.": "Return origins",
}


class AuditFilterForm(QueryForm):
    """The audit trail's filters."""

    action = SelectField(
        "Action",
        choices=[
            SelectChoice("", "Any action"),
            *(SelectChoice(key, f"{name} ({key}…)") for key, name in AUDIT_ACTIONS.items()),
        ],
        default="",
        validate_choice=False,
    )
    actor = _search(
        "Actor contains",
        Length(max=254, message="Type at most 254 characters."),
        autocapitalize="none",
    )
    date_from = DateField("From", validators=[Optional()], render_kw={"type": "date"})
    date_to = DateField("To", validators=[Optional()], render_kw={"type": "date"})

    def validate_action(self, field: SelectField) -> None:
        if field.data and field.data not in AUDIT_ACTIONS:
            raise ValidationError("Choose an action from the list.")

    validate_date_to = on_or_after("date_from")


ROLE_CHOICES = [
    SelectChoice("viewer", "Viewer: read and preview"),
    SelectChoice("account_manager", "Account manager: accounts, access rules, links"),
    SelectChoice("admin", "Admin: everything, including staff users"),
]


class StaffUserForm(FlaskForm):
    email = _email("Enter an email address.", "off", spellcheck="false")
    name = text("Name (optional)", Length(max=200))
    role = SelectField("Role", choices=ROLE_CHOICES, default="viewer")
    password = _password("First password", "new-password")
    is_active = BooleanField("Active: may sign in", default=True)


# --- API keys and webhooks (admin/integrations.py) -----------------------------------


class CheckboxesField(SelectMultipleField):
    """A set of checkboxes, one per choice. None ticked posts nothing, which is []."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


def _at_least_one(message: str) -> Callable[[FlaskForm, Field], None]:
    # Not InputRequired: its "required" flag would mark every checkbox as required.
    def check(form: FlaskForm, field: Field) -> None:
        if not field.data:
            raise ValidationError(message)

    return check


class ApiKeyForm(FlaskForm):
    name = _plain(
        "Name",
        "The name",
        100,
        DataRequired("Enter a name, such as the system that will use the key."),
        spellcheck="false",
        autocomplete="off",
    )
    scopes = CheckboxesField(
        "Scopes",
        choices=[SelectChoice(scope, scope) for scope in apikeys.SCOPES],
        default=["read"],
        validators=[_at_least_one("Choose at least one scope: read, write or sessions.")],
    )


class ReturnOriginForm(FlaskForm):
    """An origin of the seller's own app that portal sessions may name as return_url."""

    entity_id = SelectField("Seller (entity)", coerce=_optional_int, validate_choice=False)
    origin = text(
        "Origin",
        InputRequired("Enter the origin, like https://app.example.com."),
        Length(max=300, message="That is too long to be an origin."),
        filters=[_strip],
        type="url",
        spellcheck="false",
        autocomplete="off",
    )

    def validate_entity_id(self, field: SelectField) -> None:
        if field.data not in {choice.value for choice in field.choices}:
            raise ValidationError("Choose a seller.")


class WebhookEndpointForm(FlaskForm):
    url = text(
        "Endpoint URL",
        InputRequired("Enter the URL the portal should POST events to."),
        filters=[_strip],
        type="url",
        spellcheck="false",
        autocomplete="off",
    )
    description = _plain("Description (optional)", "The description", 200)
    events = CheckboxesField(
        "Events",
        choices=[SelectChoice(event, event) for event in webhooks.EVENT_TYPES],
        default=list(webhooks.EVENT_TYPES),
        validators=[_at_least_one("Choose at least one event.")],
    )

    def validate_url(self, field: StringField) -> None:
        try:
            field.data = webhooks.check_url(field.data or "")
        except webhooks.WebhookURLError as exc:
            raise ValidationError(str(exc)) from None


class WebhookEndpointEditForm(WebhookEndpointForm):
    is_active = BooleanField("Active: send events to this endpoint")


# --- a seller's payment settings (admin/accounts.py) ------------------------------------


class EntityPaymentSettingsForm(FlaskForm):
    allow_partial_payments = BooleanField("Customers may pay part of an invoice")
    min_partial_payment = text(
        "Smallest part payment (in the bill group's currency, e.g. 10.00)",
        DataRequired("Enter the smallest part payment, e.g. 10.00 (0 for no minimum)."),
        Length(max=24, message="Enter an amount such as 10.00."),
        inputmode="decimal",
        spellcheck="false",
    )
    allow_credit_application = BooleanField(
        "Customers may apply credit notes and unapplied payments to invoices"
    )


# --- a seller's bank details (admin/accounts.py; the rules are portal.bank's) --------------


class EntityBankDetailsForm(FlaskForm):
    account_holder = text("Account holder (as the bank has it)", autocomplete="off")
    bank_name = text("Bank name", autocomplete="off")
    iban = text("IBAN", autocomplete="off", spellcheck="false", autocapitalize="characters")
    bic = text("BIC (SWIFT code)", autocomplete="off", spellcheck="false")
    account_number = text("Account number", autocomplete="off", inputmode="numeric")
    routing_number = text("Routing number (ABA)", autocomplete="off", inputmode="numeric")
    reference_format = SelectField(
        "Payment reference",
        choices=[
            SelectChoice(value.value, label) for value, label in bank.REFERENCE_LABELS.items()
        ],
        default=bank.ReferenceFormat.INVOICE_NUMBER.value,
        validate_choice=False,  # portal.bank refuses an unknown one, with its message
    )


# --- subscription changes (admin/subscriptions.py) ---------------------------------------


class SubscriptionSettingsForm(FlaskForm):
    """One switch per kind of change (portal.models.ChangeKind), named by its value."""

    plan = BooleanField("Change plan (upgrade or downgrade)")
    quantity = BooleanField("Change quantity")
    pause = BooleanField("Pause")
    resume = BooleanField("Resume")
    convert_trial = BooleanField("Convert a trial to a paid subscription")
    extend_trial = BooleanField("Extend a trial")
    cancel_at_term_end = BooleanField("Cancel at the end of the term")
    cancel_now = BooleanField("Cancel now")


# --- reminders (admin/reminders.py) ---------------------------------------------------


def _schedule(label: str) -> StringField:
    # The days themselves are checked by the action (portal.reminders.parse_schedule).
    return _plain(label, "A schedule", 60, inputmode="text", autocomplete="off")


class ReminderSettingsForm(FlaskForm):
    """One schedule per kind of reminder (portal.models.ReminderKind), named by its value."""

    upcoming = _schedule("Upcoming invoice: days before a subscription renews")
    due_soon = _schedule("Due soon: days before an invoice's due date")
    overdue = _schedule("Overdue: days after an invoice's due date")


class AnswerChangeForm(FlaskForm):
    decision = RadioField(
        "Answer",
        choices=[SelectChoice("accept", "Accept"), SelectChoice("refuse", "Refuse")],
        validators=[InputRequired("Choose accept or refuse.")],
    )
    reason = text(
        "Reason or note for the customer (needed to refuse)",
        Length(max=1000, message="The reason can be at most 1000 characters."),
    )


class AnswerDisputeForm(FlaskForm):
    """Staff answer a customer's question or dispute; the rules of the message are
    portal.actions.disputes'."""

    message = TextAreaField(
        "Answer for the customer",
        validators=[Length(max=MESSAGE_MAX, message=f"At most {MESSAGE_MAX} characters.")],
    )
    resolve = BooleanField("This resolves it (the invoice is no longer in dispute)")
