"""A seller's bank details for paying by bank transfer (staff; portal.bank has the rules)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from portal import audit, bank
from portal.actions import Actor, Invalid
from portal.models import Entity


def set_bank_details(
    db: Session,
    actor: Actor,
    entity: Entity,
    *,
    account_holder: str | None,
    bank_name: str | None,
    iban: str | None,
    bic: str | None,
    account_number: str | None,
    routing_number: str | None,
    reference_format: str | None,
) -> dict[str, list[Any]]:
    """Check and store the entity's bank details (every field empty clears them); the
    changes made, audited as entity.bank_details (old and new values: who changed where
    customers send money is what an audit must answer). Nothing is written on an error.
    Never commits."""
    try:
        details = bank.check_details(
            account_holder=account_holder,
            bank_name=bank_name,
            iban=iban,
            bic=bic,
            account_number=account_number,
            routing_number=routing_number,
            reference_format=reference_format,
        )
    except bank.BankError as exc:
        raise Invalid(exc.message, exc.field) from None
    wanted = details.columns()
    changed = {
        name: [getattr(entity, name), value]
        for name, value in wanted.items()
        if getattr(entity, name) != value
    }
    for name in changed:
        setattr(entity, name, wanted[name])
    if changed:
        audit.record(
            db,
            "entity.bank_details",
            "changed",
            **actor.audit(),
            detail=json.dumps({"entity_id": entity.id, "changes": changed}, ensure_ascii=False)[
                :500
            ],
        )
        db.flush()
    return changed
