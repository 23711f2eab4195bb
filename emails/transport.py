"""Delivering one message: SMTP through Flask-Mail (with the socket timeout it lacks),
or the console in local development."""

from __future__ import annotations

import logging
import smtplib

from flask import current_app
from flask_mail import Connection, Mail, Message

log = logging.getLogger(__name__)


class _TimeoutConnection(Connection):
    """Flask-Mail opens smtplib.SMTP without a timeout, so a stalled server would hang a
    worker for ever; this passes MAIL_TIMEOUT through."""

    def configure_host(self) -> smtplib.SMTP | smtplib.SMTP_SSL:
        timeout = float(current_app.config["MAIL_TIMEOUT"])
        host: smtplib.SMTP | smtplib.SMTP_SSL
        if self.mail.use_ssl:
            host = smtplib.SMTP_SSL(self.mail.server, self.mail.port, timeout=timeout)
        else:
            host = smtplib.SMTP(self.mail.server, self.mail.port, timeout=timeout)
        if self.mail.use_tls:
            host.starttls()
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host


class _Mail(Mail):
    def connect(self) -> Connection:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        return _TimeoutConnection(app.extensions["mail"])


mail = _Mail()


def deliver(to: str, subject: str, text: str, html: str) -> None:
    """Send one message now; raises on failure so the outbox can retry."""
    if current_app.config["MAIL_TRANSPORT"] == "console":
        # The body holds sign-in secrets, which never go to a log: read it on the
        # debug-only mailbox page instead.
        base = current_app.config["PORTAL_BASE_URL"]
        log.warning("email to %s: %r; read it at %s/dev/mailbox", to, subject, base)
        return
    message = Message(subject=subject, recipients=[to], body=text, html=html)
    mail.send(message)
