"""Request bodies, read whole before any view, however they are framed.

Werkzeug reads a body the server has de-chunked (gunicorn's, its own) only up to
MAX_CONTENT_LENGTH and then stops without a word, so a 2 MiB chunked body was cut at
1 MiB and accepted; and a body that ends before its Content-Length (the client went
away) read as complete. Here the body is read to one byte past the limit and refused
if it gets there (413), refused if it is shorter than it said (400), and refused if it
is compressed (415: no view decompresses it), the same for the API and every form.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import IO, Any, TypeVar

from flask import Request as FlaskRequest
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType
from werkzeug.http import parse_set_header
from werkzeug.utils import cached_property
from werkzeug.wsgi import get_content_length

# What a refused body is read on for, unanswered, so that the client, still sending,
# reads the error instead of a reset connection; beyond it the connection is dropped.
DRAIN_BYTES = 8 * 1024 * 1024
_CHUNK = 64 * 1024


class CutShort(BadRequest):
    description = "The request body ended before it was complete: send it again."


class TooLarge(RequestEntityTooLarge):
    description = "The request body is too large."


class Encoded(UnsupportedMediaType):
    description = "The body is compressed (Content-Encoding): send it uncompressed."


V = TypeVar("V", bound=Callable[..., Any])


def larger_body(limit: Callable[[], int], advice: str) -> Callable[[V], V]:
    """Let one view take a body of up to limit() bytes instead of MAX_CONTENT_LENGTH (a
    file upload); a larger one is refused with a 413 page that gives `advice`. Put it
    under the route decorator: the app finds it on the view it registered."""

    def mark(view: V) -> V:
        setattr(view, "max_body_bytes", limit)  # noqa: B010 (a function attribute)
        setattr(view, "too_large_advice", advice)  # noqa: B010
        return view

    return mark


class Request(FlaskRequest):
    """Flask's request, with the body read by read_whole()."""

    @cached_property
    def stream(self) -> IO[bytes]:
        return io.BytesIO(read_whole(self.environ, self.max_content_length))


def read_whole(environ: dict[str, Any], limit: int | None) -> bytes:
    """The request body, all of it, or CutShort, TooLarge or Encoded."""
    declared = get_content_length(environ)  # None when chunked or not given
    transfer = str(environ.get("HTTP_TRANSFER_ENCODING", ""))
    chunked = declared is None and "chunked" in parse_set_header(transfer.lower())
    # Without a length or chunks there is no body; and a server that leaves chunks in
    # the stream (not wsgi.input_terminated) gives nothing safe to read: Werkzeug's rule.
    if declared == 0 or (not chunked and declared is None):
        return b""
    if chunked and not environ.get("wsgi.input_terminated"):
        return b""
    stream: IO[bytes] = environ["wsgi.input"]
    encodings = parse_set_header(str(environ.get("HTTP_CONTENT_ENCODING", "")).lower())
    if any(coding != "identity" for coding in encodings):
        _drain(stream, declared)
        raise Encoded()
    if limit is not None and declared is not None and declared > limit:
        _drain(stream, declared)
        raise TooLarge()
    wanted = declared if declared is not None else (None if limit is None else limit + 1)
    data = _read(stream, wanted)
    if declared is not None and len(data) < declared:
        raise CutShort()
    if limit is not None and len(data) > limit:
        _drain(stream, None)
        raise TooLarge()
    return data


def _read(stream: IO[bytes], wanted: int | None) -> bytes:
    parts, got = [], 0
    while wanted is None or got < wanted:
        size = _CHUNK if wanted is None else min(_CHUNK, wanted - got)
        try:
            part = stream.read(size)
        except (OSError, ValueError):  # the client went away, or sent broken chunks
            raise CutShort() from None
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _drain(stream: IO[bytes], declared: int | None) -> None:
    if declared is not None and declared > DRAIN_BYTES:
        return
    try:
        _read(stream, DRAIN_BYTES if declared is None else declared)
    except CutShort:
        pass
