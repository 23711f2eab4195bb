"""File downloads shared by every face: one Content-Disposition, one invoice PDF.

A WSGI server writes headers as Latin-1 and drops the connection on anything else, so the
file name goes out twice (RFC 6266): an ASCII `filename` for old clients and the real
name as `filename*` in UTF-8, percent-encoded.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from flask import Response

from portal import invoice_pdf
from portal.models import Invoice


def ascii_filename(name: str) -> str:
    """Letters, digits, '-', '_' and '.' of the ASCII range; anything else becomes '_'."""
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in name)
    return safe.strip(".") or "download"


def attachment(filename: str) -> str:
    """The Content-Disposition value that saves the response as `filename`."""
    fallback = ascii_filename(filename)
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def invoice_pdf_response(invoice: Invoice, today: dt.date, locale: str) -> Response:
    """The invoice's PDF as a download named after its number, for customers and the API."""
    response = Response(
        invoice_pdf.render(invoice, today=today, locale=locale), mimetype="application/pdf"
    )
    response.headers["Content-Disposition"] = attachment(f"{invoice.number}.pdf")
    return response


def stored_file_response(filename: str, content_type: str, data: bytes) -> Response:
    """A file someone uploaded (a dispute's attachment), never shown by the browser: saved
    as an attachment, with the type its content was checked to be, and nosniff, in a
    sandbox should anything render it all the same."""
    response = Response(data, mimetype=content_type)
    response.headers["Content-Disposition"] = attachment(filename)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
