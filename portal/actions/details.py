"""Billing details: a bill group's PO, VAT and registration numbers, as its customer
changes them (the billing system sets them with the bill group, portal.sync.upsert,
under the same rules: portal.details.BILLING_DETAILS)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from portal import audit, details, events, notices
from portal.actions import Actor
from portal.models import BillGroup


@dataclass(frozen=True)
class Updated:
    """What a save changed: the fields, in the form's order; empty when nothing did
    (then nothing was written, audited or announced)."""

    changed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.changed)


def record_change(
    db: Session,
    actor: Actor,
    group: BillGroup,
    action: str,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
) -> list[str]:
    """Audit what changed, old -> new, in the caller's transaction; the changed fields
    (none: nothing is audited)."""
    changed = {
        key: [before.get(key), value] for key, value in after.items() if before.get(key) != value
    }
    if changed:
        audit.record(
            db,
            action,
            "changed",
            **actor.audit(),
            bill_group_id=group.id,
            detail=json.dumps(changed, default=str, ensure_ascii=False),
        )
    return list(changed)


def update_billing_details(
    db: Session, actor: Actor, group: BillGroup, values: Mapping[str, str | None]
) -> Updated:
    """Set the PO, VAT and registration numbers (each checked by its rule; InvalidFields
    names every one that is wrong, and nothing is written), audit the change, queue the
    `billing_details.updated` event and the notice to the billing contact."""
    new = details.checked(details.BILLING_DETAILS, values)
    to = notices.recipients(group)
    before = {key: getattr(group, key) for key in new}
    changed = record_change(db, actor, group, "billing_details.update", before, new)
    if not changed:
        return Updated(())
    for key in changed:
        setattr(group, key, new[key])
    notices.details_changed(
        db,
        group,
        actor,
        "billing details",
        [(key, before[key], new[key]) for key in changed],
        to,
    )
    events.billing_details_updated(db, group, actor.event(), changed)
    return Updated(tuple(changed))
