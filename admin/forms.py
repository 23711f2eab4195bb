"""Staff-side forms."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    Field,
    HiddenField,
    PasswordField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    widgets,
)
from wtforms.validators import DataRequired, InputRequired, Length, Optional, ValidationError

from portal import apikeys, webhooks
from portal.forms import SecretInput
from portal.models import BillingFrequency
from portal.money import MoneyError, check_currency


class SignInForm(FlaskForm):
    email = StringField(
        "Email address",
        validators=[InputRequired("Enter your email address."), Length(max=320)],
        render_kw={"autocomplete": "username", "type": "email"},
    )
    password = PasswordField(
        "Password",
        validators=[InputRequired("Enter your password."), Length(max=1000)],
        render_kw={"autocomplete": "current-password"},
    )
    next = HiddenField()


class CodeForm(FlaskForm):
    code = StringField(
        "Code from your authenticator app, or a recovery code",
        validators=[InputRequired("Enter the code."), Length(max=20)],
        widget=SecretInput(),  # a code is a secret, even a refused one: never written back
        render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"},
    )


class EnrolForm(FlaskForm):
    """A code from the app being set up; replacing a second factor also needs a fresh
    proof of the current one (a code from the old app or a recovery code)."""

    code = StringField(
        "Code from the new authenticator app",
        validators=[InputRequired("Enter the code."), Length(max=20)],
        widget=SecretInput(),  # a code is a secret, even a refused one: never written back
        render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"},
    )
    current_code = StringField(
        "Code from your current authenticator app, or a recovery code",
        validators=[Length(max=20)],
        widget=SecretInput(),
        render_kw={"autocomplete": "one-time-code"},
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


class AccountSearchForm(FlaskForm):
    """The account search: a GET form, so no CSRF token (it changes nothing)."""

    class Meta:
        csrf = False

    q = StringField(
        "Account name",
        filters=[_strip],
        validators=[Length(max=200, message="Search for at most 200 characters.")],
        render_kw={"type": "search", "spellcheck": "false"},
    )


class AccountForm(FlaskForm):
    name = StringField(
        "Account name",
        filters=[_strip],
        validators=[
            DataRequired("Enter the account name."),
            Length(max=200, message="The account name can be at most 200 characters."),
            _plain_text,
        ],
    )
    external_id = StringField(
        "External id (optional)",
        filters=[_strip],
        validators=[
            Length(max=100, message="The external id can be at most 100 characters."),
            _plain_text,
        ],
        render_kw={"spellcheck": "false"},
    )


class BillGroupForm(FlaskForm):
    entity_id = SelectField("Entity (the seller)", coerce=_optional_int, validate_choice=False)
    name = StringField(
        "Bill group name",
        filters=[_strip],
        validators=[
            DataRequired("Enter the bill group name."),
            Length(max=200, message="The bill group name can be at most 200 characters."),
            _plain_text,
        ],
    )
    currency = StringField(
        "Currency",
        filters=[_upper],
        validators=[DataRequired("Enter the currency code."), _currency],
        render_kw={"maxlength": 3, "spellcheck": "false", "autocapitalize": "characters"},
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

    def validate_contract_end(self, field: DateField) -> None:
        start = self.contract_start.data
        if field.data and start and field.data < start:
            raise ValidationError("The contract end must be on or after the contract start.")


# --- portal access settings (admin/access.py) -------------------------------------------


class DomainRuleForm(FlaskForm):
    domain = StringField(
        "Domain",
        validators=[
            DataRequired("Enter a domain like company.com."),
            Length(max=320, message="That is too long to be a domain."),
        ],
        render_kw={"spellcheck": "false", "autocapitalize": "none", "autocomplete": "off"},
    )
    include_subdomains = BooleanField("and its subdomains")
    # Posted only by the "Add the domain and remove those addresses" button.
    fold_in = BooleanField("Remove the address rules the domain covers")


class EmailRuleForm(FlaskForm):
    email = StringField(
        "Email address",
        validators=[
            DataRequired("Enter an email address like name@company.com."),
            Length(max=320, message="That is too long to be an email address."),
        ],
        render_kw={
            "type": "email",
            "spellcheck": "false",
            "autocapitalize": "none",
            "autocomplete": "off",
        },
    )


class AccessCheckForm(FlaskForm):
    """The access checker: a GET form that changes nothing, so no CSRF token."""

    class Meta:
        csrf = False

    address = StringField(
        "Email address to check",
        validators=[
            DataRequired("Enter the email address to check."),
            Length(max=320, message="That is too long to be an email address."),
        ],
        render_kw={"spellcheck": "false", "autocapitalize": "none", "autocomplete": "off"},
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
}


class AuditFilterForm(FlaskForm):
    """The audit trail's filters: a GET form that changes nothing, so no CSRF token."""

    class Meta:
        csrf = False

    action = SelectField(
        "Action",
        choices=[
            SelectChoice("", "Any action"),
            *(SelectChoice(key, f"{name} ({key}…)") for key, name in AUDIT_ACTIONS.items()),
        ],
        default="",
        validate_choice=False,
    )
    actor = StringField(
        "Actor contains",
        filters=[lambda value: value.strip() if isinstance(value, str) else value],
        validators=[Length(max=254, message="Type at most 254 characters.")],
        render_kw={"type": "search", "spellcheck": "false", "autocapitalize": "none"},
    )
    date_from = DateField("From", validators=[Optional()], render_kw={"type": "date"})
    date_to = DateField("To", validators=[Optional()], render_kw={"type": "date"})

    def validate_action(self, field: SelectField) -> None:
        if field.data and field.data not in AUDIT_ACTIONS:
            raise ValidationError("Choose an action from the list.")

    def validate_date_to(self, field: DateField) -> None:
        if field.data and self.date_from.data and field.data < self.date_from.data:
            raise ValidationError("The end date must be on or after the start date.")


ROLE_CHOICES = [
    SelectChoice("viewer", "Viewer: read and preview"),
    SelectChoice("account_manager", "Account manager: accounts, access rules, links"),
    SelectChoice("admin", "Admin: everything, including staff users"),
]


class StaffUserForm(FlaskForm):
    email = StringField(
        "Email address",
        validators=[InputRequired("Enter an email address."), Length(max=320)],
        render_kw={"type": "email", "autocomplete": "off", "spellcheck": "false"},
    )
    name = StringField("Name (optional)", validators=[Length(max=200)])
    role = SelectField("Role", choices=ROLE_CHOICES, default="viewer")
    password = PasswordField(
        "First password",
        validators=[Length(max=1000)],
        render_kw={"autocomplete": "new-password"},
    )
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
    name = StringField(
        "Name",
        filters=[_strip],
        validators=[
            DataRequired("Enter a name, such as the system that will use the key."),
            Length(max=100, message="The name can be at most 100 characters."),
            _plain_text,
        ],
        render_kw={"spellcheck": "false", "autocomplete": "off"},
    )
    scopes = CheckboxesField(
        "Scopes",
        choices=[SelectChoice(scope, scope) for scope in apikeys.SCOPES],
        default=["read"],
        validators=[_at_least_one("Choose at least one scope: read, write or both.")],
    )


class WebhookEndpointForm(FlaskForm):
    url = StringField(
        "Endpoint URL",
        filters=[_strip],
        validators=[InputRequired("Enter the URL the portal should POST events to.")],
        render_kw={"type": "url", "spellcheck": "false", "autocomplete": "off"},
    )
    description = StringField(
        "Description (optional)",
        filters=[_strip],
        validators=[
            Length(max=200, message="The description can be at most 200 characters."),
            _plain_text,
        ],
    )
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
