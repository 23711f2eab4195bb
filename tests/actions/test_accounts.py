"""The rule "a bill group with invoices cannot change entity or currency", driven
through the staff form, the API and an import line: refused by each, with the face's
own words for it, and nothing written."""

from __future__ import annotations

import io
from typing import Any

import pytest
from sqlalchemy import func, select

from portal.models import AuditEvent, BillGroup, StaffRole
from portal.sync import importer
from tests.admin.test_accounts import group_form, submit
from tests.api.conftest import BILL_GROUP, Api, make_key, push_bill_group

API_MESSAGE = "This bill group has invoices: its entity and currency can no longer change."
STAFF_CURRENCY = (
    "This bill group already has invoices in EUR, so its currency cannot change. "
    "Create a new bill group for the new currency."
)
STAFF_ENTITY = (
    "This bill group already has invoices from Northwind Cloud, so its entity cannot change."
)


@pytest.fixture
def api(app, client) -> Api:
    api = Api(client, make_key(app))
    push_bill_group(api)  # bg-1, in EUR, with an invoice
    assert (
        api.put(
            "/entities/ent-2", {"name": "Other seller", "support_email": "billing@other.example"}
        ).status_code
        == 201
    )
    return api


def state(db) -> tuple[Any, ...]:
    db.expire_all()
    group = db.scalar(select(BillGroup).filter_by(external_id="bg-1"))
    audited = db.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.action.contains("bill"))
    )
    return group.currency, group.entity_id, group.name, audited


CHANGES = [("currency", {"currency": "GBP"}), ("entity", {"entity": "ent-2"})]


@pytest.mark.parametrize(("field", "change"), CHANGES, ids=[c[0] for c in CHANGES])
def test_the_api_refuses(db, api, field, change):
    before = state(db)
    response = api.put("/bill-groups/bg-1", BILL_GROUP | change | {"name": "Renamed"})
    error = response.get_json()["error"]
    assert (response.status_code, error["message"], error["field"]) == (409, API_MESSAGE, field)
    assert state(db) == before


@pytest.mark.parametrize(("field", "change"), CHANGES, ids=[c[0] for c in CHANGES])
def test_an_import_line_is_rejected(app, db, api, field, change):
    before = state(db)
    line = {
        "type": "bill_group",
        "external_id": "bg-1",
        "data": BILL_GROUP | change | {"name": "Renamed"},
    }
    with app.app_context():
        summary = importer.import_records(
            db, io.BytesIO((importer.json.dumps(line) + "\n").encode()), source="t.jsonl"
        )
    [rejection] = summary.rejections
    assert rejection.reasons == ((f"data.{field}", API_MESSAGE),)
    assert state(db)[:3] == before[:3]


@pytest.mark.parametrize(
    ("change", "message"),
    [({"currency": "GBP"}, STAFF_CURRENCY), ("entity", STAFF_ENTITY)],
    ids=["currency", "entity"],
)
def test_the_staff_form_refuses(db, api, staff_client, change, message):
    group = db.scalar(select(BillGroup).filter_by(external_id="bg-1"))
    other = db.scalar(select(BillGroup.entity_id).filter_by(external_id="bg-1"))
    if change == "entity":
        from portal.models import Entity

        other = db.scalar(select(Entity.id).filter_by(external_id="ent-2"))
        change = {}
    before = state(db)
    manager = staff_client(StaffRole.ACCOUNT_MANAGER)
    data = group_form(
        other,
        name="Renamed",
        currency=change.get("currency", "EUR"),
        contract_start=group.contract_start.isoformat(),
    )
    response = submit(manager, f"/admin/bill-groups/{group.id}/edit", data)
    assert response.status_code == 400
    assert message in response.text
    assert state(db) == before
