"""Adding and removing a bill group's access rules, and changing a rule's customer role:
the one path for the staff pages and the API. Each action checks with portal.access,
takes the bill group's rule lock, writes, audits (`access_rule.add` / `access_rule.remove`
/ `access_rule.role`) and queues the webhook events, in the caller's transaction.

A role change, like a removal, needs nothing done to the sessions the rule admitted:
every request reads the role from the rule that admits the address now.

Removing a rule does not end the customer sessions it admitted: every request re-checks
its session against the rules (portal.sessions), so the next click signs them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Unpack

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from portal import audit, events
from portal.access import RuleOptions, parse_role, store_rule
from portal.actions import Actor, NotFound
from portal.db import rowcount
from portal.locks import lock_bill_group
from portal.models import AccessRule, BillGroup, CustomerRole
from portal.sync import serialize


class NoSuchRule(NotFound):
    """The bill group has no rule with that id."""

    def __init__(self) -> None:
        super().__init__("This bill group has no access rule with that id.")


class AlreadyRemoved(NotFound):
    """The rule was there when read, and a concurrent request removed it first."""

    def __init__(self, rule: dict[str, Any]) -> None:
        super().__init__("That access rule has already been removed.")
        self.rule = rule


@dataclass(frozen=True)
class Added:
    """The new rule, and the address rules it folded in, serialised as they were
    before the delete (the rows are gone)."""

    rule: AccessRule
    folded: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Removed:
    """The removed rule, serialised as it was before the delete."""

    rule: dict[str, Any]

    @property
    def label(self) -> str:
        return str(self.rule["label"])


@dataclass(frozen=True)
class RoleChanged:
    """The rule after the change, and the role it had (the same, if nothing changed)."""

    rule: AccessRule
    before: CustomerRole

    @property
    def changed(self) -> bool:
        return self.rule.role != self.before


def _record(db: Session, actor: Actor, group: BillGroup, outcome: str, label: str) -> None:
    action = "access_rule.add" if outcome == "added" else "access_rule.remove"
    audit.record(db, action, outcome, bill_group_id=group.id, detail=label[:500], **actor.audit())


def add_rule(
    db: Session, actor: Actor, group: BillGroup, raw: str, **options: Unpack[RuleOptions]
) -> Added:
    """Add one rule (and, with fold_in, remove the address rules it makes redundant).
    Raises portal.access.AccessError (Invalid), DuplicateRule or OverlappingRules
    (Conflict); the session has then been rolled back."""
    stored = store_rule(db, group, raw, created_by=actor.label, **options)
    folded = [serialize.access_rule(old) for old in stored.folded]
    _record(db, actor, group, "added", stored.rule.label)
    events.access_rule_created(db, group, stored.rule, actor.event())
    for old in folded:
        _record(db, actor, group, "folded_in", old["label"])
        events.access_rule_deleted(db, group, old, actor.event())
    return Added(stored.rule, folded)


def remove_rule(db: Session, actor: Actor, group: BillGroup, rule_id: int) -> Removed:
    """Remove one rule of this bill group. Raises NoSuchRule, or AlreadyRemoved when a
    concurrent request removed it first (the session has then been rolled back)."""
    rule = db.scalar(
        select(AccessRule).where(AccessRule.id == rule_id, AccessRule.bill_group_id == group.id)
    )
    if rule is None:
        raise NoSuchRule()
    gone = serialize.access_rule(rule)
    lock_bill_group(db, group.id)
    # A conditional DELETE, so two people removing the same rule audit it once.
    if rowcount(db.execute(delete(AccessRule).where(AccessRule.id == rule.id))) != 1:
        db.rollback()
        raise AlreadyRemoved(gone)
    _record(db, actor, group, "removed", gone["label"])
    events.access_rule_deleted(db, group, gone, actor.event())
    return Removed(gone)


def change_role(
    db: Session, actor: Actor, group: BillGroup, rule_id: int, role: CustomerRole | str
) -> RoleChanged:
    """Give one rule of this bill group another customer role. Raises AccessError (on
    the `role` field) for anything but a role, before reading anything; NoSuchRule.
    Choosing the role the rule has already is no change: no audit row, no event."""
    wanted = parse_role(role)
    # The rule lock first, then the row: two staff changing the same rule apply in turn,
    # and each audit row's "before" is the role the other one left.
    lock_bill_group(db, group.id)
    rule = db.scalar(
        select(AccessRule)
        .where(AccessRule.id == rule_id, AccessRule.bill_group_id == group.id)
        .execution_options(populate_existing=True)
    )
    if rule is None:
        raise NoSuchRule()
    before = rule.role
    if before == wanted:
        return RoleChanged(rule, before)
    rule.role = wanted
    audit.record(
        db,
        "access_rule.role",
        "changed",
        bill_group_id=group.id,
        detail=f"{rule.label}: {before.value} -> {wanted.value}"[:500],
        **actor.audit(),
    )
    events.access_rule_updated(db, group, rule, actor.event(), changed=["role"])
    return RoleChanged(rule, before)
