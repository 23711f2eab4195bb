"""Customer-side forms. Flask-WTF supplies the CSRF token on every one."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import InputRequired, Length

from portal.access import MAX_INPUT_LENGTH


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
        render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"},
    )


class ButtonForm(FlaskForm):
    """A form that is only a button (confirm, resend, sign out): just the CSRF token."""
