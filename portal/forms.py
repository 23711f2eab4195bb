"""Form parts every face uses: the one-button form, the GET form, the input that never
shows what was typed, and the field builders. Flask-WTF supplies the CSRF token on every
POST form."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypedDict, Unpack

from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import Field, StringField
from wtforms.validators import InputRequired, Length, ValidationError
from wtforms.widgets import TextInput


class ButtonForm(FlaskForm):
    """A form that is only a button (confirm, resend, sign out): just the CSRF token."""


class QueryForm(FlaskForm):
    """A GET form (a search, a list's filters): it changes nothing, so no CSRF token."""

    class Meta:
        csrf = False


class SecretInput(TextInput):
    """A text input that is never rendered with what was typed: a refused code is a
    secret all the same (someone else's, or one a shoulder could read)."""

    def __call__(self, field: Field, **kwargs: object) -> Markup:
        kwargs["value"] = ""
        rendered: Markup = super().__call__(field, **kwargs)
        return rendered


class Attributes(TypedDict, total=False):
    """The HTML attributes the builders set on an input."""

    type: str
    autocomplete: str
    autocapitalize: str
    spellcheck: str
    inputmode: str
    maxlength: int


def text(
    label: str,
    *validators: object,
    filters: Iterable[Callable[..., object]] = (),
    widget: object = None,
    **attributes: Unpack[Attributes],
) -> StringField:
    """A text input: its label, its validators in order, and its HTML attributes by name
    (autocomplete="email", inputmode="numeric")."""
    return StringField(
        label,
        validators=list(validators),
        filters=list(filters),
        widget=widget,
        render_kw=attributes or None,
    )


def code(label: str, message: str) -> StringField:
    """A one-time code (from an email or an authenticator app): required, and never
    written back, even when refused."""
    return text(
        label,
        InputRequired(message),
        Length(max=20),
        widget=SecretInput(),
        autocomplete="one-time-code",
        inputmode="numeric",
    )


def on_or_after(
    start: str, message: str = "The end date must be on or after the start date."
) -> Callable[[FlaskForm, Field], None]:
    """The check for the end of a date range, not before the form's field `start`: as a
    form's `validate_<end>` it runs after the end field's own validators."""

    def check(form: FlaskForm, field: Field) -> None:
        begins = form[start].data
        if field.data and begins and field.data < begins:
            raise ValidationError(message)

    return check


def status_of(form: Iterable[Field]) -> int:
    """The status a page with this form answers: 400 while any field shows an error."""
    return 400 if any(field.errors for field in form) else 200
