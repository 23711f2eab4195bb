"""Building and sending messages: templates in templates/emails/<name>/, a durable
outbox, and the sender. Never imports a face."""

from __future__ import annotations

from flask import Flask

from emails.transport import mail


def init_app(app: Flask) -> None:
    # Flask-Mail silently drops mail when TESTING; MAIL_TRANSPORT is our one switch, and
    # the tests deliver to a real SMTP server.
    app.config["MAIL_SUPPRESS_SEND"] = False
    mail.init_app(app)
