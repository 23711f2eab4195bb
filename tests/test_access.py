"""portal.access: the canonical forms of addresses and domains, rule matching, and the
checks that keep each bill group's rules exact (PRODUCT.md journey 2, SECURITY.md
"Addresses and rules").

Tests that take the `db` fixture run on SQLite and, with PORTAL_TEST_DATABASE_URL set
and `-m db`, on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from portal import access
from portal import db as portal_db
from portal.access import (
    AccessError,
    DuplicateRule,
    OverlappingRules,
    RuleSpec,
    add_rule,
    admitting_rule,
    canonical_domain,
    canonical_email,
    check_new_rule,
    may_access,
    parse_rule,
    rule_admits,
)
from portal.models import AccessRule, BillGroup, RuleKind
from tests.factories import TODAY, make_bill_group

STAFF = "am@seller.example.com"
EMAIL, DOMAIN = RuleKind.EMAIL, RuleKind.DOMAIN


def assert_sentence(message: str) -> None:
    """A message a person can read: one short line, ending like a sentence, no internals."""
    assert message.endswith("."), message
    assert " " in message and len(message) < 250, message
    assert "\n" not in message and "\r" not in message, message
    assert "Error" not in message and "Traceback" not in message, message


def refused(function: Callable[..., Any], raw: Any, **kwargs: Any) -> str:
    """The message of the AccessError that `function(raw)` raises (and check it reads well)."""
    with pytest.raises(AccessError) as caught:
        function(raw, **kwargs)
    message = caught.value.message
    assert str(caught.value) == message
    assert_sentence(message)
    return message


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


# --- canonical_domain and parse_rule --------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("acme.com", "acme.com"),
        ("ACME.com.", "acme.com"),
        ("  Acme.Com  ", "acme.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("BÜCHER.DE.", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("ａｃｍｅ.com", "acme.com"),
        ("acme。com", "acme.com"),
        ("sub.acme.co.uk", "sub.acme.co.uk"),
        # canonical_domain only normalises; parse_rule decides what may be a rule.
        ("co.uk", "co.uk"),
        ("gmail.com", "gmail.com"),
    ],
)
def test_canonical_domain_accepts(raw: str, canonical: str) -> None:
    assert canonical_domain(raw) == canonical
    assert canonical_domain(canonical) == canonical


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("*.acme.com", "without *; choose 'and its subdomains' instead"),
        ("https://acme.com", "not a web address"),
        ("acme.com/billing", "not a web address"),
        ("1.2.3.4", "not an IP address"),
        ("[1.2.3.4]", "not an IP address"),
        ("2001:db8::1", "not an IP address"),
        ("[::1]", "not an IP address"),
        ("ap@acme.com", "without an @ sign"),
        ("acme..com", "is not a valid domain name"),
        ("-acme.com", "is not a valid domain name"),
        ("acme-.com", "is not a valid domain name"),
        ("acme.com..", "is not a valid domain name"),
        ("acme.123", "is not a valid domain name"),
        ("com", "is not a valid domain name"),
        ("localhost", "is not a valid domain name"),
        ("a" * 64 + ".com", "is not a valid domain name"),
        ("acme_corp.com", "is not a valid domain name"),
        ("acme\u200b.com", "invisible or control characters"),
        ("", "Enter a domain like company.com"),
        (None, "Enter a domain like company.com"),
    ],
)
def test_canonical_domain_refuses(raw: Any, fragment: str) -> None:
    assert fragment in refused(canonical_domain, raw)


@pytest.mark.parametrize("raw", ["acme.com, acme.net", "acme.com;acme.net", "acme.com acme.net"])
@pytest.mark.parametrize("function", [canonical_domain, parse_rule])
def test_domain_lists_are_refused_one_at_a_time(
    function: Callable[[str], object], raw: str
) -> None:
    assert refused(function, raw) == access.ONE_AT_A_TIME


@pytest.mark.parametrize(
    ("raw", "include_subdomains", "spec"),
    [
        ("ACME.com.", False, RuleSpec(DOMAIN, "acme.com")),
        ("acme.com", True, RuleSpec(DOMAIN, "acme.com", include_subdomains=True)),
        ("bücher.de", False, RuleSpec(DOMAIN, "xn--bcher-kva.de")),
        ("sub.acme.co.uk", False, RuleSpec(DOMAIN, "sub.acme.co.uk")),
        # a site under a private public suffix is somebody's own domain
        ("acme.github.io", False, RuleSpec(DOMAIN, "acme.github.io")),
        ("AP@Acme.com", False, RuleSpec(EMAIL, "ap@acme.com")),
        # one address at a public provider is fine; a domain rule for it is not
        ("jane@gmail.com", False, RuleSpec(EMAIL, "jane@gmail.com")),
        ("a@bücher.de", False, RuleSpec(EMAIL, "a@xn--bcher-kva.de")),
    ],
)
def test_parse_rule_accepts(raw: str, include_subdomains: bool, spec: RuleSpec) -> None:
    assert parse_rule(raw, include_subdomains) == spec


def test_rule_labels_show_unicode_domains() -> None:
    assert parse_rule("bücher.de").label == "bücher.de"
    assert parse_rule("bücher.de", include_subdomains=True).label == (
        "bücher.de and its subdomains"
    )
    assert parse_rule("a@BÜCHER.de").label == "a@bücher.de"


NOT_OWN = "is not a company's own domain. Enter a registered domain like company.com."
PUBLIC = (
    "is a public email provider: a rule for it would let anyone with an address there "
    "sign in. Add individual addresses at {domain} instead, one at a time."
)
DISPOSABLE = (
    "is a disposable email service: anyone can read mail there, so a rule for it would "
    "let anyone sign in. Add individual addresses at {domain} instead, one at a time."
)


def public(domain: str) -> str:
    return f"{domain} {PUBLIC.format(domain=domain)}"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("co.uk", f"co.uk {NOT_OWN}"),
        ("CO.UK.", f"co.uk {NOT_OWN}"),
        ("github.io", f"github.io {NOT_OWN}"),
        ("acme.notarealtld", f"acme.notarealtld {NOT_OWN}"),
        ("acme.local", f"acme.local {NOT_OWN}"),
        ("gmail.com", public("gmail.com")),
        ("Gmail.COM.", public("gmail.com")),
        ("mail.gmail.com", public("mail.gmail.com")),
        ("outlook.com", public("outlook.com")),
        ("yahoo.co.uk", public("yahoo.co.uk")),
    ],
)
def test_parse_rule_refuses_domains_that_are_not_a_companys(raw: str, message: str) -> None:
    assert refused(parse_rule, raw) == message
    assert refused(parse_rule, raw, include_subdomains=True) == message


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("com", "is not a valid domain name"),
        ("*.acme.com", "without *"),
        ("https://acme.com", "not a web address"),
        ("10.0.0.1", "not an IP address"),
        ("Bob <b@acme.com>", "without a name"),
        ("a@@acme.com", "one @ sign"),
        ("", "Enter an email address or a domain"),
    ],
)
def test_parse_rule_refuses_malformed(raw: str, fragment: str) -> None:
    assert fragment in refused(parse_rule, raw)


def test_subdomains_option_is_refused_for_an_address() -> None:
    assert refused(parse_rule, "ap@acme.com", include_subdomains=True) == (
        "'And its subdomains' applies to a domain, not to one address."
    )


def test_extra_providers_are_refused_as_public() -> None:
    # freemail.de is a registrable domain that is not on the shipped list.
    assert access._public_suffixes().privatesuffix("freemail.de") == "freemail.de"
    assert "freemail.de" not in access.shipped_public_providers()
    assert parse_rule("freemail.de") == RuleSpec(DOMAIN, "freemail.de")

    extra = ["FreeMail.DE.", "corp-mail.example.com"]
    assert refused(parse_rule, "freemail.de", extra_providers=extra) == public("freemail.de")
    assert refused(parse_rule, "mail.freemail.de", extra_providers=extra) == (
        public("mail.freemail.de")
    )
    assert refused(parse_rule, "corp-mail.example.com", extra_providers=extra) == (
        public("corp-mail.example.com")
    )
    # addresses there are still fine as individual rules
    assert parse_rule("jo@freemail.de", extra_providers=extra) == RuleSpec(EMAIL, "jo@freemail.de")


DISPOSABLE_SERVICES = [
    "mailinator.com",
    "yopmail.com",
    "guerrillamail.com",
    "sharklasers.com",
    "10minutemail.com",
    "temp-mail.org",
]


@pytest.mark.parametrize("domain", DISPOSABLE_SERVICES)
def test_disposable_inboxes_are_refused_as_domain_rules(domain: str) -> None:
    message = f"{domain} {DISPOSABLE.format(domain=domain)}"
    assert refused(parse_rule, domain) == message
    assert refused(parse_rule, domain.upper() + ".") == message
    assert refused(parse_rule, domain, include_subdomains=True) == message
    under = f"inbox.{domain}"
    assert refused(parse_rule, under) == f"{under} {DISPOSABLE.format(domain=under)}"
    # staff can still let one person at such a domain in, one address at a time
    assert parse_rule(f"jo@{domain}") == RuleSpec(EMAIL, f"jo@{domain}")


def test_a_subdomains_rule_over_a_listed_disposable_subdomain_is_refused() -> None:
    """The list names some services by a subdomain of a shared parent (a dynamic DNS
    name); a subdomains rule for the parent would cover them."""
    parent = next(
        psl
        for d in sorted(access.disposable_providers())
        if (psl := access._public_suffixes().privatesuffix(d)) not in (None, d)
        and psl not in access.disposable_providers()
        and psl not in access.shipped_public_providers()
    )
    assert "disposable email service" in refused(parse_rule, parent, include_subdomains=True)


def test_the_disposable_list_is_large_canonical_and_spares_companies() -> None:
    providers = access.disposable_providers()
    assert len(providers) > 5_000
    assert set(DISPOSABLE_SERVICES) <= providers
    for domain in ("acme.com", "acme-holdings.com", "gmail.com", "bücher.de"):
        assert domain not in providers
    assert all(d == d.lower() and d.isascii() and "." in d for d in providers)
    assert parse_rule("acme.com") == RuleSpec(DOMAIN, "acme.com")
    assert parse_rule("xn--bcher-kva.de") == RuleSpec(DOMAIN, "xn--bcher-kva.de")


def test_shipped_providers_are_canonical_registrable_domains() -> None:
    """parse_rule refuses subdomains of a provider through its registrable domain, which
    only works if every listed provider is itself a registrable domain."""
    providers = access.shipped_public_providers()
    assert {"gmail.com", "outlook.com", "yahoo.com"} <= providers
    psl = access._public_suffixes()
    for provider in providers:
        assert canonical_domain(provider) == provider
        assert psl.privatesuffix(provider) == provider, provider


# --- matching -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "typed", "admitted"),
    [
        (RuleSpec(DOMAIN, "acme.com"), "ap@acme.com", True),
        (RuleSpec(DOMAIN, "acme.com"), "AP@ACME.COM", True),
        (RuleSpec(DOMAIN, "acme.com"), " Ap@Acme.Com ", True),
        (RuleSpec(DOMAIN, "acme.com"), "ap@ａｃｍｅ.com", True),
        (RuleSpec(DOMAIN, "acme.com"), "ap@evilacme.com", False),
        (RuleSpec(DOMAIN, "acme.com"), "ap@acme.com.evil.net", False),
        (RuleSpec(DOMAIN, "acme.com"), "ap@sub.acme.com", False),
        (RuleSpec(DOMAIN, "acme.com"), "ap@acme.co", False),
        (RuleSpec(DOMAIN, "acme.com"), "acme.com@evil.net", False),
        (RuleSpec(DOMAIN, "acme.com", True), "ap@acme.com", True),
        (RuleSpec(DOMAIN, "acme.com", True), "ap@sub.acme.com", True),
        (RuleSpec(DOMAIN, "acme.com", True), "ap@A.B.ACME.COM", True),
        (RuleSpec(DOMAIN, "acme.com", True), "ap@evilacme.com", False),
        (RuleSpec(DOMAIN, "acme.com", True), "ap@sub.evilacme.com", False),
        (RuleSpec(DOMAIN, "acme.com", True), "ap@acme.com.evil.net", False),
        (RuleSpec(DOMAIN, "xn--bcher-kva.de"), "ap@BÜCHER.de", True),
        (RuleSpec(DOMAIN, "xn--bcher-kva.de"), "ap@bucher.de", False),
        (RuleSpec(EMAIL, "ap@acme.com"), "AP@acme.COM", True),
        (RuleSpec(EMAIL, "ap@acme.com"), "ap+x@acme.com", False),
        (RuleSpec(EMAIL, "ap@acme.com"), "a.p@acme.com", False),
        (RuleSpec(EMAIL, "ap@acme.com"), "ap@sub.acme.com", False),
        (RuleSpec(EMAIL, "ap@acme.com"), "xap@acme.com", False),
        (RuleSpec(EMAIL, "ap+x@acme.com"), "ap@acme.com", False),
        (RuleSpec(EMAIL, "ap+x@acme.com"), "AP+X@acme.com", True),
    ],
)
def test_rule_admits_canonical_address(rule: RuleSpec, typed: str, admitted: bool) -> None:
    assert rule_admits(rule, canonical_email(typed)) is admitted


def test_admitting_rule_picks_the_rule_that_admits() -> None:
    rules = [
        AccessRule(kind=EMAIL, value="cfo@acme-holdings.com", include_subdomains=False),
        AccessRule(kind=DOMAIN, value="acme.com", include_subdomains=False),
        AccessRule(kind=DOMAIN, value="acme.org", include_subdomains=True),
    ]
    assert admitting_rule(rules, "cfo@acme-holdings.com") is rules[0]
    assert admitting_rule(rules, "ap@acme.com") is rules[1]
    assert admitting_rule(rules, "ap@eu.acme.org") is rules[2]
    assert admitting_rule(rules, "ceo@acme-holdings.com") is None
    assert admitting_rule(rules, "ap@eu.acme.com") is None
    assert admitting_rule([], "ap@acme.com") is None


@pytest.fixture
def group(db: Session) -> BillGroup:
    """A committed bill group with an active contract, so rollbacks do not remove it."""
    bill_group = make_bill_group(db)
    db.commit()
    return bill_group


def stored(db: Session, bill_group: BillGroup) -> set[tuple[str, str, bool]]:
    rows = db.execute(
        select(AccessRule.kind, AccessRule.value, AccessRule.include_subdomains).where(
            AccessRule.bill_group_id == bill_group.id
        )
    ).all()
    return {(str(kind), value, subdomains) for kind, value, subdomains in rows}


def count_rules(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(AccessRule)) or 0


def test_may_access_admits_while_the_portal_is_available(db: Session, group: BillGroup) -> None:
    domain_rule = add_rule(db, group, "acme.com", created_by=STAFF)
    address_rule = add_rule(db, group, "cfo@acme-holdings.com", created_by=STAFF)
    db.commit()
    db.refresh(group)

    assert may_access(group, canonical_email("AP@ACME.COM"), TODAY) is domain_rule
    assert may_access(group, "cfo@acme-holdings.com", TODAY) is address_rule
    assert may_access(group, "ap@evilacme.com", TODAY) is None
    assert may_access(group, "ap@sub.acme.com", TODAY) is None
    # the contract's first and last day count
    group.contract_start = TODAY
    group.contract_end = TODAY
    assert may_access(group, "ap@acme.com", TODAY) is domain_rule


@pytest.mark.parametrize(
    "change",
    [
        {"portal_enabled": False},
        {"contract_end": TODAY - dt.timedelta(days=1)},
        {"contract_start": TODAY + dt.timedelta(days=1)},
    ],
    ids=["portal disabled", "contract ended", "contract not started"],
)
def test_may_access_admits_nobody_while_the_portal_is_unavailable(
    db: Session, group: BillGroup, change: dict[str, Any]
) -> None:
    add_rule(db, group, "acme.com", created_by=STAFF)
    add_rule(db, group, "cfo@acme-holdings.com", created_by=STAFF)
    db.commit()
    db.refresh(group)
    assert may_access(group, "ap@acme.com", TODAY) is not None

    for name, value in change.items():
        setattr(group, name, value)
    db.commit()
    db.refresh(group)
    assert may_access(group, "ap@acme.com", TODAY) is None
    assert may_access(group, "cfo@acme-holdings.com", TODAY) is None


# --- add_rule -------------------------------------------------------------------------


def test_add_rule_stores_the_canonical_form(db: Session, group: BillGroup) -> None:
    rule = add_rule(db, group, " AP@Acme.COM ", created_by=STAFF)
    add_rule(db, group, "BÜCHER.de.", created_by=STAFF, include_subdomains=True)
    db.commit()
    assert (rule.kind, rule.value, rule.created_by) == (EMAIL, "ap@acme.com", STAFF)
    assert stored(db, group) == {
        ("email", "ap@acme.com", False),
        ("domain", "xn--bcher-kva.de", True),
    }


@pytest.mark.parametrize(
    ("first", "again", "message"),
    [
        ("ap@acme.com", "AP@ACME.com", "ap@acme.com already has access."),
        ("acme.com", "ACME.com.", "acme.com already has access."),
        ("bücher.de", "xn--bcher-kva.de", "bücher.de already has access."),
    ],
)
def test_duplicate_rule_is_refused(
    db: Session, group: BillGroup, first: str, again: str, message: str
) -> None:
    add_rule(db, group, first, created_by=STAFF)
    db.commit()
    before = stored(db, group)
    with pytest.raises(DuplicateRule) as caught:
        add_rule(db, group, again, created_by=STAFF)
    assert caught.value.message == message
    assert stored(db, group) == before


def test_same_domain_with_other_subdomain_setting_is_a_duplicate(
    db: Session, group: BillGroup
) -> None:
    add_rule(db, group, "acme.com", created_by=STAFF, include_subdomains=True)
    db.commit()
    with pytest.raises(DuplicateRule, match="acme.com and its subdomains already has access"):
        add_rule(db, group, "acme.com", created_by=STAFF)
    assert stored(db, group) == {("domain", "acme.com", True)}


def test_address_under_a_domain_rule_is_refused(db: Session, group: BillGroup) -> None:
    add_rule(db, group, "acme.com", created_by=STAFF)
    db.commit()
    with pytest.raises(DuplicateRule) as caught:
        add_rule(db, group, "ap@acme.com", created_by=STAFF)
    assert caught.value.message == (
        "acme.com already has access, so ap@acme.com needs no rule of its own."
    )
    assert stored(db, group) == {("domain", "acme.com", False)}


def test_address_under_a_subdomains_rule_is_refused(db: Session, group: BillGroup) -> None:
    add_rule(db, group, "acme.com", created_by=STAFF, include_subdomains=True)
    db.commit()
    with pytest.raises(DuplicateRule) as caught:
        add_rule(db, group, "AP@EU.ACME.COM", created_by=STAFF)
    assert caught.value.message == (
        "acme.com and its subdomains already has access, so ap@eu.acme.com needs no rule "
        "of its own."
    )
    assert count_rules(db) == 1


def test_address_on_a_subdomain_of_an_exact_domain_rule_is_allowed(
    db: Session, group: BillGroup
) -> None:
    add_rule(db, group, "acme.com", created_by=STAFF)
    add_rule(db, group, "ap@eu.acme.com", created_by=STAFF)
    add_rule(db, group, "ap@evilacme.com", created_by=STAFF)
    db.commit()
    assert len(stored(db, group)) == 3


@pytest.fixture
def addresses(db: Session, group: BillGroup) -> set[tuple[str, str, bool]]:
    """Address rules, two of them under acme.com, one under a subdomain, one elsewhere."""
    for raw in ["ap@acme.com", "cfo@acme.com", "ap@eu.acme.com", "cfo@acme-holdings.com"]:
        add_rule(db, group, raw, created_by=STAFF)
    db.commit()
    return stored(db, group)


def test_domain_that_makes_address_rules_redundant_names_them(
    db: Session, group: BillGroup, addresses: set[tuple[str, str, bool]]
) -> None:
    with pytest.raises(OverlappingRules) as caught:
        add_rule(db, group, "ACME.com", created_by=STAFF)
    error = caught.value
    assert {rule.value for rule in error.redundant} == {"ap@acme.com", "cfo@acme.com"}
    assert error.message.startswith("acme.com would make these address rules redundant: ")
    assert "ap@acme.com" in error.message and "cfo@acme.com" in error.message
    assert "eu.acme.com" not in error.message and "holdings" not in error.message
    assert error.message.endswith("Remove them first, or add the domain and fold them in.")
    assert_sentence(error.message)
    assert stored(db, group) == addresses  # nothing written, nothing removed


def test_subdomains_rule_names_subdomain_addresses_too(
    db: Session, group: BillGroup, addresses: set[tuple[str, str, bool]]
) -> None:
    with pytest.raises(OverlappingRules) as caught:
        add_rule(db, group, "acme.com", created_by=STAFF, include_subdomains=True)
    assert {rule.value for rule in caught.value.redundant} == {
        "ap@acme.com",
        "cfo@acme.com",
        "ap@eu.acme.com",
    }
    assert stored(db, group) == addresses


def test_fold_in_replaces_the_redundant_address_rules(
    db: Session, group: BillGroup, addresses: set[tuple[str, str, bool]]
) -> None:
    rule = add_rule(db, group, "acme.com", created_by=STAFF, fold_in=True)
    db.commit()
    assert (rule.kind, rule.value) == (DOMAIN, "acme.com")
    assert stored(db, group) == {
        ("domain", "acme.com", False),
        ("email", "ap@eu.acme.com", False),
        ("email", "cfo@acme-holdings.com", False),
    }


def test_fold_in_with_subdomains(
    db: Session, group: BillGroup, addresses: set[tuple[str, str, bool]]
) -> None:
    add_rule(db, group, "acme.com", created_by=STAFF, include_subdomains=True, fold_in=True)
    db.commit()
    assert stored(db, group) == {
        ("domain", "acme.com", True),
        ("email", "cfo@acme-holdings.com", False),
    }


def test_fold_in_names_labels_in_unicode(db: Session, group: BillGroup) -> None:
    add_rule(db, group, "ap@bücher.de", created_by=STAFF)
    db.commit()
    with pytest.raises(OverlappingRules, match="redundant: ap@bücher.de\\."):
        add_rule(db, group, "bücher.de", created_by=STAFF)


def test_domain_inside_a_subdomains_rule_is_refused(db: Session, group: BillGroup) -> None:
    add_rule(db, group, "acme.com", created_by=STAFF, include_subdomains=True)
    db.commit()
    with pytest.raises(DuplicateRule) as caught:
        add_rule(db, group, "eu.acme.com", created_by=STAFF)
    assert caught.value.message == "acme.com and its subdomains already covers eu.acme.com."
    with pytest.raises(DuplicateRule):
        add_rule(db, group, "a.b.acme.com", created_by=STAFF, include_subdomains=True)
    assert stored(db, group) == {("domain", "acme.com", True)}


def test_subdomains_rule_covering_an_existing_domain_rule_is_refused(
    db: Session, group: BillGroup
) -> None:
    add_rule(db, group, "eu.acme.com", created_by=STAFF)
    db.commit()
    with pytest.raises(DuplicateRule) as caught:
        add_rule(db, group, "acme.com", created_by=STAFF, include_subdomains=True)
    assert caught.value.message == (
        "acme.com and its subdomains would also cover the existing rule for eu.acme.com. "
        "Remove that rule first."
    )
    assert stored(db, group) == {("domain", "eu.acme.com", False)}


def test_parent_and_subdomain_rules_without_subdomains_may_coexist(
    db: Session, group: BillGroup
) -> None:
    add_rule(db, group, "eu.acme.com", created_by=STAFF)
    add_rule(db, group, "acme.com", created_by=STAFF)
    add_rule(db, group, "evilacme.com", created_by=STAFF, include_subdomains=True)
    db.commit()
    assert len(stored(db, group)) == 3


def test_same_rule_in_another_bill_group_is_fine(db: Session, group: BillGroup) -> None:
    other = make_bill_group(db)
    db.commit()
    for bill_group in (group, other):
        add_rule(db, bill_group, "acme.com", created_by=STAFF)
        add_rule(db, bill_group, "cfo@acme-holdings.com", created_by=STAFF)
    db.commit()
    expected = {("domain", "acme.com", False), ("email", "cfo@acme-holdings.com", False)}
    assert stored(db, group) == stored(db, other) == expected
    assert count_rules(db) == 4


@pytest.mark.parametrize(
    "raw", ["gmail.com", "co.uk", "a@acme.com, b@acme.com", "Bob <b@acme.com>", "acme.com"]
)
def test_session_is_usable_after_a_refusal(db: Session, group: BillGroup, raw: str) -> None:
    add_rule(db, group, "acme.com", created_by=STAFF)
    db.commit()
    with pytest.raises(AccessError):
        add_rule(db, group, raw, created_by=STAFF)
    add_rule(db, group, "cfo@acme-holdings.com", created_by=STAFF)
    db.commit()
    assert stored(db, group) == {
        ("domain", "acme.com", False),
        ("email", "cfo@acme-holdings.com", False),
    }


def test_refusal_rolls_back_the_callers_uncommitted_work(db: Session, group: BillGroup) -> None:
    """add_rule promises a rolled-back session on AccessError; the caller commits per rule."""
    add_rule(db, group, "acme.com", created_by=STAFF)
    with pytest.raises(DuplicateRule):
        add_rule(db, group, "ap@acme.com", created_by=STAFF)
    assert count_rules(db) == 0
    assert not db.new and not db.dirty and not db.deleted


def test_database_refuses_a_duplicate_rule_row(db: Session, group: BillGroup) -> None:
    for _ in range(2):
        db.add(AccessRule(bill_group_id=group.id, kind=DOMAIN, value="acme.com", created_by=STAFF))
    with pytest.raises(IntegrityError):
        db.flush()
    db.rollback()
    assert count_rules(db) == 0


@pytest.mark.parametrize(
    "values",
    [
        {"kind": DOMAIN, "value": "ACME.com"},
        {"kind": EMAIL, "value": "ap@acme.com", "include_subdomains": True},
    ],
    ids=["upper case value", "subdomains on an address"],
)
def test_database_refuses_rows_the_canonicaliser_never_makes(
    db: Session, group: BillGroup, values: dict[str, Any]
) -> None:
    db.add(AccessRule(bill_group_id=group.id, created_by=STAFF, **values))
    with pytest.raises(IntegrityError):
        db.flush()
    db.rollback()
    assert count_rules(db) == 0


# --- concurrency ----------------------------------------------------------------------

Attempt = tuple[str, bool, bool]  # raw value, include_subdomains, fold_in


def race(app: Flask, bill_group_id: int, attempts: Sequence[Attempt]) -> list[object]:
    """Run add_rule + commit for every attempt at once, each in its own thread and session
    on the app's engine; return what each got: "added", the AccessError subclass, or any
    other exception."""
    with app.app_context():
        engine = portal_db.engine()
    factory = sessionmaker(engine, expire_on_commit=False)
    barrier = threading.Barrier(len(attempts))
    outcomes: list[object] = [None] * len(attempts)

    def attempt(index: int, raw: str, include_subdomains: bool, fold_in: bool) -> None:
        try:
            with factory() as session:
                bill_group = session.get(BillGroup, bill_group_id)
                assert bill_group is not None
                barrier.wait(timeout=30)
                try:
                    add_rule(
                        session,
                        bill_group,
                        raw,
                        created_by=STAFF,
                        include_subdomains=include_subdomains,
                        fold_in=fold_in,
                    )
                    session.commit()
                except AccessError as exc:
                    outcomes[index] = type(exc)
                else:
                    outcomes[index] = "added"
        except Exception as exc:  # reported by the caller's assertions
            outcomes[index] = exc

    threads = [
        threading.Thread(target=attempt, args=(index, *args)) for index, args in enumerate(attempts)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def assert_rules_do_not_overlap(rules: Sequence[AccessRule]) -> None:
    """Every stored rule would pass check_new_rule against all the others."""
    for rule in rules:
        others = [other for other in rules if other is not rule]
        spec = RuleSpec(rule.kind, rule.value, rule.include_subdomains)
        assert check_new_rule(spec, others) == [], rule


def test_concurrent_identical_adds_store_one_rule(
    app: Flask, db: Session, group: BillGroup
) -> None:
    """Runs on the SQLite file database, and on PostgreSQL under -m db."""
    outcomes = race(app, group.id, [("AP@acme.com", False, False)] * 8)
    assert Counter(outcomes) == {"added": 1, DuplicateRule: 7}, outcomes
    db.expire_all()
    assert stored(db, group) == {("email", "ap@acme.com", False)}


def test_concurrent_domain_and_address_adds_never_overlap(
    app: Flask, db: Session, group: BillGroup
) -> None:
    """Runs on SQLite too, where FOR UPDATE is a no-op and add_rule takes the write lock."""
    for _round in range(6):
        outcomes = race(
            app, group.id, [("acme.com", False, False), ("ap@acme.com", False, False)] * 4
        )
        assert Counter(outcomes) in (
            {"added": 1, DuplicateRule: 7},  # the domain won: the other domains are duplicates
            {"added": 1, DuplicateRule: 3, OverlappingRules: 4},  # the address won
        ), outcomes
        db.expire_all()
        rules = db.scalars(select(AccessRule).where(AccessRule.bill_group_id == group.id)).all()
        assert_rules_do_not_overlap(rules)
        db.execute(delete(AccessRule).where(AccessRule.bill_group_id == group.id))
        db.commit()


# Deselected (not skipped) by conftest when PORTAL_TEST_DATABASE_URL is unset.
postgres_only = pytest.mark.postgres


@postgres_only
def test_concurrent_identical_adds_store_one_rule_on_postgresql(
    app: Flask, db: Session, group: BillGroup
) -> None:
    assert db.get_bind().dialect.name == "postgresql"
    for attempts in (
        [("acme.com", False, False)] * 8,
        [("acme.org", True, True)] * 8,
        [("cfo@acme-holdings.com", False, False)] * 8,
    ):
        outcomes = race(app, group.id, attempts)
        assert Counter(outcomes) == {"added": 1, DuplicateRule: 7}, outcomes
    db.expire_all()
    assert stored(db, group) == {
        ("domain", "acme.com", False),
        ("domain", "acme.org", True),
        ("email", "cfo@acme-holdings.com", False),
    }


@postgres_only
@pytest.mark.parametrize(
    "attempts",
    [
        [("acme.com", False, False), ("ap@acme.com", False, False)] * 4,
        [("acme.com", False, True), ("ap@acme.com", False, False), ("cfo@acme.com", False, False)]
        * 3,
        [
            ("acme.com", True, False),
            ("eu.acme.com", False, False),
            ("ap@eu.acme.com", False, False),
            ("acme.com", True, True),
        ]
        * 2,
    ],
    ids=["domain vs address", "fold in vs addresses", "subdomains vs subdomain"],
)
def test_concurrent_overlapping_adds_never_store_overlapping_rules(
    app: Flask, db: Session, group: BillGroup, attempts: list[Attempt]
) -> None:
    assert db.get_bind().dialect.name == "postgresql"
    for _round in range(12):
        outcomes = race(app, group.id, attempts)
        assert all(outcome in ("added", DuplicateRule, OverlappingRules) for outcome in outcomes), (
            outcomes
        )
        assert outcomes.count("added") >= 1
        db.expire_all()
        rules = db.scalars(select(AccessRule).where(AccessRule.bill_group_id == group.id)).all()
        # a fold-in that won may have removed address rules added before it
        assert 1 <= len(rules) <= outcomes.count("added")
        assert_rules_do_not_overlap(rules)
        db.execute(delete(AccessRule).where(AccessRule.bill_group_id == group.id))
        db.commit()


@pytest.mark.parametrize(
    ("raw", "subdomains"),
    [("x.corp-mail.example.com", False), ("example.com", True), ("corp-mail.example.com", False)],
)
def test_extra_providers_are_refused_at_under_and_over_their_domain(raw, subdomains):
    """A configured provider that is itself a subdomain must not leak through a rule for
    a subdomain of it, or through a subdomains rule for its parent."""
    with pytest.raises(AccessError, match="public email provider"):
        parse_rule(raw, subdomains, extra_providers=["corp-mail.example.com"])
    assert parse_rule("example.com", False, ["corp-mail.example.com"]).value == "example.com"
