"""canonical_domain and parse_rule: a company's own domain only, never a public one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from portal import access
from portal.access import (
    RuleSpec,
    canonical_domain,
    parse_rule,
)
from tests.access.helpers import (
    DOMAIN,
    EMAIL,
    refused,
)

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
