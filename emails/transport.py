"""Delivering messages: SMTP through Flask-Mail (with the socket timeout it lacks, and one
connection for a whole batch), or the console in local development."""

from __future__ import annotations

import email.policy
import email.utils
import logging
import smtplib
from email.mime.base import MIMEBase

from flask import current_app
from flask_mail import Connection, Mail, Message

from emails.render import Attachment
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
# RFC 8058 one-click unsubscribe: the URL must arrive exactly as written. Folded, a long
# URL has no whitespace to break at and policy.SMTP writes it as RFC 2047 encoded words,
# which no mail client reads as a URL (tried). These headers are built by us, ASCII and
# without line breaks (`build` checks), and stay within the 998 octets of RFC 5322
# 2.1.1, so they are written on one line under either policy.
VERBATIM = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
MAX_HEADER_LINE = 998


def _one_line(name: str, value: str, linesep: str) -> str:
    return f"{name}: {value}{linesep}"


class _Compat32(email.policy.Compat32):
    def fold(self, name: str, value: str) -> str:
        if name.lower() in VERBATIM:
            return _one_line(name, value, self.linesep)
        return super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in VERBATIM:
            return _one_line(name, value, self.linesep).encode("ascii")
        return super().fold_binary(name, value)


class _SMTP(email.policy.EmailPolicy):
    def fold(self, name: str, value: str) -> str:
        if name.lower() in VERBATIM:
            return _one_line(name, value, self.linesep)
        folded: str = super().fold(name, value)
        return folded

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in VERBATIM:
            return _one_line(name, value, self.linesep).encode("ascii")
        return super().fold_binary(name, value)


_WIRE = _Compat32(linesep="\r\n")
_SMTP_WIRE = _SMTP(linesep="\r\n")


def _needs_no_folding(name: str, value: object) -> bool:
    if name.lower() in VERBATIM:
        return True  # written as it is under either policy
    return isinstance(value, str) and value.isascii() and len(name) + 2 + len(value) <= 78


def _check_verbatim(name: str, value: str) -> None:
    if (
        not value.isascii()
        or any(char in value for char in "\r\n\0")
        or len(name) + 2 + len(value) > MAX_HEADER_LINE
    ):
        raise ValueError(f"header {name} cannot be written on one line")


# RFC 3834: a message no person wrote. Out-of-office replies and other auto-responders
# must not answer it (Auto-Submitted); Exchange and Outlook only heed their own header.
AUTOMATIC = {"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"}


def sender_domain(sender: str) -> str:
    """The domain of MAIL_DEFAULT_SENDER ("Name <billing@example.com>"), for the
    Message-ID: make_msgid() would name this host, often localhost, which spam filters
    and threading both hold against us."""
    _name, address = email.utils.parseaddr(sender)
    domain = address.rpartition("@")[2].strip().lower()
    if not domain:
        raise ValueError(f"MAIL_DEFAULT_SENDER has no domain: {sender!r}")
    return domain


class _Message(Message):
    def _message(self) -> MIMEBase:
        """Flask-Mail wraps text and HTML in multipart/mixed even without an attachment;
        a message with no attachment is the multipart/alternative alone (plain text first,
        then HTML), with the outer message's headers. With attachments it stays mixed."""
        built: MIMEBase = super()._message()
        if self.attachments or not self.alts:
            return built
        parts = built.get_payload()
        alternative = parts[0] if isinstance(parts, list) and len(parts) == 1 else None
        if not isinstance(alternative, MIMEBase):
            return built
        for name, value in built.items():
            if name.lower() not in ("content-type", "mime-version"):
                alternative[name] = value
        return alternative

    def as_bytes(self) -> bytes:
        built = self._message()
        plain = all(_needs_no_folding(name, value) for name, value in built.raw_items())
        return built.as_bytes(policy=_WIRE if plain else _SMTP_WIRE)


def build(
    to: str,
    subject: str,
    text: str,
    html: str,
    reply_to: str | None = None,
    attachments: tuple[Attachment, ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
) -> _Message:
    """The message as it goes out: From MAIL_DEFAULT_SENDER, a Message-ID on its domain,
    marked as automatic, Reply-To the seller's contact when it is sent for one, and any
    extra headers it was queued with."""
    sender = settings().MAIL_DEFAULT_SENDER
    extra = dict(AUTOMATIC)
    for name, value in headers:
        if name.lower() in VERBATIM:
            _check_verbatim(name, value)
        extra[name] = value
    message = _Message(
        subject=subject,
        recipients=[to],
        body=text,
        html=html,
        sender=sender,
        reply_to=reply_to,
        extra_headers=extra,
    )
    message.msgId = email.utils.make_msgid(domain=sender_domain(sender))
    for attachment in attachments:
        message.attach(attachment.filename, attachment.content_type, attachment.data)
    return message


def deliver(to: str, subject: str, text: str, html: str, reply_to: str | None = None) -> None:
    """Send one message now; raises on failure so the outbox can retry."""
    with Sender() as sender:
        sender.deliver(to, subject, text, html, reply_to)


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

    def deliver(
        self,
        to: str,
        subject: str,
        text: str,
        html: str,
        reply_to: str | None = None,
        attachments: tuple[Attachment, ...] = (),
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if settings().MAIL_TRANSPORT == "console":
            # The body holds sign-in secrets, which never go to a log: read it on the
            # debug-only mailbox page instead.
            base = settings().PORTAL_BASE_URL
            log.warning("email to %s: %r; read it at %s/dev/mailbox", to, subject, base)
            return
        message = build(to, subject, text, html, reply_to, attachments, headers)
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
