"""Input hygiene: the characters no path, query or form value may carry.

PostgreSQL refuses NUL in text (psycopg raises DataError, which would read as an
outage), a CR or LF in a value that reaches a header splits it, and other control
characters, DEL and lone surrogates are never part of anything a person types into a
one-line field. The portal has no multi-line fields, so none are allowed in a path or query; in form
bodies the fields' own validators refuse them (FORM_FORBIDDEN below).

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
# In form bodies only what no form field can refuse on its own: NUL (PostgreSQL refuses
# it), surrogates, and (by the strict decoding) invalid UTF-8, which Werkzeug would hand
# the form as U+FFFD. Every text field refuses the other controls itself, next to the
# field and keeping what was typed; a whole-page 400 would lose it.
FORM_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")
# A multipart form's fields arrive decoded by Werkzeug, which replaces invalid UTF-8 with
# U+FFFD: seeing one there is the only sign left of bytes the strict decoding refuses.
MULTIPART_FORBIDDEN = re.compile("[\x00\ud800-\udfff\ufffd]")
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


# Form fields that carry a URL path into a Location header (the sign-in pages' hidden
# `next`, copied from ?next=): held to the query string's rules, since no validator
# shows an error for a hidden field.
PATH_FIELDS = frozenset({"next"})


def _decode(part: bytes) -> str:
    return unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")


def clean_urlencoded(raw: bytes, forbidden: re.Pattern[str] = FORBIDDEN) -> bool:
    """Whether every name and value of a query string or urlencoded body is valid UTF-8
    without `forbidden` characters, percent-escapes and "+" decoded as Werkzeug decodes
    them (and PATH_FIELDS without any of FORBIDDEN)."""
    fields = []
    for pair in raw.split(b"&"):
        name, _, value = pair.partition(b"=")
        try:
            fields.append((_decode(name), _decode(value)))
        except UnicodeDecodeError:
            return False
    return clean_fields(fields, forbidden)


def clean_fields(fields: Iterable[tuple[str, str]], forbidden: re.Pattern[str] = FORBIDDEN) -> bool:
    """The same for (name, value) pairs another parser decoded (multipart forms)."""
    return all(
        forbidden.search(name) is None
        and (FORBIDDEN if name in PATH_FIELDS else forbidden).search(value) is None
        for name, value in fields
    )


def unclean_json_field(
    data: object, path: str = "", forbidden: re.Pattern[str] = JSON_FORBIDDEN
) -> str | None:
    """The dotted path of the first JSON key or string value with a forbidden
    character ("" for the top level), or None. Call it only on depth-checked data."""
    if isinstance(data, str):
        return path if forbidden.search(data) else None
    if isinstance(data, list):
        items: Iterable[tuple[str, object]] = ((str(i), v) for i, v in enumerate(data))
    elif isinstance(data, dict):
        items = data.items()
    else:
        return None
    for key, value in items:
        where = f"{path}.{key}" if path else key
        if forbidden.search(key):
            return where
        found = unclean_json_field(value, where, forbidden)
        if found is not None:
            return found
    return None
