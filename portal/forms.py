"""Form parts every face uses: the one-button form and the input that never shows what
was typed. Flask-WTF supplies the CSRF token on every POST form."""

from __future__ import annotations

from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import Field
from wtforms.widgets import TextInput


class ButtonForm(FlaskForm):
    """A form that is only a button (confirm, resend, sign out): just the CSRF token."""


class SecretInput(TextInput):
    """A text input that is never rendered with what was typed: a refused code is a
    secret all the same (someone else's, or one a shoulder could read)."""

    def __call__(self, field: Field, **kwargs: object) -> Markup:
        kwargs["value"] = ""
        rendered: Markup = super().__call__(field, **kwargs)
        return rendered
