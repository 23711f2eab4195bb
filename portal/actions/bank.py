"""A seller's bank details for paying by bank transfer (staff; portal.bank has the rules)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import bank, clock
from portal.actions import Actor, Invalid, seller_settings
from portal.config import settings
from portal.models import PERMISSIONS, Entity, StaffUser


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
    customers send money is what an audit must answer), and every staff member who may
    change them is emailed a notice naming who did it and the old and new account's
    last four characters: a change that nobody asked for (a phished or rogue session
    redirecting invoice payments) is seen at once, not when a customer's money is gone.
    Nothing is written on an error. Never commits."""
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
    changed = seller_settings.change(db, actor, entity, "entity.bank_details", details.columns())
    if changed:
        _notify(db, actor, entity, changed)
        db.flush()
    return changed


def _last4(iban: str | None, account_number: str | None) -> str | None:
    account = iban or account_number
    return account[-4:] if account else None


def _notify(db: Session, actor: Actor, entity: Entity, changed: dict[str, list[Any]]) -> None:
    """Queue the notice to every active staff member whose role may change bank details
    (the admins). Staff mail: no seller Reply-To, the seller's support inbox is not told
    (it is an address outsiders write to, and seller-level mail goes to staff)."""
    from emails import outbox
    from emails.render import render

    def value(name: str, index: int) -> str | None:
        pair = changed.get(name)
        found = pair[index] if pair is not None else getattr(entity, name)
        return None if found is None else str(found)

    old = _last4(value("bank_iban", 0), value("bank_account_number", 0))
    new = _last4(entity.bank_iban, entity.bank_account_number)
    roles = [role for role, granted in PERMISSIONS.items() if "manage_bank_details" in granted]
    admins = db.scalars(
        select(StaffUser)
        .where(StaffUser.role.in_(roles), StaffUser.is_active.is_(True))
        .order_by(StaffUser.id)
    )
    when = clock.now()
    for admin in admins:
        outbox.queue(
            db,
            render(
                "bank_details_changed",
                admin.email,
                account=admin.email,
                seller=entity.name,
                by=actor.audited_as or actor.name,
                when=when,
                old_last4=old,
                new_last4=new,
                fields=", ".join(FIELD_NAMES.get(name, name) for name in changed),
                issuer=settings().TOTP_ISSUER,
                sign_in_url=f"{settings().PORTAL_BASE_URL}/admin/sign-in",
            ),
        )


FIELD_NAMES = {
    "bank_account_holder": "account holder",
    "bank_name": "bank name",
    "bank_iban": "IBAN",
    "bank_bic": "BIC",
    "bank_account_number": "account number",
    "bank_routing_number": "routing number",
    "bank_reference_format": "payment reference",
}
