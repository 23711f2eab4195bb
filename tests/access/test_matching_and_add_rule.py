"""Rule matching and add_rule: who a bill group admits, rules kept exact without overlaps."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.access import (
    AccessError,
    DuplicateRule,
    OverlappingRules,
    RuleSpec,
    add_rule,
    admitting_rule,
    canonical_email,
    may_access,
    rule_admits,
)
from portal.models import AccessRule, BillGroup
from tests.access.helpers import (
    DOMAIN,
    EMAIL,
    STAFF,
    assert_sentence,
    stored,
)
from tests.factories import TODAY, make_bill_group

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
