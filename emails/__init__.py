"""Building and sending messages: templates in templates/emails/<name>/, a durable
outbox, and the sender. Never imports a face."""

from __future__ import annotations

from flask import Flask

from emails.transport import mail


def init_app(app: Flask) -> None:
    mail.init_app(app)
