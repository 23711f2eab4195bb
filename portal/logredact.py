"""Keep sign-in tokens out of request logs: the dev server's and gunicorn's. That is the
emailed link's token, and the company sign-in callback's authorization code and state."""

from __future__ import annotations

import logging
import re
from typing import Any

from gunicorn.glogging import Logger

# The emailed sign-in link's token, and a portal session's (/p/<id>/session/<token>).
TOKEN_IN_PATH = re.compile(r"(/verify/|/session/)[^/?#\s\"]+")
# /sso/callback?code=...&state=...: a code is single use and needs the PKCE verifier, but
# neither belongs in a log.
CALLBACK_SECRETS = re.compile(r"(/sso/callback\?)[^\s\"#]*")


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
