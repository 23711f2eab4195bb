"""portal.paging.page_number: one reading of ?page= for every paged list."""

from __future__ import annotations

import pytest

from portal.paging import MAX_PAGE, page_number


@pytest.mark.parametrize(
    ("raw", "page"),
    [("3", 3), ("1", 1), ("007", 7), ("999999999", 999_999_999), ("1" + "0" * 9, MAX_PAGE)],
)
def test_digits_are_the_page(raw: str, page: int) -> None:
    assert page_number(raw) == page


@pytest.mark.parametrize("raw", [None, "", "0", "000", "-2", "+2", " 2", "2.0", "²", "٣", "x"])
def test_anything_else_is_the_first_page(raw: str | None) -> None:
    assert page_number(raw) == 1


def test_a_huge_number_is_past_the_end_not_an_error() -> None:
    assert page_number("9" * 5000) == MAX_PAGE
