"""portal.access.canonical_email: the one canonical form of an address, and its refusals."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from portal import access
from portal.access import (
    canonical_domain,
    canonical_email,
    parse_rule,
)
from tests.access.helpers import (
    refused,
)

# --- canonical_email ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("ap@acme.com", "ap@acme.com"),
        ("AP@ACME.COM", "ap@acme.com"),
        ("Jane.Doe@Sub.Acme.Co.UK", "jane.doe@sub.acme.co.uk"),
        ("  ap@acme.com\t", "ap@acme.com"),
        ("\nap@acme.com\r\n", "ap@acme.com"),
        ("ap+Invoices@acme.com", "ap+invoices@acme.com"),
        ("o'neil@acme.com", "o'neil@acme.com"),
        ("a@bücher.de", "a@xn--bcher-kva.de"),
        ("a@BÜCHER.DE", "a@xn--bcher-kva.de"),
        ("a@xn--bcher-kva.de", "a@xn--bcher-kva.de"),
        ("a@straße.de", "a@xn--strae-oqa.de"),  # UTS 46 non-transitional: ß is kept
        # UTS 46 maps full-width letters and the ideographic full stop in the domain.
        ("a@ＡＣＭＥ.com", "a@acme.com"),
        ("a@ｂücher.de", "a@xn--bcher-kva.de"),
        ("a@acme．com", "a@acme.com"),
        ("a@acme。com", "a@acme.com"),
    ],
)
def test_canonical_email_accepts(raw: str, canonical: str) -> None:
    assert canonical_email(raw) == canonical
    assert canonical_email(canonical) == canonical


LIST_INPUTS = [
    "a@acme.com, b@acme.com",
    "a@acme.com,b@acme.com",
    "a@acme.com;b@acme.com",
    "a@acme.com; b@acme.com",
    "a@acme.com,",
    "a@acme.com b@acme.com",
    "a@acme.com  b@acme.com  c@acme.com",
    "Bob <b@acme.com>, Ann <a@acme.com>",
]


@pytest.mark.parametrize("raw", LIST_INPUTS)
def test_canonical_email_refuses_lists_one_at_a_time(raw: str) -> None:
    assert refused(canonical_email, raw) == access.ONE_AT_A_TIME


NAME_OR_QUOTES = "Enter just the email address, without a name, quotes or brackets."
INVISIBLE = "That contains invisible or control characters. Type it again."
ONE_AT_SIGN = "Enter an email address like name@company.com, with one @ sign."
ENTER_ONE = "Enter an email address like name@company.com."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # display names, quoting, comments and domain literals
        ("Bob <b@acme.com>", NAME_OR_QUOTES),
        ("<b@acme.com>", NAME_OR_QUOTES),
        ('"Bob" b@acme.com', NAME_OR_QUOTES),
        ('"a b"@acme.com', NAME_OR_QUOTES),
        ('"ab"@acme.com', NAME_OR_QUOTES),
        ("a(x)@acme.com", NAME_OR_QUOTES),
        ("a@acme.com(x)", NAME_OR_QUOTES),
        ("a@[1.2.3.4]", NAME_OR_QUOTES),
        ("a@[IPv6:::1]", NAME_OR_QUOTES),
        # header injection and invisible characters
        ("a@acme.com\r\nBcc: x@evil.com", INVISIBLE),
        ("a@acme.com\nBcc: x@evil.com", INVISIBLE),
        ("a\r@acme.com", INVISIBLE),
        ("a\x00@acme.com", INVISIBLE),
        ("a@acme.com\x00", INVISIBLE),
        ("a\u200b@acme.com", INVISIBLE),  # zero-width space
        ("a@ac\u200dme.com", INVISIBLE),  # zero-width joiner
        ("\ufeffa@acme.com", INVISIBLE),  # byte-order mark
        ("a\u00ad@acme.com", INVISIBLE),  # soft hyphen
        ("a\u2028b@acme.com", INVISIBLE),  # line separator
        ("a@acme.com\u202e", INVISIBLE),  # right-to-left override
        # @ signs
        ("a＠acme.com", "Type the @ sign from your keyboard; that one only looks like it."),
        ("a﹫acme.com", "Type the @ sign from your keyboard; that one only looks like it."),
        ("a@@b.com", ONE_AT_SIGN),
        ("a@b@acme.com", ONE_AT_SIGN),
        ("acme.com", ONE_AT_SIGN),
        # non-ASCII local parts
        ("é@acme.com", "Use only Latin letters, digits and . _ - + before the @ sign."),
        ("ａp@acme.com", "Use only Latin letters, digits and . _ - + before the @ sign."),
        # spaces inside
        ("a b@acme.com", "An email address cannot contain spaces."),
        ("a\u00a0@acme.com", "An email address cannot contain spaces."),
        # empty and not text at all
        ("", ENTER_ONE),
        ("   ", ENTER_ONE),
        ("\t \n", ENTER_ONE),
        (None, ENTER_ONE),
        (42, ENTER_ONE),
        (b"ap@acme.com", ENTER_ONE),
        (["ap@acme.com"], ENTER_ONE),
    ],
)
def test_canonical_email_refuses_with_message(raw: Any, expected: str) -> None:
    assert refused(canonical_email, raw) == expected


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (".a@acme.com", "period"),
        ("a.@acme.com", "period"),
        ("a..b@acme.com", "period"),
        ("a@.acme.com", "period"),
        ("a@acme..com", "period"),
        ("a@acme.com.", "period"),  # a trailing dot on the domain
        ("a@acme", "period"),
        ("a@localhost", "period"),
        ("a@1.2.3.4", "top-level domain"),
        ("a@acme.test", "special-use"),
        ("a@ab--cd.com", "dashes"),
        ("a@" + "x" * 300 + ".com", "too long"),
        ("x" * 240 + "@" + "y" * 20 + ".com", "too long"),
    ],
)
def test_canonical_email_refuses_malformed(raw: str, fragment: str) -> None:
    assert fragment in refused(canonical_email, raw)


@pytest.mark.parametrize(
    "raw",
    ["x" * 10_000, "a@" + "a." * 5_000 + "com", "a," * 5_000, "\u200b" * 10_000, "@" * 1_000_000],
)
@pytest.mark.parametrize("function", [canonical_email, canonical_domain, parse_rule])
def test_huge_input_is_refused_as_too_long_at_once(
    function: Callable[[str], object], raw: str
) -> None:
    started = time.perf_counter()
    message = refused(function, raw)
    assert time.perf_counter() - started < 0.1
    assert message.startswith("That is too long to be ")


def test_input_limit_is_320_characters() -> None:
    just_fits = " " * (access.MAX_INPUT_LENGTH - len("ap@acme.com")) + "ap@acme.com"
    assert canonical_email(just_fits) == "ap@acme.com"
    assert "too long" in refused(canonical_email, " " + just_fits)
