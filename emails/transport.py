"""Delivering messages: SMTP through Flask-Mail (with the socket timeout it lacks, and one
connection for a whole batch), or the console in local development."""

from __future__ import annotations

import email.policy
import logging
import smtplib

from flask import current_app
from flask_mail import Connection, Mail, Message

from portal.config import settings

log = logging.getLogger(__name__)


class _TimeoutConnection(Connection):
    """Flask-Mail opens smtplib.SMTP without a timeout, so a stalled server would hang a
    worker for ever; this passes MAIL_TIMEOUT through."""

    def configure_host(self) -> smtplib.SMTP | smtplib.SMTP_SSL:
        timeout = float(settings().MAIL_TIMEOUT)
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

# Flask-Mail builds its message under policy.SMTP, whose header registry parses headers
# again each time the generator reads them: over half an outbox worker's CPU per message
# went there. compat32 with CRLF line ends writes the same bytes when every header is
# plain ASCII and short enough to need no folding (nearly every message we send), in
# under half the time. Any other message stays with policy.SMTP: compat32 folds long or
# encoded headers its own way (a non-ASCII subject arrived with a leading space).
_WIRE = email.policy.compat32.clone(linesep="\r\n")


def _needs_no_folding(name: str, value: object) -> bool:
    return isinstance(value, str) and value.isascii() and len(name) + 2 + len(value) <= 78


class _Message(Message):
    def as_bytes(self) -> bytes:
        built = self._message()
        plain = all(_needs_no_folding(name, value) for name, value in built.raw_items())
        return built.as_bytes(policy=_WIRE if plain else email.policy.SMTP)


def deliver(to: str, subject: str, text: str, html: str) -> None:
    """Send one message now; raises on failure so the outbox can retry."""
    with Sender() as sender:
        sender.deliver(to, subject, text, html)


class Sender:
    """Sends several messages over one SMTP connection (the outbox sends a claimed batch
    through one), instead of a connection, greeting and QUIT for every message.

    The connection is opened by the first message. A message that fails raises, as
    `deliver` does, and its connection is dropped, so the next message starts on a
    fresh one: a server that fails or goes away mid-batch costs each later message
    one connection attempt, exactly as when every message had a connection of its own.
    """

    def __init__(self) -> None:
        self._connection: Connection | None = None

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def deliver(self, to: str, subject: str, text: str, html: str) -> None:
        if settings().MAIL_TRANSPORT == "console":
            # The body holds sign-in secrets, which never go to a log: read it on the
            # debug-only mailbox page instead.
            base = settings().PORTAL_BASE_URL
            log.warning("email to %s: %r; read it at %s/dev/mailbox", to, subject, base)
            return
        message = _Message(subject=subject, recipients=[to], body=text, html=html)
        reused = self._connection is not None
        while True:
            try:
                if self._connection is None:
                    self._connection = mail.connect().__enter__()
                self._connection.send(message)
                return
            except smtplib.SMTPServerDisconnected:
                self._drop()
                if not reused:
                    raise
                # The server closed a connection that waited between two messages (a
                # slow database write, an idle timeout): once more, on a new one.
                reused = False
            except BaseException:
                self._drop()
                raise

    def close(self) -> None:
        """QUIT politely; a connection that is already broken is just closed."""
        connection, self._connection = self._connection, None
        if connection is not None and connection.host is not None:
            try:
                connection.host.quit()
            except (smtplib.SMTPException, OSError):
                connection.host.close()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.host is not None:
            connection.host.close()
