"""Who may view a bill group: one canonicaliser for addresses and domains, the rule
matcher, and the overlap checks that keep each bill group's rules exact.

Every address a customer types and every rule staff add goes through `canonical_email`
or `canonical_domain`, and all comparisons are exact string comparisons of those forms.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from importlib import resources
from typing import TypedDict, Unpack

import disposable_email_domains
import idna
from email_validator import EmailNotValidError, validate_email
from publicsuffixlist import PublicSuffixList
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.actions import Conflict, Invalid
from portal.locks import lock_bill_group
from portal.models import AccessRule, BillGroup, CustomerRole, RuleKind

MAX_INPUT_LENGTH = 320
MAX_ADDRESS_LENGTH = 254
MAX_DOMAIN_LENGTH = 253

_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"^(?:{_LABEL}\.)+{_LABEL}$")
_ADDRESS_RE = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*@(?:{_LABEL}\.)+{_LABEL}$")
_LIST_SEPARATORS = re.compile(r"[,;]")
_NAME_OR_QUOTES = re.compile(r"[<>\"()\[\]]")
_AT_LOOKALIKES = "\uff20\ufe6b"  # full-width and small commercial at

ONE_AT_A_TIME = "Add addresses one at a time: enter a single email address or domain."


class AccessError(Invalid):
    """Input that cannot become, or be checked against, an access rule. The message is
    written for the person who typed it."""

    def __init__(self, message: str, field: str = "value") -> None:
        super().__init__(message, field)


# The two below are conflicts (409) but stay AccessErrors too, so that every caller that
# catches AccessError for "this cannot be a rule" keeps catching them.
class DuplicateRule(AccessError, Conflict):
    """The rule, or one that covers it, already exists."""

    code = "duplicate_rule"


class OverlappingRules(AccessError, Conflict):
    """A new domain rule would make existing address rules redundant."""

    code = "overlapping_rules"

    def __init__(self, message: str, redundant: Sequence[AccessRule]) -> None:
        super().__init__(message)
        self.redundant = list(redundant)


# --- canonical forms ------------------------------------------------------------------


def _precheck(raw: str, what: str) -> str:
    if not isinstance(raw, str):
        raise AccessError(f"Enter {what}.")
    if len(raw) > MAX_INPUT_LENGTH:
        raise AccessError(f"That is too long to be {what}.")
    text = raw.strip()
    if not text:
        raise AccessError(f"Enter {what}.")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text):
        raise AccessError("That contains invisible or control characters. Type it again.")
    if _LIST_SEPARATORS.search(text) or (text.count("@") > 1 and re.search(r"\s", text)):
        raise AccessError(ONE_AT_A_TIME)
    return text


def canonical_email(raw: str) -> str:
    """The canonical form of one email address, or AccessError saying what is wrong."""
    text = _precheck(raw, "an email address like name@company.com")
    if _NAME_OR_QUOTES.search(text):
        raise AccessError("Enter just the email address, without a name, quotes or brackets.")
    if re.search(r"\s", text):
        raise AccessError("An email address cannot contain spaces.")
    if text.count("@") != 1:
        if any(ch in text for ch in _AT_LOOKALIKES):
            raise AccessError("Type the @ sign from your keyboard; that one only looks like it.")
        raise AccessError("Enter an email address like name@company.com, with one @ sign.")
    local = text.partition("@")[0]
    if not local.isascii():
        raise AccessError("Use only Latin letters, digits and . _ - + before the @ sign.")
    try:
        checked = validate_email(
            text,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_empty_local=False,
            globally_deliverable=True,
        )
    except EmailNotValidError as exc:
        # email-validator's messages are specific and written for people.
        raise AccessError(str(exc)) from None
    domain = canonical_domain(checked.ascii_domain)
    address = f"{checked.local_part.lower()}@{domain}"
    if (
        len(address) > MAX_ADDRESS_LENGTH
        or address.count("@") != 1
        or not _ADDRESS_RE.match(address)
        or parseaddr(address) != ("", address)
    ):
        raise AccessError("Enter an email address like name@company.com.")
    return address


def canonical_domain(raw: str) -> str:
    """The canonical form of a domain name: IDNA (UTS #46) ASCII, lower case, no final dot."""
    text = _precheck(raw, "a domain like company.com")
    if "@" in text:
        raise AccessError("Enter a domain like company.com, without an @ sign.")
    if re.search(r"\s", text):
        raise AccessError(ONE_AT_A_TIME)
    if "://" in text or "/" in text:
        raise AccessError("Enter just the domain, like company.com, not a web address.")
    if text.startswith("*"):
        raise AccessError("Enter the domain without *; choose 'and its subdomains' instead.")
    if text.endswith("."):
        text = text[:-1]
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        raise AccessError("Enter a domain name, not an IP address.")
    try:
        ascii_form = idna.encode(text, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        raise AccessError(f"{text!r} is not a valid domain name.") from None
    if len(ascii_form) > MAX_DOMAIN_LENGTH or not _DOMAIN_RE.match(ascii_form):
        raise AccessError(f"{text!r} is not a valid domain name.")
    if ascii_form.rsplit(".", 1)[1].isdigit():
        raise AccessError(f"{text!r} is not a valid domain name.")
    return ascii_form


def display_domain(domain: str) -> str:
    """The Unicode form of a canonical domain, for people to read."""
    try:
        return idna.decode(domain)
    except idna.IDNAError:
        return domain


def rule_label(kind: RuleKind, value: str, include_subdomains: bool = False) -> str:
    """How people read a rule: domains in their Unicode form."""
    if kind == RuleKind.EMAIL:
        local, _, domain = value.partition("@")
        return f"{local}@{display_domain(domain)}"
    label = display_domain(value)
    return f"{label} and its subdomains" if include_subdomains else label


# --- rules ----------------------------------------------------------------------------


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # accept_unknown=False: a made-up TLD is not a registrable domain.
    return PublicSuffixList(accept_unknown=False)


@functools.cache
def shipped_public_providers() -> frozenset[str]:
    text = resources.files("portal").joinpath("data/public_mail_providers.txt").read_text()
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def public_providers(extra: Iterable[str] = ()) -> frozenset[str]:
    return shipped_public_providers() | {canonical_domain(d) for d in extra}


@functools.cache
def disposable_providers() -> frozenset[str]:
    """Throwaway-inbox services (mailinator.com, yopmail.com, ...): anyone can read mail
    there, often without signing up. The disposable-email-domains package is the data of
    the community-kept list of that name, released on PyPI with every change to it."""
    return frozenset(domain.strip().lower() for domain in disposable_email_domains.blocklist)


def _at_or_under(domain: str, providers: frozenset[str]) -> bool:
    """Whether the domain is a provider or a subdomain of one: each of its suffixes is
    looked up, so a list of thousands costs a few set lookups."""
    labels = domain.split(".")
    return any(".".join(labels[i:]) in providers for i in range(len(labels)))


def _over(domain: str, providers: frozenset[str]) -> bool:
    """Whether some provider is a subdomain of the domain."""
    return any(p.endswith("." + domain) for p in providers)


def _provider_refusal(domain: str, include_subdomains: bool, extra: Iterable[str]) -> str | None:
    """Why a domain rule for `domain` would admit strangers, or None. At or under a
    provider, or (with subdomains) over one: either would let anyone with a mailbox
    there sign in. Addresses at such a domain are fine as individual rules."""
    shown = display_domain(domain)
    instead = f"Add individual addresses at {shown} instead, one at a time."
    public = public_providers(extra)
    if _at_or_under(domain, public) or (include_subdomains and _over(domain, public)):
        return (
            f"{shown} is a public email provider: a rule for it would let anyone with an "
            f"address there sign in. {instead}"
        )
    disposable = disposable_providers()
    if _at_or_under(domain, disposable) or (include_subdomains and _over(domain, disposable)):
        return (
            f"{shown} is a disposable email service: anyone can read mail there, so a rule "
            f"for it would let anyone sign in. {instead}"
        )
    return None


@dataclass(frozen=True)
class RuleSpec:
    """A rule as typed by staff, canonicalised, not yet stored."""

    kind: RuleKind
    value: str
    include_subdomains: bool = False

    @property
    def label(self) -> str:
        return rule_label(self.kind, self.value, self.include_subdomains)


def parse_rule(
    raw: str, include_subdomains: bool = False, extra_providers: Iterable[str] = ()
) -> RuleSpec:
    """An address (contains @) or a domain, canonicalised and checked for use as a rule."""
    text = _precheck(raw, "an email address or a domain")
    if "@" in text:
        if include_subdomains:
            raise AccessError("'And its subdomains' applies to a domain, not to one address.")
        return RuleSpec(RuleKind.EMAIL, canonical_email(text))
    domain = canonical_domain(text)
    psl = _public_suffixes()
    registrable = psl.privatesuffix(domain)
    if registrable is None:
        raise AccessError(
            f"{display_domain(domain)} is not a company's own domain. "
            "Enter a registered domain like company.com."
        )
    refusal = _provider_refusal(domain, include_subdomains, extra_providers)
    if refusal is not None:
        raise AccessError(refusal)
    return RuleSpec(RuleKind.DOMAIN, domain, include_subdomains)


def _domain_admits(rule_domain: str, include_subdomains: bool, domain: str) -> bool:
    return domain == rule_domain or (include_subdomains and domain.endswith("." + rule_domain))


def rule_admits(rule: AccessRule | RuleSpec, email: str) -> bool:
    """Whether the rule admits a canonical address. Exact comparison, nothing else."""
    if rule.kind == RuleKind.EMAIL:
        return email == rule.value
    return _domain_admits(rule.value, rule.include_subdomains, email.rpartition("@")[2])


def admitting_rule(rules: Iterable[AccessRule], email: str) -> AccessRule | None:
    """The rule that admits the canonical address, if any."""
    return next((rule for rule in rules if rule_admits(rule, email)), None)


def may_access(bill_group: BillGroup, email: str, today: dt.date) -> AccessRule | None:
    """The rule that lets this canonical address into this bill group's portal today."""
    if not bill_group.portal_available(today):
        return None
    return admitting_rule(bill_group.access_rules, email)


def refusal(bill_group: BillGroup, email: str, today: dt.date) -> str | None:
    """Why `may_access` says no for this canonical address today, in words for whoever
    asked on the customer's behalf (the seller's app); None if it says yes. Never shown
    to the customer, to whom every refusal looks the same."""
    if not bill_group.portal_enabled:
        return "The portal of this bill group is switched off."
    if not bill_group.has_active_contract(today):
        return "This bill group's contract is not active today."
    if admitting_rule(bill_group.access_rules, email) is None:
        return f"No access rule of this bill group admits {email}."
    return None


def check_new_rule(spec: RuleSpec, existing: Sequence[AccessRule]) -> list[AccessRule]:
    """Raise if the new rule duplicates or is covered by an existing one; return the
    address rules that the new domain rule would make redundant."""
    for rule in existing:
        if rule.kind == spec.kind and rule.value == spec.value:
            raise DuplicateRule(f"{rule.label} already has access.")
    if spec.kind == RuleKind.EMAIL:
        covering = admitting_rule(existing, spec.value)
        if covering is not None:
            raise DuplicateRule(
                f"{covering.label} already has access, so {spec.label} needs no rule of its own."
            )
        return []
    for rule in existing:
        if rule.kind != RuleKind.DOMAIN:
            continue
        if _domain_admits(rule.value, rule.include_subdomains, spec.value):
            raise DuplicateRule(f"{rule.label} already covers {display_domain(spec.value)}.")
        if _domain_admits(spec.value, spec.include_subdomains, rule.value):
            raise DuplicateRule(
                f"{spec.label} would also cover the existing rule for {rule.label}. "
                "Remove that rule first."
            )
    return [r for r in existing if r.kind == RuleKind.EMAIL and rule_admits(spec, r.value)]


@dataclass(frozen=True)
class Stored:
    """A rule just written, and the address rules it folded in (deleted, still readable)."""

    rule: AccessRule
    folded: list[AccessRule]


ROLE_CHOICES = "Choose a role: viewer (reads only) or billing manager (may also change and pay)."


def parse_role(raw: object) -> CustomerRole:
    """A role as typed or posted ("viewer", "billing_manager"), or AccessError naming the
    two there are: anything else ("admin", "owner", a number) is refused, never mapped."""
    if isinstance(raw, CustomerRole):
        return raw
    if isinstance(raw, str):
        try:
            return CustomerRole(raw.strip())
        except ValueError:
            pass
    raise AccessError(ROLE_CHOICES, field="role")


class RuleOptions(TypedDict, total=False):
    """How a rule is added, beyond the rule itself: store_rule's keywords, which the
    functions that hand on to it take too."""

    include_subdomains: bool
    # None: the kind's default (CustomerRole.default_for).
    role: CustomerRole | str | None
    fold_in: bool
    extra_providers: Iterable[str]


def store_rule(
    db: Session,
    bill_group: BillGroup,
    raw: str,
    *,
    created_by: str,
    include_subdomains: bool = False,
    role: CustomerRole | str | None = None,
    fold_in: bool = False,
    extra_providers: Iterable[str] = (),
) -> Stored:
    """Check and write one rule under the bill group's lock; the caller commits.

    With fold_in, address rules that the new domain makes redundant are removed in the
    same transaction and returned in id order; without it they are named in an
    OverlappingRules error. On any AccessError the session has been rolled back. This is
    the write only: portal.actions.rules.add_rule adds the audit rows and the events.
    `role` None gives the kind's default; a role that is not one (a forged "admin") is
    an AccessError on the `role` field, before anything is written.
    """
    try:
        spec = parse_rule(raw, include_subdomains, extra_providers)
        chosen = CustomerRole.default_for(spec.kind) if role is None else parse_role(role)
        # Serialised per bill group, so two concurrent requests cannot add overlapping rules.
        lock_bill_group(db, bill_group.id)
        existing = db.scalars(
            select(AccessRule).where(AccessRule.bill_group_id == bill_group.id)
        ).all()
        redundant = check_new_rule(spec, existing)
        if redundant and not fold_in:
            names = ", ".join(rule.label for rule in redundant)
            raise OverlappingRules(
                f"{spec.label} would make these address rules redundant: {names}. "
                "Remove them first, or add the domain and fold them in.",
                redundant,
            )
        for rule in redundant:
            db.delete(rule)
        rule = AccessRule(
            bill_group_id=bill_group.id,
            kind=spec.kind,
            value=spec.value,
            include_subdomains=spec.include_subdomains,
            role=chosen,
            created_by=created_by,
        )
        db.add(rule)
        db.flush()
    except AccessError:
        db.rollback()
        raise
    except IntegrityError:
        # The same rule committed by a concurrent request after our check.
        db.rollback()
        raise DuplicateRule(f"{spec.label} already has access.") from None
    return Stored(rule, sorted(redundant, key=lambda r: r.id))


def add_rule(
    db: Session, bill_group: BillGroup, raw: str, *, created_by: str, **options: Unpack[RuleOptions]
) -> AccessRule:
    """The rule written by store_rule, with no audit row or event: for seeding (the demo
    data) and for the rule tests. Every face adds rules with portal.actions.rules."""
    return store_rule(db, bill_group, raw, created_by=created_by, **options).rule
