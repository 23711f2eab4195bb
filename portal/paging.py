"""Paged lists (invoices, accounts, the audit trail, webhook deliveries): the page number
a query string asks for, read the one way."""

from __future__ import annotations

# Past any real list's end; the list queries clamp to their last page.
MAX_PAGE = 10**9


def page_number(raw: str | None) -> int:
    """The page asked for, from 1 to MAX_PAGE. Only ASCII digits count (str.isdigit()
    admits "²", which int() refuses, and int() admits " 2" and "+2"); anything else is
    page 1, and a huge number is simply past the end."""
    if not raw or not (raw.isascii() and raw.isdigit()):
        return 1
    return max(1, int(raw)) if len(raw) <= 9 else MAX_PAGE
