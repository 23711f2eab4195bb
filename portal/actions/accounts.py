"""Accounts and bill groups: creating and changing them, and the rule that a bill
group's invoices pin its entity and currency. The staff forms, the API and the importer
(through portal.sync.upsert, which finds the record by its external id) all call these
actions.

The billing system (an API key, an import run) is audited by its face, as for contacts:
the API writes one row per request, the import one per run; an action audits staff.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal import audit, notices
from portal.actions import Actor, Conflict, autopay
from portal.details import BILLING_DETAILS
from portal.models import Account, BillGroup, Invoice

EXTERNAL_ID_TAKEN = "Another record already has that external id."

# The bill group columns the staff form edits, in the order the audit lists them.
GROUP_FIELDS = (
    "entity_id",
    "name",
    "currency",
    "billing_frequency",
    "next_billing_date",
    "auto_pay",
    "contract_start",
    "contract_end",
    "portal_enabled",
)


def _audited_here(actor: Actor) -> bool:
    """Whether the action writes the audit row: not for the billing system (above)."""
    return actor.kind not in ("api", "import")


class ExternalIdTaken(Conflict):
    """Another account already has that external id."""

    def __init__(self) -> None:
        super().__init__(EXTERNAL_ID_TAKEN, "external_id")


class InvoicedTermsFixed(Conflict):
    """A bill group with invoices cannot change entity or currency. `message` and
    `field` are the API's and the importer's (one field: currency first); `errors` says
    it per field, as the staff form shows it."""

    def __init__(self, group: BillGroup, *, currency: bool, entity: bool) -> None:
        super().__init__(
            "This bill group has invoices: its entity and currency can no longer change.",
            "currency" if currency else "entity",
        )
        self.errors: dict[str, str] = {}
        if currency:
            self.errors["currency"] = (
                f"This bill group already has invoices in {group.currency}, so its currency "
                "cannot change. Create a new bill group for the new currency."
            )
        if entity:
            self.errors["entity_id"] = (
                f"This bill group already has invoices from {group.entity.name}, so its "
                "entity cannot change."
            )


def has_invoices(db: Session, group: BillGroup) -> bool:
    first = db.scalar(select(Invoice.id).where(Invoice.bill_group_id == group.id).limit(1))
    return first is not None


def check_terms(db: Session, group: BillGroup, *, entity_id: int | None, currency: str) -> None:
    """Invoices are tied to their group's entity and currency: raise InvoicedTermsFixed
    if either would change on a group that has any."""
    currency_changes = currency != group.currency
    entity_changes = entity_id != group.entity_id
    if (currency_changes or entity_changes) and has_invoices(db, group):
        raise InvoicedTermsFixed(group, currency=currency_changes, entity=entity_changes)


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """Old and new value of each field that differs."""
    return {key: [before.get(key), new] for key, new in after.items() if before.get(key) != new}


def record(
    db: Session,
    actor: Actor,
    action: str,
    outcome: str,
    account_id: int,
    changed: dict[str, Any],
    bill_group_id: int | None = None,
) -> None:
    """Old -> new for each changed field, in the caller's transaction."""
    audit.record(
        db,
        action,
        outcome,
        bill_group_id=bill_group_id,
        detail=json.dumps(
            {"account_id": account_id, "changes": changed}, default=str, ensure_ascii=False
        ),
        **actor.audit(),
    )


# --- accounts -------------------------------------------------------------------------


def _external_id_free(db: Session, wanted: str | None, account: Account | None) -> None:
    if wanted is None or (account is not None and account.external_id == wanted):
        return
    if db.scalar(select(Account.id).where(Account.external_id == wanted)) is not None:
        raise ExternalIdTaken()


def _flush_account(db: Session, actor: Actor) -> None:
    """The external id was checked, but a concurrent request may have taken it since:
    then say so, and leave nothing written. The billing system names its records by
    that id, so for it the clash is the same record written at once by another request:
    the IntegrityError goes to its face, which retries it as an update (the API) or
    rejects the line in its own savepoint (the import)."""
    if not _audited_here(actor):
        db.flush()
        return
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        raise ExternalIdTaken() from None


def create_account(
    db: Session,
    actor: Actor,
    *,
    name: str,
    external_id: str | None,
    defer_flush: bool = False,
) -> Account:
    """`defer_flush`: the import flushes many records at once and its unique keys refuse
    a clash then (portal.sync.upsert.Batch); only for the billing system."""
    after = {"name": name, "external_id": external_id}
    account = Account(**after)
    if defer_flush and not _audited_here(actor):
        db.add(account)
        return account
    _external_id_free(db, external_id, None)
    db.add(account)
    _flush_account(db, actor)  # the new account's id, for the audit row
    if _audited_here(actor):
        record(db, actor, "account.create", "created", account.id, changes({}, after))
    return account


def update_account(
    db: Session,
    actor: Actor,
    account: Account,
    *,
    name: str,
    external_id: str | None,
    defer_flush: bool = False,
) -> dict[str, list[Any]]:
    """The changes made (none: nothing written)."""
    _external_id_free(db, external_id, account)
    after = {"name": name, "external_id": external_id}
    changed = changes({"name": account.name, "external_id": account.external_id}, after)
    if not changed:
        return changed
    account.name, account.external_id = name, external_id
    if defer_flush and not _audited_here(actor):
        return changed
    _flush_account(db, actor)
    if _audited_here(actor):
        record(db, actor, "account.update", "changed", account.id, changed)
    return changed


# --- bill groups ----------------------------------------------------------------------


def create_bill_group(
    db: Session,
    actor: Actor,
    account: Account,
    values: dict[str, Any],
    *,
    defer_flush: bool = False,
) -> BillGroup:
    """`values`: the staff form's GROUP_FIELDS, or what the billing system sends (also
    its external id and billing details). `defer_flush` as for create_account."""
    group = BillGroup(account_id=account.id, **values)
    db.add(group)
    if defer_flush and not _audited_here(actor):
        return group
    db.flush()
    if _audited_here(actor):
        record(db, actor, "bill_group.create", "created", account.id, changes({}, values), group.id)
    return group


def update_bill_group(
    db: Session, actor: Actor, group: BillGroup, values: dict[str, Any]
) -> dict[str, list[Any]]:
    """Change the group's fields (`values` as for create_bill_group, the billing system's
    with its account_id); the changes made (none: nothing written, not even updated_at).
    Raises InvoicedTermsFixed before writing anything. The caller flushes."""
    check_terms(db, group, entity_id=values.get("entity_id"), currency=values["currency"])
    changed = changes({name: getattr(group, name) for name in values}, values)
    if not changed:
        return changed
    for name in changed:
        if name != "auto_pay":
            setattr(group, name, values[name])
    if "auto_pay" in changed:
        # The customer's switch's path: its own audit row, event and notice.
        autopay.set_autopay(db, actor, group, bool(values["auto_pay"]))
    if changed.keys() & {"account_id", "entity_id"}:
        # The relationships follow the new ids on their next load.
        db.expire(group, ["account", "entity"])
    if _audited_here(actor):
        record(db, actor, "bill_group.update", "changed", group.account_id, changed, group.id)
    told = [(name, *changed[name]) for name in BILLING_DETAILS if name in changed]
    if told:
        # Staff or the billing system changed what the customer sees on its invoices:
        # the change history and the billing contact hear of it (portal.notices).
        notices.details_changed(
            db, group, actor, "billing details", told, notices.recipients(group)
        )
    return changed
