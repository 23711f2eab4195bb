"""The customers' forms. Flask-WTF supplies the CSRF token on every POST form; the rules
of what a value may be live in portal.details and portal.access, not here (the forms
take only their lengths from there, for the inputs' maxlength)."""

from __future__ import annotations

from typing import Unpack

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import (
    BooleanField,
    DateField,
    HiddenField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import InputRequired, Length, Optional, Regexp

from portal.access import MAX_INPUT_LENGTH
from portal.details import BILLING_DETAILS, CONTACT, Rule
from portal.disputes import MESSAGE_MAX
from portal.forms import Attributes, QueryForm, code, on_or_after, text


class EmailForm(FlaskForm):
    email = text(
        "Work email address",
        InputRequired("Enter your email address."),
        Length(max=MAX_INPUT_LENGTH),
        autocomplete="email",
        type="email",
        spellcheck="false",
    )
    next = HiddenField()


class SwitchForm(FlaskForm):
    """The switch to another bill group: a button, and the page to land on there."""

    next = HiddenField()


class InvoiceCopyForm(FlaskForm):
    """One address that should receive copies of the invoices (checked by the action)."""

    email = text(
        "Email address",
        InputRequired("Enter the email address that should receive the invoices."),
        Length(max=MAX_INPUT_LENGTH),
        autocomplete="off",
        type="email",
        spellcheck="false",
    )


class CodeForm(FlaskForm):
    code = code("Code from the email", "Enter the code from the email.")


# --- portal pages --------------------------------------------------------------------


class InvoiceFilterForm(QueryForm):
    """The invoice list's filters."""

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
    number = text("Invoice number", Optional(), Length(max=40))

    validate_issued_to = on_or_after("issued_from")


def _limit(rule: Rule) -> list[Length]:
    """The rule's length as the input's maxlength (and its message, for a browser that
    ignores it); what a value may be is the rule's, checked by the action."""
    return [] if rule.max_length is None else [Length(max=rule.max_length)]


def _detail(
    label: str, rule: Rule, *required: InputRequired, **attributes: Unpack[Attributes]
) -> StringField:
    """A billing detail or contact field: what it requires, then the rule's length."""
    return text(label, *required, *_limit(rule), **attributes)


class BillingDetailsForm(FlaskForm):
    po_number = _detail("Purchase order (PO) number", BILLING_DETAILS["po_number"])
    vat_number = _detail("VAT number", BILLING_DETAILS["vat_number"], spellcheck="false")
    registration_number = _detail(
        "Company registration number", BILLING_DETAILS["registration_number"]
    )


class ContactForm(FlaskForm):
    same_as_billing = BooleanField("Same address as the billing contact")
    name = _detail(
        "Full name", CONTACT["name"], InputRequired("Enter a name."), autocomplete="name"
    )
    company = _detail("Company", CONTACT["company"], autocomplete="organization")
    email = _detail(
        "Email address", CONTACT["email"], autocomplete="email", type="email", spellcheck="false"
    )
    phone = _detail("Phone number", CONTACT["phone"], autocomplete="tel", type="tel")
    line1 = _detail("Address line 1", CONTACT["line1"], autocomplete="address-line1")
    line2 = _detail("Address line 2 (optional)", CONTACT["line2"], autocomplete="address-line2")
    city = _detail("Town or city", CONTACT["city"], autocomplete="address-level2")
    region = _detail(
        "County, state or region (optional)", CONTACT["region"], autocomplete="address-level1"
    )
    postal_code = _detail("Postcode", CONTACT["postal_code"], autocomplete="postal-code")
    country = SelectField("Country", choices=[], render_kw={"autocomplete": "country"})


def _card(
    label: str, message: str, max_length: int, autocomplete: str, *, digits: bool = True
) -> StringField:
    """A card field the holder must fill in; one of digits is typed on a number pad."""
    attributes: Attributes = {"autocomplete": autocomplete}
    if digits:
        attributes["inputmode"] = "numeric"
    return text(label, InputRequired(message), Length(max=max_length), **attributes)


class CardForm(FlaskForm):
    """The sandbox gateway's card form. A real gateway tokenises in the browser instead."""

    holder_name = _card("Name on card", "Enter the name on the card.", 200, "cc-name", digits=False)
    number = _card("Card number", "Enter the card number.", 30, "cc-number")
    exp_month = _card("Month (MM)", "Enter the expiry month.", 2, "cc-exp-month")
    exp_year = _card("Year (YY)", "Enter the expiry year.", 4, "cc-exp-year")
    cvc = _card("Security code", "Enter the security code.", 4, "cc-csc")
    make_default = BooleanField("Use this card for automatic payments (make it the default)")


# --- paying ---------------------------------------------------------------------------


class PayForm(FlaskForm):
    """The pay form: which saved method, and how much when part payments are allowed.
    The invoices are posted as `invoice` fields (none: the whole outstanding balance)."""

    method = RadioField("Pay with", coerce=int, validate_choice=False)
    amount = text("Amount to pay", Optional(), Length(max=20), inputmode="decimal")
    currency = HiddenField()


class ConfirmPaymentForm(FlaskForm):
    """The review page's one button: the attempt's key and the amount it showed."""

    key = HiddenField(validators=[InputRequired(), Length(max=64)])
    amount_minor = HiddenField(validators=[InputRequired(), Length(max=20)])


class PaymentFilterForm(QueryForm):
    """The payment history's date filter."""

    paid_from = DateField("Paid from", validators=[Optional()])
    paid_to = DateField("Paid to", validators=[Optional()])

    validate_paid_to = on_or_after("paid_from")


class ApplyCreditForm(FlaskForm):
    """Apply a credit (a credit note's remainder or an unapplied payment) to an open
    invoice. The choices are the bill group's, set by the view; the action checks
    everything again under the bill group's lock."""

    # No `required` attribute (a select whose first option is a real choice may not have
    # one); a value that is not one of the choices is refused by the field itself.
    source = SelectField("Credit to apply")
    invoice = SelectField("Invoice")
    amount = text(
        "Amount",
        InputRequired("Enter an amount."),
        Length(max=24),
        inputmode="decimal",
        autocomplete="off",
    )


class AutopayForm(FlaskForm):
    """Turn automatic payment on or off (the button says which)."""

    enabled = HiddenField()


class StatementForm(QueryForm):
    """The statement's period."""

    date_from = DateField("From", validators=[InputRequired("Enter the first day.")])
    date_to = DateField("To", validators=[InputRequired("Enter the last day.")])

    validate_date_to = on_or_after("date_from", "The last day must be on or after the first.")


class StripeCardForm(FlaskForm):
    """The Stripe gateway's card form: the card itself is in Stripe's Element (in the
    browser, never posted here); the page's script confirms the SetupIntent and fills
    in `payment_method` with the PaymentMethod id Stripe returns."""

    holder_name = text(
        "Name on card (optional)", Optional(), Length(max=200), autocomplete="cc-name"
    )
    payment_method = HiddenField(
        validators=[
            InputRequired("Enter your card details."),
            Regexp(r"^pm_[A-Za-z0-9_]{1,250}$", message="Enter your card details again."),
        ]
    )
    make_default = BooleanField("Use this card for automatic payments (make it the default)")


class ChangeRequestForm(QueryForm):
    """Picking a change to a subscription (a GET form: the review page asks, with its own
    button). The choices are the subscription's; the rules are the action's."""

    plan = RadioField("New plan", choices=[], validate_choice=False)
    quantity = text("New quantity", Length(max=9), inputmode="numeric", autocomplete="off")
    reason = SelectField("Why are you cancelling?", choices=[], validate_choice=False)


class ChangeNoteForm(FlaskForm):
    """The review page's one button, with the customer's note: posted, never in a URL
    (a query string ends up in history and access logs)."""

    comment = TextAreaField(
        "Anything the billing team should know (optional)", validators=[Length(max=1000)]
    )


# --- questions and disputes ----------------------------------------------------------


class DisputeForm(FlaskForm):
    """Raising a question or dispute on an invoice (multipart: it may carry a file). The
    rules of each value are portal.actions.disputes'; the lengths here are the inputs'."""

    kind = RadioField(
        "What would you like to do?",
        choices=[
            SelectChoice("question", "Ask a question about this invoice"),
            SelectChoice("dispute", "Dispute this invoice"),
        ],
        validate_choice=False,
    )
    reason = SelectField("Why do you dispute it?", choices=[], validate_choice=False)
    message = TextAreaField("Your message", validators=[Length(max=MESSAGE_MAX)])
    attachment = FileField("Attach a file (optional)")


class DisputeReplyForm(FlaskForm):
    """Writing again on an open question or dispute."""

    message = TextAreaField("Your reply", validators=[Length(max=MESSAGE_MAX)])
    attachment = FileField("Attach a file (optional)")
