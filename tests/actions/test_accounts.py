"""The rule "a bill group with invoices cannot change entity or currency", driven
through the staff form, the API and an import line: refused by each, with the face's
own words for it, and nothing written."""

from __future__ import annotations

import io
from typing import Any

import pytest
from sqlalchemy import func, select

from portal.models import Account, AuditEvent, BillGroup, StaffRole
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


# --- one write path: a rename, and the same write again, through each face -----------


def _staff(db, staff_client, kind: str, name: str) -> None:
    manager = staff_client(StaffRole.ACCOUNT_MANAGER)
    if kind == "account":
        account = db.scalar(select(Account).filter_by(external_id="acc-1"))
        url, data = f"/admin/accounts/{account.id}/edit", {"name": name, "external_id": "acc-1"}
    else:
        group = db.scalar(select(BillGroup).filter_by(external_id="bg-1"))
        url = f"/admin/bill-groups/{group.id}/edit"
        data = group_form(
            group.entity_id,
            name=name,
            currency="EUR",
            billing_frequency="monthly",
            contract_start="2026-01-01",
        )
    assert submit(manager, url, data).status_code == 303


def _api(api: Api, kind: str, name: str) -> None:
    if kind == "account":
        response = api.put("/accounts/acc-1", {"name": name})
    else:
        response = api.put("/bill-groups/bg-1", BILL_GROUP | {"name": name})
    assert response.status_code == 200, response.get_json()


def _import(app, db, kind: str, name: str) -> None:
    data = {"name": name} if kind == "account" else BILL_GROUP | {"name": name}
    external_id = "acc-1" if kind == "account" else "bg-1"
    line = {"type": kind, "external_id": external_id, "data": data}
    with app.app_context():
        summary = importer.import_records(
            db, io.BytesIO((importer.json.dumps(line) + "\n").encode()), source="t.jsonl"
        )
    assert summary.rejected == 0, summary.describe()


def _record(db, kind: str) -> tuple[Any, ...]:
    db.expire_all()
    model = Account if kind == "account" else BillGroup
    found = db.scalar(select(model).filter_by(external_id="acc-1" if kind == "account" else "bg-1"))
    return found.name, found.updated_at


FACES = ["staff", "api", "import"]


@pytest.mark.parametrize("kind", ["account", "bill_group"])
@pytest.mark.parametrize("face", FACES)
def test_a_rename_is_written_once_and_repeating_it_writes_nothing(
    app, db, api, staff_client, face, kind
):
    def rename(name: str) -> None:
        if face == "staff":
            _staff(db, staff_client, kind, name)
        elif face == "api":
            _api(api, kind, name)
        else:
            _import(app, db, kind, name)

    _name, pushed = _record(db, kind)
    rename("Renamed")
    name, renamed = _record(db, kind)
    assert name == "Renamed" and renamed != pushed
    rename("Renamed")
    assert _record(db, kind) == ("Renamed", renamed)  # not even updated_at


def test_the_staff_form_audits_its_change_and_the_api_its_request(db, api, staff_client):
    _staff(db, staff_client, "account", "By staff")
    _api(api, "account", "By the API")
    db.expire_all()
    rows = db.scalars(
        select(AuditEvent).where(AuditEvent.action.contains("account")).order_by(AuditEvent.id)
    ).all()
    assert [(row.action, row.outcome, row.actor_type) for row in rows][-2:] == [
        ("account.update", "changed", "staff"),
        ("api.accounts.put", "updated", "api"),
    ]
