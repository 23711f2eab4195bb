"""The one Page[T] every paged list uses: the figures the templates show."""

from __future__ import annotations

import pytest

from portal.paging import MAX_PAGE, Page, clamp


@pytest.mark.parametrize(
    ("wanted", "total", "expected"),
    [(1, 0, 1), (0, 30, 1), (2, 30, 2), (3, 30, 2), (MAX_PAGE, 51, 3), (2, 25, 1)],
)
def test_clamp_keeps_the_page_within_the_list(wanted: int, total: int, expected: int) -> None:
    assert clamp(wanted, total, 25) == expected


def test_an_empty_list_is_one_page_showing_nothing() -> None:
    page: Page[str] = Page([], 0, 1, 25)
    assert (page.pages, page.first_item, page.last_item) == (1, 0, 0)
    assert not page.has_previous and not page.has_next


def test_the_last_page_shows_what_is_left() -> None:
    page = Page(["x"] * 5, 30, 2, 25)
    assert (page.pages, page.first_item, page.last_item) == (2, 26, 30)
    assert page.has_previous and not page.has_next


def test_a_full_first_page_has_a_next() -> None:
    page = Page(["x"] * 25, 30, 1, 25)
    assert (page.first_item, page.last_item) == (1, 25)
    assert page.has_next and not page.has_previous
