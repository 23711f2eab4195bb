"""credit-notes through the API (upsert, get, list, feed) and the import, as the other
synced records; what customers applied in the portal survives the billing system's next
upsert; payments show portal-initiated ones with their gateway fields."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import select

from portal.actions import Actor
from portal.actions.credits import Source, apply_credit
from portal.models import BillGroup, CreditNote
from portal.sync import importer
from portal.sync.schemas import MAX_MINOR
from tests.api.conftest import BILL_GROUP, Api, push_bill_group
from tests.factories import add_portal_payment

NOTE = {
    "bill_group": "bg-1",
    "number": "CN-1",
    "currency": "EUR",
    "issue_date": "2026-11-15",
    "amount_minor": 2000,
    "reason": "Outage credit, 3 November",
}


@pytest.fixture
def pushed(api: Api) -> Api:
    push_bill_group(api)
    return api


@pytest.mark.db
def test_upsert_get_and_list(pushed):
    api = pushed
    created = api.put("/credit-notes/cn-1", NOTE)
    assert created.status_code == 201
    assert created.headers["Location"].endswith("/api/v1/credit-notes/cn-1")
    body = created.get_json()
    assert body["remaining_minor"] == 2000 and body["voided"] is False
    again = api.put("/credit-notes/cn-1", NOTE)
    assert again.status_code == 200 and again.get_json()["updated_at"] == body["updated_at"]
    voided = api.put("/credit-notes/cn-1", NOTE | {"voided": True}).get_json()
    assert voided["voided"] is True and voided["voided_at"] and voided["remaining_minor"] == 0
    assert api.get("/credit-notes/cn-1").get_json()["number"] == "CN-1"
    listed = api.get("/credit-notes?bill_group=bg-1").get_json()["data"]
    assert [row["external_id"] for row in listed] == ["cn-1"]
    assert api.get("/credit-notes?bill_group=nobody").get_json()["data"] == []


@pytest.mark.db
def test_the_feed_lists_a_changed_note_again(pushed):
    api = pushed
    api.put("/credit-notes/cn-1", NOTE)
    first = api.get("/credit-notes").get_json()
    resume = first["resume_cursor"]
    assert api.get(f"/credit-notes?cursor={resume}").get_json()["data"] == []
    api.put("/credit-notes/cn-1", NOTE | {"amount_applied_minor": 500})
    rows = api.get(f"/credit-notes?cursor={resume}").get_json()["data"]
    assert [(r["external_id"], r["amount_applied_minor"]) for r in rows] == [("cn-1", 500)]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"currency": "USD"}, "currency"),
        ({"bill_group": "nobody"}, "bill_group"),
        ({"amount_minor": 0}, "amount_minor"),
        ({"amount_minor": -1}, "amount_minor"),
        ({"amount_minor": MAX_MINOR + 1}, "amount_minor"),
        ({"amount_minor": 2**63}, "amount_minor"),
        ({"amount_minor": "20.00"}, "amount_minor"),
        ({"amount_minor": 12.5}, "amount_minor"),
        ({"amount_applied_minor": 2001}, None),
        ({"amount_applied_minor": -1}, "amount_applied_minor"),
        ({"issue_date": "2026-02-30"}, "issue_date"),
        ({"issue_date": "yesterday"}, "issue_date"),
        ({"number": ""}, "number"),
        ({"number": "x" * 41}, "number"),
        ({"reason": "Line one\u0007"}, "reason"),
        ({"reason": "x" * 501}, "reason"),
        ({"voided": "yes"}, "voided"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_bodies_are_422_and_nothing_is_written(pushed, db, change, field):
    response = pushed.put("/credit-notes/cn-1", NOTE | change)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    fields = [e["field"] for e in error.get("errors") or [error]]
    assert field in fields, error
    assert db.scalar(select(CreditNote)) is None


def test_a_control_character_in_the_reason_is_refused_on_the_way_in(pushed):
    response = pushed.put("/credit-notes/cn-1", NOTE | {"reason": "Credit\u0000"})
    assert response.status_code in (400, 422)


def test_a_number_used_twice_in_a_group_is_409(pushed):
    assert pushed.put("/credit-notes/cn-1", NOTE).status_code == 201
    response = pushed.put("/credit-notes/cn-2", NOTE)
    assert response.status_code == 409 and response.get_json()["error"]["field"] == "number"


def test_a_note_never_moves_to_another_group(pushed):
    pushed.put("/credit-notes/cn-1", NOTE)
    assert pushed.put("/bill-groups/bg-2", BILL_GROUP | {"name": "Other"}).status_code == 201
    response = pushed.put("/credit-notes/cn-1", NOTE | {"bill_group": "bg-2"})
    assert response.status_code == 409


@pytest.mark.db
def test_what_the_portal_applied_stays_applied(app, db, pushed):
    pushed.put("/credit-notes/cn-1", NOTE)
    with app.app_context():
        group = db.scalar(select(BillGroup))
        note = db.scalar(select(CreditNote))
        apply_credit(
            db,
            Actor.customer("ap@acme.com"),
            group,
            source=Source("credit_note", note.id),
            invoice_id=None,
            amount_minor=1500,
        )
        db.commit()
    # The billing system has not heard yet: it sends 0 applied. The portal keeps 1,500.
    body = pushed.put("/credit-notes/cn-1", NOTE).get_json()
    assert body["amount_applied_minor"] == 1500 and body["remaining_minor"] == 500
    body = pushed.put("/credit-notes/cn-1", NOTE | {"amount_applied_minor": 1800}).get_json()
    assert body["amount_applied_minor"] == 1800
    refused = pushed.put("/credit-notes/cn-1", NOTE | {"amount_minor": 1000})
    assert refused.status_code == 409 and refused.get_json()["error"]["field"] == "amount_minor"


def test_the_import_takes_credit_notes_and_the_export_writes_them(app, db, pushed):
    line = {"type": "credit_note", "external_id": "cn-9", "data": NOTE | {"number": "CN-9"}}
    with app.app_context():
        summary = importer.import_records(
            db, io.BytesIO((json.dumps(line) + "\n").encode()), source="notes.jsonl"
        )
    assert summary.rejected == 0, summary.describe()
    assert db.scalar(select(CreditNote.number)) == "CN-9"
    out = io.StringIO()
    with app.app_context():
        importer.export(db, out)
    exported = [json.loads(row) for row in out.getvalue().splitlines()]
    notes = [row for row in exported if row["type"] == "credit_note"]
    assert notes == [line | {"data": line["data"] | {"amount_applied_minor": 0, "voided": False}}]


def test_payments_list_portal_payments_with_their_gateway_fields(db, pushed):
    group = db.scalar(select(BillGroup))
    add_portal_payment(db, group, 4200, gateway_reference="ch_123", refunded_minor=200)
    db.commit()
    (row,) = pushed.get("/payments?bill_group=bg-1").get_json()["data"]
    assert row["external_id"] is None
    assert (row["source"], row["gateway"], row["gateway_reference"]) == (
        "portal",
        "sandbox",
        "ch_123",
    )
    assert (row["refunded_minor"], row["created_by"], row["failure_message"]) == (
        200,
        "ap@acme.com",
        None,
    )
