"""Properties of portal.access's canonical forms and rule matching (no database).

The shape of a canonical address is checked with a regular expression written here,
independently of the one in portal.access.
"""

from __future__ import annotations

import re
import string
from email.utils import parseaddr

from hypothesis import example, given, settings
from hypothesis import strategies as st

from portal import access
from portal.access import (
    AccessError,
    RuleSpec,
    canonical_domain,
    canonical_email,
    parse_rule,
    rule_admits,
)
from portal.models import RuleKind

FAST = settings(max_examples=150, deadline=None)
WIDE = settings(max_examples=400, deadline=None)

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
DOT_ATOM_ADDRESS = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
)
DOMAIN = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

# ASCII host labels: no leading or trailing hyphen, no "ab--" (reserved for Punycode).
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(
    lambda label: label[2:4] != "--"
)
letter_labels = st.from_regex(r"[a-z][a-z0-9]{0,9}", fullmatch=True)
tlds = st.sampled_from(["com", "de", "io", "net", "org", "co.uk", "com.au"])
domains = st.builds(
    lambda parts, tld: ".".join([*parts, tld]), st.lists(labels, min_size=1, max_size=3), tlds
)
local_parts = st.lists(st.text(ATEXT, min_size=1, max_size=12), min_size=1, max_size=4).map(
    ".".join
)
ascii_addresses = st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains)

# Domain labels with a few letters that have Unicode case and an IDNA form.
unicode_labels = st.text("abcdeüéöåñ", min_size=1, max_size=10)
unicode_domains = st.builds(
    lambda parts, tld: ".".join([*parts, tld]),
    st.lists(unicode_labels, min_size=1, max_size=2),
    tlds,
)
unicode_addresses = st.builds(
    lambda local, domain: f"{local}@{domain}", local_parts, unicode_domains
)

# Text that reaches the list check: no control or format characters, not too long.
visible_text = st.text(
    st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp")), max_size=100
)
# Text biased toward the characters the canonicaliser cares about.
tricky_text = st.text(
    st.sampled_from(list("aZ09.-_+@@@,; <>\"'()[]\\\t\r\n\x00\u200b\u00a0＠﹫üß。．İ*/:"))
    | st.characters(),
    max_size=60,
)

# Valid addresses with one hostile or odd character inserted somewhere.
mutated_addresses = st.builds(
    lambda address, at, ch: (
        address[: at % (len(address) + 1)] + ch + address[at % (len(address) + 1) :]
    ),
    ascii_addresses,
    st.integers(min_value=0, max_value=200),
    st.sampled_from(list("aZ9.-+@,; <>\"'()[]\\\t\r\n\x00\u200b\u00a0＠﹫ü。*/:"))
    | st.characters(),
)


def assert_canonical_address(out: str) -> None:
    assert out.isascii()
    assert out == out.lower()
    assert len(out) <= 254
    assert out.count("@") == 1
    assert DOT_ATOM_ADDRESS.fullmatch(out), out
    assert parseaddr(out) == ("", out)


def assert_canonical_domain(out: str) -> None:
    assert out.isascii() and out == out.lower()
    assert len(out) <= 253
    assert DOMAIN.fullmatch(out), out
    assert not out.rsplit(".", 1)[1].isdigit()


def assert_readable(error: AccessError) -> None:
    assert error.message and error.message.endswith("."), error.message
    assert "\n" not in error.message


@FAST
@given(ascii_addresses)
def test_ascii_dot_atom_address_is_accepted_in_lower_case(address: str) -> None:
    out = canonical_email(address)
    assert out == address.lower()
    assert_canonical_address(out)


@FAST
@given(st.one_of(ascii_addresses, unicode_addresses), st.sampled_from(["", " ", "\t", "\n "]))
def test_canonical_email_is_idempotent_and_well_shaped(address: str, padding: str) -> None:
    out = canonical_email(padding + address + padding)
    assert_canonical_address(out)
    assert canonical_email(out) == out


@FAST
@given(st.one_of(ascii_addresses, unicode_addresses), st.data())
def test_case_variations_canonicalise_to_the_same_address(
    address: str, data: st.DataObject
) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(address), max_size=len(address)))
    variant = "".join(ch.upper() if flip else ch for ch, flip in zip(address, flips, strict=True))
    assert canonical_email(variant) == canonical_email(address)
    assert canonical_email(address.upper()) == canonical_email(address)


@WIDE
@given(visible_text, st.sampled_from([",", ";"]), visible_text)
@example("a@acme.com", ",", "b@acme.com")
@example("", ";", "")
def test_anything_with_a_comma_or_semicolon_is_one_at_a_time(
    before: str, separator: str, after: str
) -> None:
    """Up to 320 characters without control or invisible characters (those are refused
    first, with their own message; see the next test)."""
    raw = before + separator + after
    for function in (canonical_email, canonical_domain, parse_rule):
        try:
            function(raw)
        except AccessError as error:
            assert error.message == access.ONE_AT_A_TIME
        else:
            raise AssertionError(f"{function.__name__} accepted {raw!r}")


@FAST
@given(st.text(max_size=100), st.sampled_from([",", ";"]), st.text(max_size=100))
def test_a_list_with_control_characters_is_still_refused(
    before: str, separator: str, after: str
) -> None:
    for function in (canonical_email, canonical_domain, parse_rule):
        try:
            function(before + separator + after)
        except AccessError as error:
            assert_readable(error)
        else:
            raise AssertionError(f"{function.__name__} accepted {before + separator + after!r}")


@WIDE
@given(st.one_of(st.text(), tricky_text, mutated_addresses))
@example("a@b@c.com")
@example("a@ＡＣＭＥ.com")
@example("a@xn--abc.com")
def test_any_text_is_either_refused_or_canonical(raw: str) -> None:
    def email(out: str) -> None:
        assert_canonical_address(out)
        assert canonical_email(out) == out

    def domain(out: str) -> None:
        assert_canonical_domain(out)
        assert canonical_domain(out) == out

    def rule(spec: RuleSpec) -> None:
        if spec.kind == RuleKind.EMAIL:
            assert_canonical_address(spec.value)
        else:
            assert_canonical_domain(spec.value)

    for function, check in (
        (canonical_email, email),
        (canonical_domain, domain),
        (parse_rule, rule),
    ):
        try:
            out = function(raw)
        except AccessError as error:
            assert_readable(error)
        else:
            check(out)


@FAST
@given(
    local=st.text(string.ascii_lowercase + string.digits + ".+-_", min_size=1, max_size=10),
    domain=domains,
    glued=letter_labels,
    sub=st.lists(labels, min_size=1, max_size=3).map(".".join),
    include_subdomains=st.booleans(),
)
def test_domain_rule_matches_the_domain_exactly(
    local: str, domain: str, glued: str, sub: str, include_subdomains: bool
) -> None:
    rule = RuleSpec(RuleKind.DOMAIN, domain, include_subdomains)
    assert rule_admits(rule, f"{local}@{domain}")
    assert not rule_admits(rule, f"{local}@{glued}{domain}")  # evilacme.com
    assert not rule_admits(rule, f"{local}@{glued}-{domain}")  # evil-acme.com
    assert not rule_admits(rule, f"{local}@{domain}.{glued}")  # acme.com.evil
    assert not rule_admits(rule, f"{local}@{sub}.{glued}{domain}")  # x.evilacme.com
    assert rule_admits(rule, f"{local}@{sub}.{domain}") is include_subdomains
    # the domain in the local part never counts
    assert not rule_admits(rule, f"{domain}@{glued}.example")


@FAST
@given(address=ascii_addresses, tag=st.text(string.ascii_lowercase, min_size=1, max_size=5))
def test_address_rule_matches_only_that_address(address: str, tag: str) -> None:
    canonical = canonical_email(address)
    local, _, domain = canonical.rpartition("@")
    rule = RuleSpec(RuleKind.EMAIL, canonical)
    assert rule_admits(rule, canonical)
    assert rule_admits(rule, canonical_email(address.upper()))
    assert not rule_admits(rule, f"{local}+{tag}@{domain}")
    assert not rule_admits(rule, f"{tag}{local}@{domain}")
    assert not rule_admits(rule, f"{local}@{tag}.{domain}")
    assert not rule_admits(rule, f"{local}@{tag}{domain}")
