"""Which of a seller's bill groups one verified address reaches today: the customer's
bill-group switcher and the staff access checker.

One statement, driven by the index of rules by value (ix_access_rules_value_kind): the
rules whose value is the address itself, its domain, or a parent domain of it (those
only where the rule includes subdomains). That is exactly `portal.access.rule_admits`,
written as SQL; the switch itself checks the target again with `may_access`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import cast

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.orm import Session

from portal import sso
from portal.access import may_access
from portal.models import AccessRule, BillGroup, RuleKind, SsoMode, SsoProvider


@dataclass(frozen=True)
class Reachable:
    """A bill group an address reaches: what the switcher and the checker show."""

    id: int
    public_id: str
    name: str
    currency: str
    available: bool


def _admits(email: str) -> ColumnElement[bool]:
    domain = email.rpartition("@")[2]
    labels = domain.split(".")
    parents = [".".join(labels[i:]) for i in range(1, len(labels) - 1)]
    admits = or_(
        and_(AccessRule.kind == RuleKind.EMAIL, AccessRule.value == email),
        and_(AccessRule.kind == RuleKind.DOMAIN, AccessRule.value == domain),
    )
    if parents:
        admits = or_(
            admits,
            and_(
                AccessRule.kind == RuleKind.DOMAIN,
                AccessRule.include_subdomains.is_(True),
                AccessRule.value.in_(parents),
            ),
        )
    return admits


def reachable(
    db: Session,
    entity_id: int,
    email: str,
    today: dt.date,
    *,
    exclude_id: int | None = None,
    only_available: bool = True,
    switchable_only: bool = True,
) -> list[Reachable]:
    """The seller's bill groups whose rules admit the canonical address, by name.

    `only_available`: only those customers can reach today (portal on, contract active).
    `switchable_only`: leave out groups whose admitting rule requires the company's own
    sign-in; a session proven by an emailed link must not walk into them (the staff
    checker shows them, with the reason).
    """
    rule = select(AccessRule.id).where(AccessRule.bill_group_id == BillGroup.id, _admits(email))
    if switchable_only:
        required = exists(
            select(SsoProvider.id).where(
                SsoProvider.rule_id == AccessRule.id, SsoProvider.mode == SsoMode.REQUIRED
            )
        )
        rule = rule.where(~required)
    available = cast(ColumnElement[bool], BillGroup.portal_available(today))
    query = (
        select(
            BillGroup.id,
            BillGroup.public_id,
            BillGroup.name,
            BillGroup.currency,
            available.label("available"),
        )
        .where(BillGroup.entity_id == entity_id, exists(rule))
        .order_by(BillGroup.name, BillGroup.currency, BillGroup.id)
    )
    if exclude_id is not None:
        query = query.where(BillGroup.id != exclude_id)
    if only_available:
        query = query.where(available)
    return [
        Reachable(row.id, row.public_id, row.name, row.currency, bool(row.available))
        for row in db.execute(query)
    ]


def may_switch(source: BillGroup, target: BillGroup, email: str, today: dt.date) -> bool:
    """Whether a session of `source` for the canonical address may move to `target` now:
    another bill group of the same seller, available today, a rule of it admits the
    address, and that rule does not require the company's own sign-in."""
    if target.entity_id != source.entity_id or target.id == source.id:
        return False
    rule = may_access(target, email, today)
    return rule is not None and not sso.required_for(rule)
