"""The customers' forms. Flask-WTF supplies the CSRF token on every POST form; the rules
of what a value may be live in portal.details and portal.access, not here (the forms
take only their lengths from there, for the inputs' maxlength)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    HiddenField,
    SelectChoice,
    SelectField,
    StringField,
)
from wtforms.validators import InputRequired, Length, Optional, ValidationError

from portal.access import MAX_INPUT_LENGTH
from portal.details import BILLING_DETAILS, CONTACT, Rule
from portal.forms import SecretInput


class EmailForm(FlaskForm):
    email = StringField(
        "Work email address",
        validators=[InputRequired("Enter your email address."), Length(max=MAX_INPUT_LENGTH)],
        render_kw={"autocomplete": "email", "type": "email", "spellcheck": "false"},
    )
    next = HiddenField()


class CodeForm(FlaskForm):
    code = StringField(
        "Code from the email",
        validators=[InputRequired("Enter the code from the email."), Length(max=20)],
        widget=SecretInput(),
        render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"},
    )


# --- portal pages --------------------------------------------------------------------


class InvoiceFilterForm(FlaskForm):
    """The invoice list's filters: a GET form, so no CSRF token (it changes nothing)."""

    class Meta:
        csrf = False

    status = SelectField(
        "Status",
        choices=[
            SelectChoice("", "Any status"),
            SelectChoice("open", "Open"),
            SelectChoice("overdue", "Overdue"),
            SelectChoice("paid", "Paid"),
            SelectChoice("void", "Void"),
        ],
        default="",
    )
    issued_from = DateField("Issued from", validators=[Optional()])
    issued_to = DateField("Issued to", validators=[Optional()])
    number = StringField("Invoice number", validators=[Optional(), Length(max=40)])

    def validate_issued_to(self, field: DateField) -> None:
        if field.data and self.issued_from.data and field.data < self.issued_from.data:
            raise ValidationError("The end date must be on or after the start date.")


def _limit(rule: Rule) -> list[Length]:
    """The rule's length as the input's maxlength (and its message, for a browser that
    ignores it); what a value may be is the rule's, checked by the action."""
    return [] if rule.max_length is None else [Length(max=rule.max_length)]


class BillingDetailsForm(FlaskForm):
    po_number = StringField(
        "Purchase order (PO) number", validators=_limit(BILLING_DETAILS["po_number"])
    )
    vat_number = StringField(
        "VAT number",
        validators=_limit(BILLING_DETAILS["vat_number"]),
        render_kw={"spellcheck": "false"},
    )
    registration_number = StringField(
        "Company registration number", validators=_limit(BILLING_DETAILS["registration_number"])
    )


class ContactForm(FlaskForm):
    same_as_billing = BooleanField("Same address as the billing contact")
    name = StringField(
        "Full name",
        validators=[InputRequired("Enter a name."), *_limit(CONTACT["name"])],
        render_kw={"autocomplete": "name"},
    )
    company = StringField(
        "Company", validators=_limit(CONTACT["company"]), render_kw={"autocomplete": "organization"}
    )
    email = StringField(
        "Email address",
        validators=_limit(CONTACT["email"]),
        render_kw={"autocomplete": "email", "type": "email", "spellcheck": "false"},
    )
    phone = StringField(
        "Phone number",
        validators=_limit(CONTACT["phone"]),
        render_kw={"autocomplete": "tel", "type": "tel"},
    )
    line1 = StringField(
        "Address line 1",
        validators=_limit(CONTACT["line1"]),
        render_kw={"autocomplete": "address-line1"},
    )
    line2 = StringField(
        "Address line 2 (optional)",
        validators=_limit(CONTACT["line2"]),
        render_kw={"autocomplete": "address-line2"},
    )
    city = StringField(
        "Town or city",
        validators=_limit(CONTACT["city"]),
        render_kw={"autocomplete": "address-level2"},
    )
    region = StringField(
        "County, state or region (optional)",
        validators=_limit(CONTACT["region"]),
        render_kw={"autocomplete": "address-level1"},
    )
    postal_code = StringField(
        "Postcode",
        validators=_limit(CONTACT["postal_code"]),
        render_kw={"autocomplete": "postal-code"},
    )
    country = SelectField("Country", choices=[], render_kw={"autocomplete": "country"})


class CardForm(FlaskForm):
    """The sandbox gateway's card form. A real gateway tokenises in the browser instead."""

    holder_name = StringField(
        "Name on card",
        validators=[InputRequired("Enter the name on the card."), Length(max=200)],
        render_kw={"autocomplete": "cc-name"},
    )
    number = StringField(
        "Card number",
        validators=[InputRequired("Enter the card number."), Length(max=30)],
        render_kw={"autocomplete": "cc-number", "inputmode": "numeric"},
    )
    exp_month = StringField(
        "Month (MM)",
        validators=[InputRequired("Enter the expiry month."), Length(max=2)],
        render_kw={"autocomplete": "cc-exp-month", "inputmode": "numeric"},
    )
    exp_year = StringField(
        "Year (YY)",
        validators=[InputRequired("Enter the expiry year."), Length(max=4)],
        render_kw={"autocomplete": "cc-exp-year", "inputmode": "numeric"},
    )
    cvc = StringField(
        "Security code",
        validators=[InputRequired("Enter the security code."), Length(max=4)],
        render_kw={"autocomplete": "cc-csc", "inputmode": "numeric"},
    )
    make_default = BooleanField("Use this card for automatic payments (make it the default)")
