"""A seller's settings, as staff set them (paying, subscription changes, bank details):
only what differs is written, and the change is audited once with old and new values."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from portal import audit
from portal.actions import Actor
from portal.models import Entity


def change(
    db: Session, actor: Actor, entity: Entity, action: str, wanted: dict[str, Any]
) -> dict[str, list[Any]]:
    """Set the entity's columns in `wanted` that differ and audit them as `action`
    ({column: [old, new]}); the changes made (empty: nothing written)."""
    changed = {
        name: [getattr(entity, name), value]
        for name, value in wanted.items()
        if getattr(entity, name) != value
    }
    for name, (_old, new) in changed.items():
        setattr(entity, name, new)
    if changed:
        db.flush()
        detail = json.dumps({"entity_id": entity.id, "changes": changed}, ensure_ascii=False)
        audit.record(db, action, "changed", **actor.audit(), detail=detail[:500])
    return changed
