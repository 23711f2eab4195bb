"""Keep sign-in tokens out of request logs: the dev server's and gunicorn's. That is the
emailed link's token, and the company sign-in callback's authorization code and state."""

from __future__ import annotations

import logging
import re
from typing import Any

from gunicorn.glogging import Logger


def _spelled(text: str) -> str:
    """A pattern for `text` as a request line may carry it: the server routes on the
    percent-decoded path, so /p/x/sess%69on/<token> and /p/x%2Fsession%2F<token> open
    the same link as /p/x/session/<token>, and the raw line the access log writes must
    be redacted in every spelling (case-insensitive: over-redacting is harmless)."""
    return "".join(f"(?:{re.escape(ch)}|%{ord(ch):02x})" for ch in text)


# The emailed sign-in link's token, and a portal session's (/p/<id>/session/<token>):
# everything after the marker up to the query, so an encoded slash cannot end it early.
TOKEN_IN_PATH = re.compile(
    f'((?:{_spelled("/verify/")}|{_spelled("/session/")}))[^?#\\s"]+', re.IGNORECASE
)
# /sso/callback?code=...&state=...: a code is single use and needs the PKCE verifier, but
# neither belongs in a log.
CALLBACK_SECRETS = re.compile(f'({_spelled("/sso/callback")}\\?)[^\\s"#]*', re.IGNORECASE)


def redact(text: str) -> str:
    text = TOKEN_IN_PATH.sub(r"\1[redacted]", text)
    return CALLBACK_SECRETS.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Rewrites a record's message so no /verify/<token> or /session/<token> survives."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install(logger_names: tuple[str, ...] = ("werkzeug", "gunicorn.access")) -> None:
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


class GunicornLogger(Logger):
    """gunicorn's logger with every access-log atom redacted."""

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> Any:
        atoms = super().atoms(resp, req, environ, request_time)
        # Every atom: the request line, path and query, and the environ and header atoms
        # ({raw_uri}e, {path_info}e, {referer}i) that a custom format might use.
        return {k: redact(v) if isinstance(v, str) else v for k, v in atoms.items()}
