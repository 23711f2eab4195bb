"""portal.actions.bank.set_bank_details: checked, stored, audited; nothing written when
a rule refuses."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from portal.actions import Actor, Invalid
from portal.actions.bank import set_bank_details
from portal.models import AuditEvent, Entity
from tests.factories import make_entity

STAFF = Actor.staff("finance@staff.example.com")
GOOD = {
    "account_holder": "Harbour Analytics GmbH",
    "bank_name": "Commerzbank",
    "iban": "de89 3704 0044 0532 0130 00",
    "bic": "COBADEFFXXX",
    "account_number": "",
    "routing_number": "",
    "reference_format": "invoice_number",
}


@pytest.fixture(autouse=True)
def _in_app(app):
    with app.app_context():  # the audit row's clock
        yield


def audits(db) -> list[AuditEvent]:
    return list(db.scalars(select(AuditEvent).where(AuditEvent.action == "entity.bank_details")))


def test_a_good_iban_is_stored_and_audited(db):
    entity = make_entity(db)
    changed = set_bank_details(db, STAFF, entity, **GOOD)
    assert changed["bank_iban"] == [None, "DE89370400440532013000"]
    db.expire_all()
    stored = db.get(Entity, entity.id)
    assert (stored.bank_iban, stored.bank_bic, stored.bank_account_holder) == (
        "DE89370400440532013000",
        "COBADEFFXXX",
        "Harbour Analytics GmbH",
    )
    (row,) = audits(db)
    assert row.actor == "finance@staff.example.com"
    assert json.loads(row.detail)["changes"]["bank_iban"][1] == "DE89370400440532013000"
    # The same again changes nothing and audits nothing.
    assert set_bank_details(db, STAFF, stored, **GOOD) == {}
    assert len(audits(db)) == 1


def test_clearing_the_details(db):
    entity = make_entity(db)
    set_bank_details(db, STAFF, entity, **GOOD)
    empty = dict.fromkeys(GOOD, "") | {"reference_format": "invoice_number"}
    changed = set_bank_details(db, STAFF, entity, **empty)
    assert changed["bank_iban"] == ["DE89370400440532013000", None]
    assert entity.bank_iban is None and entity.bank_account_holder is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"iban": "DE89 3704 0044 0532 0130 01"}, "iban"),  # a bad checksum
        ({"bic": "BNPAFRPPXXX"}, "bic"),  # a French bank for a German account
        ({"account_holder": "Harbour\r\nBCD"}, "account_holder"),  # control characters
        ({"bank_name": "Bank\u200b"}, "bank_name"),  # a zero-width space
        ({"iban": "DE89" + "0" * 200_000}, "iban"),  # huge input
        ({"account_holder": "H" * 100_000}, "account_holder"),
        ({"reference_format": "'; DROP TABLE entities; --"}, "reference_format"),
    ],
)
def test_refused_details_write_nothing(db, overrides, field):
    entity = make_entity(db)
    set_bank_details(db, STAFF, entity, **GOOD)
    before = {name: getattr(entity, name) for name in ("bank_iban", "bank_bic", "bank_name")}
    with pytest.raises(Invalid) as caught:
        set_bank_details(db, STAFF, entity, **(GOOD | overrides))
    assert caught.value.field == field
    assert len(caught.value.message) < 200  # a sentence, not the input echoed back
    assert {name: getattr(entity, name) for name in before} == before
    assert len(audits(db)) == 1  # only the first, good write
