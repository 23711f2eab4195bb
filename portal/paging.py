"""Paged lists (invoices, accounts, the audit trail, webhook deliveries): the page number
a query string asks for, read the one way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Past any real list's end; the list queries clamp to their last page.
MAX_PAGE = 10**9


def page_number(raw: str | None) -> int:
    """The page asked for, from 1 to MAX_PAGE. Only ASCII digits count (str.isdigit()
    admits "²", which int() refuses, and int() admits " 2" and "+2"); anything else is
    page 1, and a huge number is simply past the end."""
    if not raw or not (raw.isascii() and raw.isdigit()):
        return 1
    return max(1, int(raw)) if len(raw) <= 9 else MAX_PAGE


def clamp(wanted: int, total: int, per_page: int) -> int:
    """The page to show for the one asked for: at least 1, at most the last page, so that a
    number past the end (MAX_PAGE) shows the last page rather than an empty one."""
    return min(max(wanted, 1), max(1, -(-total // per_page)))


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its rows, the whole list's length, this page's number (from 1)
    and the page size; the figures the templates show ("Showing 26–30 of 30", "Page 2 of
    2") are worked out here, the one way."""

    rows: list[T]
    total: int
    number: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def first_item(self) -> int:
        return (self.number - 1) * self.per_page + 1 if self.rows else 0

    @property
    def last_item(self) -> int:
        return (self.number - 1) * self.per_page + len(self.rows)

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages
