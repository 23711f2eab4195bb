"""Input hygiene: the characters no path, query or form value may carry.

PostgreSQL refuses NUL in text (psycopg raises DataError, which would read as an
outage), a CR or LF in a value that reaches a header splits it, and other control
characters, DEL and lone surrogates are never part of anything a person types into a
one-line field. The portal has no multi-line fields, so none are allowed anywhere.

The checks decode the raw bytes strictly: Werkzeug's own decoding replaces invalid
UTF-8 with U+FFFD, which would hide it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

# C0 controls (tab, CR and LF included), DEL, C1 controls and surrogates: strict UTF-8
# decoding already refuses encoded surrogates; the range also catches "\ud800" from a
# JSON escape, which the JSON parser lets through.
FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# In JSON strings a billing system may send multi-line text (an address, a note), so tab,
# CR and LF pass; NUL (which PostgreSQL refuses), the other C0 controls, DEL and lone
# surrogates (which cannot be encoded to store) do not.
JSON_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def clean_text(value: str) -> bool:
    """Whether a decoded value is free of forbidden characters."""
    return FORBIDDEN.search(value) is None


def clean_bytes(raw: bytes) -> bool:
    """Whether raw bytes are valid UTF-8 (no encoded surrogates) and clean once decoded."""
    try:
        return clean_text(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return False


def wsgi_bytes(value: str) -> bytes:
    """The bytes behind a WSGI environ string, which PEP 3333 carries as Latin-1."""
    return value.encode("latin-1", "replace")


def clean_urlencoded(raw: bytes) -> bool:
    """Whether every name and value of a query string or urlencoded form body is clean,
    percent-escapes and "+" decoded as Werkzeug will decode them."""
    for pair in raw.split(b"&"):
        for part in pair.split(b"=", 1):
            if not clean_bytes(unquote_to_bytes(part.replace(b"+", b" "))):
                return False
    return True


def clean_values(values: Iterable[str]) -> bool:
    return all(clean_text(value) for value in values)


def unclean_json_field(data: object, path: str = "") -> str | None:
    """The dotted path of the first JSON key or string value with a forbidden
    character ("" for the top level), or None. Call it only on depth-checked data."""
    if isinstance(data, str):
        return path if JSON_FORBIDDEN.search(data) else None
    if isinstance(data, list):
        items: Iterable[tuple[str, object]] = ((str(i), v) for i, v in enumerate(data))
    elif isinstance(data, dict):
        items = data.items()
    else:
        return None
    for key, value in items:
        where = f"{path}.{key}" if path else key
        if JSON_FORBIDDEN.search(key):
            return where
        found = unclean_json_field(value, where)
        if found is not None:
            return found
    return None
