"""Bulk import and export (`flask import`, `flask export`, portal.sync.importer): real
files through the CLI and through the function, on SQLite and (with `-m db` and
PORTAL_TEST_DATABASE_URL) on PostgreSQL."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from pydantic import ValidationError
from sqlalchemy import func, make_url, select, text
from sqlalchemy.orm import Session

from portal import db as portal_db
from portal.app import create_app
from portal.db import Base, make_engine
from portal.models import (
    Account,
    AuditEvent,
    BillGroup,
    Contact,
    ContactKind,
    Entity,
    Invoice,
    InvoiceLine,
    Payment,
    PaymentApplication,
    PaymentMethod,
    Product,
    Subscription,
    SubscriptionItem,
)
from portal.sync import importer, schemas, serialize, upsert
from tests.conftest import POSTGRES_URL, TEST_CONFIG

TODAY = dt.date(2026, 11, 21)


def invoice(external_id: str, number: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "bill_group": "bg-1",
        "number": number,
        "status": "open",
        "issue_date": "2026-10-01",
        "due_date": "2026-10-31",
        "lines": [
            {
                "description": "Seats",
                "quantity": "5",
                "unit_price_minor": 1000,
                "amount_minor": 5000,
                "tax_rate_bp": 2000,
                "tax_minor": 1000,
                "product": "prod-1",
            },
            {
                "description": "Support hours",
                "quantity": "1.5",
                "unit_price_minor": 2000,
                "amount_minor": 3000,
            },
        ],
    }
    return {"type": "invoice", "external_id": external_id, "data": data | overrides}


CONTACT = {
    "name": "Accounts Payable",
    "company": "Acme Ltd",
    "email": "ap@acme.example.com",
    "phone": "+49 30 1234567",
    "line1": "1 Finance Way",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}

# One of everything, in dependency order.
DATASET: list[dict[str, Any]] = [
    {
        "type": "entity",
        "external_id": "ent-1",
        "data": {
            "name": "Northwind Cloud",
            "legal_name": "Northwind Cloud Ltd",
            "support_email": "billing@northwind.example.com",
            "brand_colour": "#0f766e",
            "country": "GB",
        },
    },
    {"type": "account", "external_id": "acc-1", "data": {"name": "Acme Ltd"}},
    {"type": "account", "external_id": "acc-2", "data": {"name": "Globex"}},
    {
        "type": "bill_group",
        "external_id": "bg-1",
        "data": {
            "account": "acc-1",
            "entity": "ent-1",
            "name": "Acme EUR",
            "currency": "EUR",
            "billing_frequency": "monthly",
            "contract_start": "2025-01-01",
            "next_billing_date": "2026-12-01",
            "auto_pay": True,
            "po_number": "PO-1001",
        },
    },
    {
        "type": "bill_group",
        "external_id": "bg-2",
        "data": {
            "account": "acc-2",
            "entity": "ent-1",
            "name": "Globex GBP",
            "currency": "GBP",
            "billing_frequency": "annual",
            "contract_start": "2024-06-01",
            "contract_end": "2027-05-31",
        },
    },
    {"type": "contact", "bill_group": "bg-1", "kind": "billing", "data": CONTACT},
    {
        "type": "contact",
        "bill_group": "bg-1",
        "kind": "shipping",
        "data": CONTACT | {"name": "Facilities", "email": None, "line2": "Unit 4"},
    },
    {
        "type": "product",
        "external_id": "prod-1",
        "data": {"entity": "ent-1", "name": "Seats", "sku": "SEATS"},
    },
    {
        "type": "product",
        "external_id": "prod-2",
        "data": {"entity": "ent-1", "name": "Storage", "description": "Per TB"},
    },
    {
        "type": "subscription",
        "external_id": "sub-1",
        "data": {
            "bill_group": "bg-1",
            "status": "active",
            "period": "monthly",
            "start_date": "2025-01-01",
            "renewal_date": "2026-12-01",
            "items": [
                {"product": "prod-1", "quantity": 5, "unit_price_minor": 1000},
                {"product": "prod-2", "quantity": 2, "unit_price_minor": 750},
            ],
        },
    },
    invoice("inv-1", "INV-0001"),
    invoice(
        "inv-2",
        "INV-0002",
        status="paid",
        amount_paid_minor=9000,
        total_minor=9000,
        memo="Thank you",
    ),
    {
        "type": "payment_method",
        "external_id": "pm-1",
        "data": {
            "bill_group": "bg-1",
            "type": "card",
            "brand": "visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": 2030,
            "holder_name": "Accounts Payable",
            "gateway": "sandbox",
            "gateway_token": "tok_import_1",
            "is_default": True,
        },
    },
    {
        "type": "payment",
        "external_id": "pay-1",
        "data": {
            "bill_group": "bg-1",
            "amount_minor": 9000,
            "currency": "EUR",
            "status": "succeeded",
            "received_at": "2026-10-05T09:30:00+02:00",
            "reference": "BANK-42",
            "payment_method": "pm-1",
            "applications": [{"invoice": "inv-2", "amount_minor": 9000}],
        },
    },
]
EXPECTED = {
    "entity": 1,
    "account": 2,
    "bill_group": 2,
    "contact": 2,
    "product": 2,
    "subscription": 1,
    "invoice": 2,
    "payment_method": 1,
    "payment": 1,
}


def jsonl(records: list[Any]) -> str:
    """Dicts become JSON lines; strings are written as they are."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def write(tmp_path: Path, records: list[Any], name: str = "records.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(jsonl(records), encoding="utf-8")
    return path


def run(app: Flask, db: Session, content: str | bytes, **options: Any) -> importer.Summary:
    raw = content.encode() if isinstance(content, str) else content
    with app.app_context():
        return importer.import_records(db, io.BytesIO(raw), source="test.jsonl", **options)


def counts(db: Session) -> dict[str, int]:
    db.rollback()  # a fresh snapshot: the CLI wrote through another session
    models = {
        "entity": Entity,
        "account": Account,
        "bill_group": BillGroup,
        "contact": Contact,
        "product": Product,
        "subscription": Subscription,
        "subscription_item": SubscriptionItem,
        "invoice": Invoice,
        "invoice_line": InvoiceLine,
        "payment_method": PaymentMethod,
        "payment": Payment,
        "payment_application": PaymentApplication,
    }
    return {name: db.scalar(select(func.count()).select_from(m)) for name, m in models.items()}


def outcome(summary: importer.Summary) -> dict[str, tuple[int, int, int, int]]:
    return {
        name: (c.created, c.updated, c.unchanged, c.rejected) for name, c in summary.counts.items()
    }


def total_row(*numbers: int) -> str:
    """The summary table's last row, as the CLI prints it."""
    return f"{'total':<16}" + "".join(f"{n:>11,}" for n in numbers)


STAMPS = {"created_at", "updated_at", "portal_url"}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in STAMPS}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def snapshot(db: Session) -> dict[str, list[dict[str, Any]]]:
    """Every record as the API serialises it, keyed and sorted by external id, without
    timestamps or the (random) portal link."""
    db.rollback()

    def rows(model: Any, dump: Any) -> list[dict[str, Any]]:
        found = [_plain(dump(row)) for row in db.scalars(select(model))]
        return sorted(found, key=lambda r: json.dumps(r, sort_keys=True))

    return {
        "entity": rows(Entity, serialize.entity),
        "account": rows(Account, serialize.account),
        "bill_group": rows(BillGroup, lambda r: serialize.bill_group(r, "")),
        "contact": rows(Contact, serialize.contact),
        "product": rows(Product, serialize.product),
        "subscription": rows(Subscription, serialize.subscription),
        "invoice": rows(Invoice, lambda r: serialize.invoice(r, TODAY)),
        "payment_method": rows(PaymentMethod, serialize.payment_method),
        "payment": rows(Payment, serialize.payment),
    }


# --- a full dataset -------------------------------------------------------------------


def test_a_full_dataset_imports_through_the_cli(runner, db, tmp_path):
    path = write(tmp_path, ["# exported from the billing system", "", *DATASET])
    result = runner.invoke(args=["import", str(path)])
    assert result.exit_code == 0, result.output
    assert total_row(len(DATASET), 0, 0, 0) in result.output
    assert "invoice" in result.output and "Rejected" not in result.output

    found = counts(db)
    assert {k: v for k, v in found.items() if k in EXPECTED} == EXPECTED
    assert found["invoice_line"] == 4
    assert found["subscription_item"] == 2
    assert found["payment_application"] == 1

    first = serialize.invoice(db.scalar(select(Invoice).filter_by(external_id="inv-1")), TODAY)
    assert first["bill_group"] == "bg-1" and first["currency"] == "EUR"
    assert (first["subtotal_minor"], first["tax_minor"], first["total_minor"]) == (8000, 1000, 9000)
    assert [line["quantity"] for line in first["lines"]] == ["5", "1.5"]
    assert first["lines"][0]["product"] == "prod-1" and first["lines"][1]["product"] is None
    group = db.scalar(select(BillGroup).filter_by(external_id="bg-1"))
    billing = serialize.contact(group.contact(ContactKind.BILLING))
    assert billing["email"] == "ap@acme.example.com" and billing["city"] == "Berlin"
    paid = serialize.payment(db.scalar(select(Payment).filter_by(external_id="pay-1")))
    assert paid["payment_method"] == "pm-1"
    assert paid["received_at"] == "2026-10-05T07:30:00Z"
    assert paid["applications"] == [{"invoice": "inv-2", "amount_minor": 9000}]
    method = serialize.payment_method(db.scalar(select(PaymentMethod)))
    assert method["is_default"] is True and method["last4"] == "4242"
    subscription = serialize.subscription(db.scalar(select(Subscription)))
    assert subscription["amount_per_period_minor"] == 5 * 1000 + 2 * 750


def test_the_run_is_audited_once_with_the_file_and_counts(runner, db, tmp_path):
    path = write(tmp_path, DATASET)
    assert runner.invoke(args=["import", str(path)]).exit_code == 0
    db.rollback()
    events = db.scalars(select(AuditEvent).where(AuditEvent.action == "import.run")).all()
    assert len(events) == 1
    assert events[0].actor_type == "system" and events[0].outcome == "imported"
    assert str(path) in events[0].detail
    assert f"created {len(DATASET)}, updated 0, unchanged 0, rejected 0" in events[0].detail
    assert "invoice 2/0/0/0" in events[0].detail


def test_a_second_import_changes_nothing(app, db):
    first = run(app, db, jsonl(DATASET))
    assert first.total("created") == len(DATASET) and first.rejected == 0
    stamps = dict(db.execute(select(Invoice.external_id, Invoice.updated_at)).all())

    second = run(app, db, jsonl(DATASET))
    assert second.total("created") == second.total("updated") == second.rejected == 0
    assert second.total("unchanged") == len(DATASET)
    assert outcome(second)["invoice"] == (0, 0, 2, 0)
    db.rollback()
    assert dict(db.execute(select(Invoice.external_id, Invoice.updated_at)).all()) == stamps
    assert counts(db)["invoice_line"] == 4


def test_a_changed_record_is_updated_and_only_it(app, db):
    run(app, db, jsonl(DATASET))
    changed = copy.deepcopy(DATASET)
    changed[1]["data"]["name"] = "Acme Holdings Ltd"
    changed[10]["data"]["lines"] = changed[10]["data"]["lines"][:1]
    summary = run(app, db, jsonl(changed))
    assert outcome(summary)["account"] == (0, 1, 1, 0)
    assert outcome(summary)["invoice"] == (0, 1, 1, 0)
    assert summary.total("updated") == 2
    db.rollback()
    assert db.scalar(select(Account.name).filter_by(external_id="acc-1")) == "Acme Holdings Ltd"
    assert db.scalar(select(Invoice.total_minor).filter_by(external_id="inv-1")) == 6000


def test_lines_may_refer_to_records_of_earlier_lines_within_one_batch(app, db):
    summary = run(app, db, jsonl(DATASET), batch_size=1000)
    assert summary.rejected == 0
    summary_small = run(app, db, jsonl(DATASET), batch_size=1)
    assert summary_small.total("unchanged") == len(DATASET)


# --- bad lines ------------------------------------------------------------------------


def bad_file() -> tuple[list[Any], dict[int, str]]:
    """Good lines with bad ones in between; returns the lines and, per bad line number,
    a field (or message fragment) its rejection must name."""
    lines: list[Any] = list(DATASET[:9])  # entity .. product 2: lines 1-9
    bad: dict[int, str] = {}

    def add(record: Any, expect: str | None = None) -> None:
        lines.append(record)
        if expect is not None:
            bad[len(lines)] = expect

    add('{"type": "account", "external_id": "acc-x", "data": {"name": "X"}', "Not valid JSON")
    add(
        {
            "type": "bill_group",
            "external_id": "bg-x",
            "data": DATASET[3]["data"] | {"account": "acc-missing"},
        },
        "data.account",
    )
    money_as_float = invoice("inv-float", "INV-0090")
    money_as_float["data"]["lines"][1]["amount_minor"] = 30.0
    add(money_as_float, "data.lines.1.amount_minor")
    money_as_text = invoice("inv-text", "INV-0091")
    money_as_text["data"]["lines"][0]["unit_price_minor"] = "1000"
    add(money_as_text, "data.lines.0.unit_price_minor")
    unknown_product = invoice("inv-product", "INV-0092")
    unknown_product["data"]["lines"][1]["product"] = "prod-missing"
    add(unknown_product, "data.lines.1.product")
    add(
        {
            "type": "contact",
            "bill_group": "bg-2",
            "kind": "billing",
            "data": CONTACT | {"email": "ap@globex.example.com, cfo@globex.example.com"},
        },
        "data.email",
    )
    add({"type": "widget", "external_id": "w-1", "data": {}}, "type")
    add({"type": "account", "external_id": "acc 1", "data": {"name": "Spaces"}}, "external_id")
    add({"type": "account", "external_id": "acc-3", "data": {"name": "X"}, "extra": 1}, "extra")
    add({"type": "account", "external_id": "acc-4", "data": {"nmae": "Typo"}}, "data.nmae")
    add({"type": "contact", "bill_group": "bg-9", "kind": "billing", "data": CONTACT}, "bill_group")
    add(invoice("inv-1", "INV-0001"))  # good: line 21
    add(invoice("inv-dup", "INV-0001"), "data.number")  # the number inv-1 has
    add(invoice("inv-usd", "INV-0093", currency="USD"), "data.currency")
    add(DATASET[9])  # the subscription, good
    add(DATASET[11])  # inv-2, good
    add({"type": "account", "external_id": "acc-3", "data": {"name": "Initech"}})  # good
    return lines, bad


def test_bad_lines_are_rejected_alone_with_their_line_numbers(runner, db, tmp_path):
    lines, bad = bad_file()
    path = write(tmp_path, lines)
    errors = tmp_path / "errors.jsonl"
    result = runner.invoke(args=["import", str(path), "--errors", str(errors)])
    assert result.exit_code == 1, result.output

    rejected = [json.loads(line) for line in errors.read_text().splitlines()]
    assert [r["line"] for r in rejected] == sorted(bad)
    for r in rejected:
        named = " ".join(f"{e['field']} {e['message']}" for e in r["errors"])
        assert bad[r["line"]] in named, r
    for number in bad:
        assert f"  line {number}" in result.output
    assert total_row(13, 0, 0, len(bad)) in result.output

    found = counts(db)
    # Every good line, before and after the bad ones, is there; nothing of a bad one.
    assert found["account"] == 3 and found["bill_group"] == 2 and found["contact"] == 2
    assert found["invoice"] == 2 and found["invoice_line"] == 4
    assert found["subscription"] == 1
    assert set(db.scalars(select(Account.external_id))) == {"acc-1", "acc-2", "acc-3"}
    assert db.scalar(select(Account.name).filter_by(external_id="acc-3")) == "Initech"
    assert db.scalar(select(BillGroup.id).filter_by(external_id="bg-2")) is not None
    group = db.scalar(select(BillGroup).filter_by(external_id="bg-2"))
    assert group.contacts == []
    db.rollback()
    event = db.scalar(select(AuditEvent).where(AuditEvent.action == "import.run"))
    assert event.outcome == "rejected_lines" and f"rejected {len(bad)}" in event.detail


def test_the_reasons_are_the_apis_messages(app, db):
    lines, bad = bad_file()
    summary = run(app, db, jsonl(lines))
    by_line = {r.line: r for r in summary.rejections}
    assert by_line[12].reasons == (
        ("data.lines.1.amount_minor", "data.lines.1.amount_minor: Input should be a valid integer"),
    )
    assert by_line[11].reasons[0][0] == "data.account"
    assert "no account with external id 'acc-missing'" in by_line[11].reason
    assert by_line[15].reasons[0][0] == "data.email" and "one at a time" in by_line[15].reason
    assert by_line[16].type is None and "Unknown type 'widget'" in by_line[16].reason
    assert (by_line[18].type, by_line[18].key) == ("account", "acc-3")
    assert by_line[18].reasons[0][0] == "extra"
    assert set(by_line[19].reasons) == {
        ("data.name", "data.name is required."),
        ("data.nmae", "data.nmae is not a field of this record."),
    }
    assert by_line[22].key == "inv-dup" and "already used" in by_line[22].reason
    assert outcome(summary)["invoice"] == (2, 0, 0, 5)
    assert outcome(summary)[importer.UNREADABLE] == (0, 0, 0, 2)


def test_a_write_that_fails_after_flushing_leaves_no_trace(app, db, monkeypatch):
    """The savepoint, not validation, keeps a bad line out: the invoice and its lines are
    written, then the upsert fails; neither the invoice nor a line remains."""
    real = upsert.UPSERTS["invoices"]

    def failing(session: Session, external_id: str, body: Any, **context: Any) -> upsert.Upserted:
        result = real(session, external_id, body, **context)
        session.flush()  # the import may have deferred it
        assert session.scalar(select(func.count()).select_from(InvoiceLine)) >= 2
        if external_id == "inv-2":
            raise upsert.SyncError("invalid", "Refused after writing.", "lines.1")
        return result

    monkeypatch.setitem(upsert.UPSERTS, "invoices", failing)
    summary = run(app, db, jsonl(DATASET[:12] + [DATASET[1] | {"data": {"name": "After"}}]))
    assert [(r.line, r.reasons) for r in summary.rejections] == [
        (12, (("data.lines.1", "Refused after writing."),))
    ]
    found = counts(db)
    assert found["invoice"] == 1 and found["invoice_line"] == 2
    assert db.scalar(select(Invoice.id).filter_by(external_id="inv-2")) is None
    assert db.scalar(select(Account.name).filter_by(external_id="acc-1")) == "After"


def test_an_update_that_fails_keeps_the_old_record_whole(app, db, monkeypatch):
    run(app, db, jsonl(DATASET))
    real = upsert.UPSERTS["invoices"]

    def failing(session: Session, external_id: str, body: Any, **context: Any) -> upsert.Upserted:
        real(session, external_id, body, **context)  # replaces the lines
        session.flush()
        raise upsert.SyncError("conflict", "Refused after writing.")

    monkeypatch.setitem(upsert.UPSERTS, "invoices", failing)
    changed = copy.deepcopy(DATASET[10])
    changed["data"]["lines"] = changed["data"]["lines"][:1]
    changed["data"]["memo"] = "changed"
    summary = run(app, db, jsonl([changed]))
    assert summary.rejected == 1
    db.rollback()
    kept = serialize.invoice(db.scalar(select(Invoice).filter_by(external_id="inv-1")), TODAY)
    assert kept["memo"] is None and len(kept["lines"]) == 2 and kept["total_minor"] == 9000


def test_an_oversized_line_is_rejected_unread_and_the_next_line_is_read(app, db):
    huge = json.dumps(
        {"type": "account", "external_id": "acc-huge", "data": {"name": "x" * (1 << 20)}}
    )
    summary = run(app, db, jsonl([DATASET[1], huge, DATASET[2]]))
    assert [r.line for r in summary.rejections] == [2]
    assert "longer than 1,048,576 bytes" in summary.rejections[0].reason
    assert summary.lines == 3 and outcome(summary)["account"] == (2, 0, 0, 0)
    assert counts(db)["account"] == 2


def test_a_line_just_under_the_limit_is_read(app, db):
    record = {"type": "account", "external_id": "acc-big", "data": {"name": "Big"}}
    padding = importer.MAX_LINE_BYTES - len(json.dumps(record))
    line = json.dumps(record)[:-1] + " " * padding + "}"
    assert len(line.encode()) == importer.MAX_LINE_BYTES
    summary = run(app, db, line + "\n" + line)  # the last line without a newline too
    assert summary.rejected == 0 and outcome(summary)["account"] == (1, 0, 1, 0)


def test_blank_comment_crlf_bom_and_not_utf8_lines(app, db):
    not_utf8 = b'{"type": "account", "external_id": "a", "data": {"name": "\xff"}}\n'
    content = (
        "\ufeff"
        + json.dumps(DATASET[1])
        + "\r\n\n   \n# a comment\n"
        + json.dumps(DATASET[2])
        + "\r\n"
    ).encode() + not_utf8
    summary = run(app, db, content)
    assert outcome(summary)["account"] == (2, 0, 0, 0)
    assert [(r.line, r.reason) for r in summary.rejections] == [
        (6, f"The line is not UTF-8 (byte {not_utf8.index(0xFF) + 1}).")
    ]


def test_envelope_mistakes_are_named(app, db):
    summary = run(
        app,
        db,
        jsonl(
            [
                "[1, 2]",
                {"type": "account", "data": {"name": "X"}},
                {"type": "account", "external_id": "a-1", "data": ["name"]},
                {"type": "contact", "bill_group": "bg-1", "kind": "office", "data": CONTACT},
                {"type": "contact", "external_id": "c-1", "data": CONTACT},
                '{"type": "account", "external_id": "a-2", "data": {"name": "A", "name": "B"}}',
                '{"type": "account", "external_id": "a-3", "data": {"name": NaN}}',
                {"external_id": "a-4", "data": {"name": "X"}},
            ]
        ),
    )
    reasons = {r.line: r.reasons for r in summary.rejections}
    assert len(reasons) == 8
    assert "one JSON object" in reasons[1][0][1]
    assert reasons[2] == (("external_id", "external_id is required."),)
    assert reasons[3][0][0] == "data"
    assert reasons[4] == (("kind", 'kind must be "billing" or "shipping".'),)
    assert {field for field, _ in reasons[5]} == {"external_id", "bill_group", "kind"}
    assert "'name' appears twice" in reasons[6][0][1]
    assert "NaN" in reasons[7][0][1]
    assert reasons[8][0][0] == "type"
    assert counts(db)["account"] == 0


def test_records_that_clash_within_one_group_are_refused_as_alone(app, db):
    """Lines are written a group at a time; a clash inside a group (which only the
    flush sees) sends the group back to one line per savepoint, so the report is the
    same as for lines written alone."""
    method = copy.deepcopy(DATASET[12])
    twin = copy.deepcopy(method) | {"external_id": "pm-2"}
    lines = [
        *DATASET[:9],  # entity .. products
        {"type": "account", "external_id": "acc-1", "data": {"name": "Renamed"}},
        invoice("inv-a", "INV-0100"),
        invoice("inv-b", "INV-0100"),
        method,
        twin,
    ]
    summary = run(app, db, jsonl(lines))
    assert outcome(summary)["account"] == (2, 1, 0, 0)
    assert outcome(summary)["invoice"] == (1, 0, 0, 1)
    assert outcome(summary)["payment_method"] == (1, 0, 0, 1)
    assert [(r.line, r.reasons[0][0]) for r in summary.rejections] == [
        (12, "data.number"),
        (14, "data.gateway_token"),
    ]
    assert "already used by another invoice" in summary.rejections[0].reason
    assert db.scalar(select(Account.name).filter_by(external_id="acc-1")) == "Renamed"
    assert counts(db)["invoice"] == 1 and counts(db)["invoice_line"] == 2


def test_a_database_error_rejects_only_its_line(app, db, monkeypatch):
    from sqlalchemy import insert

    real = upsert.UPSERTS["accounts"]

    def racing(session: Session, external_id: str, body: Any, **context: Any) -> upsert.Upserted:
        result = real(session, external_id, body, **context)
        if external_id == "acc-race":  # another writer takes the external id meanwhile
            session.execute(insert(Account).values(name="Other", external_id=external_id))
        return result

    monkeypatch.setitem(upsert.UPSERTS, "accounts", racing)
    lines = [DATASET[1], {"type": "account", "external_id": "acc-race", "data": {"name": "R"}}]
    summary = run(app, db, jsonl([*lines, DATASET[2]]))
    assert [r.line for r in summary.rejections] == [2]
    assert summary.rejections[0].reason.startswith("The database refused the record: ")
    assert "external_id" in summary.rejections[0].reason
    assert set(db.scalars(select(Account.external_id))) == {"acc-1", "acc-2"}


@pytest.mark.parametrize("batch_size", [1, 3, 500])
def test_every_batch_size_gives_the_same_result(app, db, batch_size):
    lines, bad = bad_file()
    summary = run(app, db, jsonl(lines), batch_size=batch_size)
    assert [r.line for r in summary.rejections] == sorted(bad)
    assert outcome(summary)["invoice"] == (2, 0, 0, 5)
    assert summary.total("created") == 13
    found = counts(db)
    assert (found["account"], found["invoice"], found["invoice_line"]) == (3, 2, 4)
    again = run(app, db, jsonl(lines), batch_size=batch_size)
    assert again.total("unchanged") == 13 and again.total("created") == 0


# --- dry run, stdin, exit codes -------------------------------------------------------


def test_dry_run_checks_everything_and_writes_nothing(runner, db, tmp_path):
    lines, bad = bad_file()
    path = write(tmp_path, lines)
    result = runner.invoke(args=["import", "--dry-run", str(path)])
    assert result.exit_code == 1
    assert "Dry run: nothing was written." in result.output
    assert total_row(13, 0, 0, len(bad)) in result.output
    assert all(count == 0 for count in counts(db).values())
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == 0

    good = write(tmp_path, DATASET, "good.jsonl")
    result = runner.invoke(args=["import", "--dry-run", "--batch-size", "2", str(good)])
    assert result.exit_code == 0, result.output
    assert all(count == 0 for count in counts(db).values())


def test_stdin_and_the_errors_shown(runner, db):
    lines = [DATASET[1], "not json", "{}", "[]", DATASET[2]]
    result = runner.invoke(args=["import", "-", "--show", "2"], input=jsonl(lines).encode())
    assert result.exit_code == 1
    assert "Rejected lines (the first 2 of 3):" in result.output
    assert "  line 2: Not valid JSON" in result.output and "line 4" not in result.output
    assert counts(db)["account"] == 2
    db.rollback()
    assert "stdin:" in db.scalar(select(AuditEvent.detail))


def test_exit_codes(runner, db, tmp_path):
    assert runner.invoke(args=["import", str(write(tmp_path, DATASET))]).exit_code == 0
    bad = write(tmp_path, [DATASET[1], "{"], "bad.jsonl")
    assert runner.invoke(args=["import", str(bad)]).exit_code == 1
    missing = runner.invoke(args=["import", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert runner.invoke(args=["import", "--help"]).exit_code == 0


def test_a_database_failure_stops_the_run_keeps_committed_batches_and_is_audited(
    runner, db, tmp_path, monkeypatch
):
    from sqlalchemy.exc import OperationalError

    def down(session: Session, external_id: str, body: Any, **context: Any) -> upsert.Upserted:
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setitem(upsert.UPSERTS, "invoices", down)
    path = write(tmp_path, DATASET)
    result = runner.invoke(args=["import", str(path), "--batch-size", "2"])
    assert result.exit_code == 1
    assert "The import stopped, the database failed: server closed the connection" in (
        result.output
    )
    assert "Traceback" not in result.output
    found = counts(db)
    assert found["account"] == 2 and found["invoice"] == 0
    event = db.scalar(select(AuditEvent).where(AuditEvent.action == "import.run"))
    assert event.outcome == "failed" and "stopped at line" in event.detail


def test_help_documents_the_format(runner):
    for command in ("import", "export"):
        result = runner.invoke(args=[command, "--help"])
        assert result.exit_code == 0
        assert '{"type": "account", "external_id": "acc-1"' in result.output
        assert "payment_method" in result.output


# --- export ---------------------------------------------------------------------------


@pytest.fixture
def fresh_app(tmp_path, app) -> Iterator[Flask]:
    """A second app on an empty database of its own (on PostgreSQL, a throwaway
    database on the same server)."""
    name = None
    if POSTGRES_URL:
        name = f"portal_import_{secrets.token_hex(4)}"
        server = make_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
        with server.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    other = create_app({**TEST_CONFIG, "DATABASE_URL": url})
    with other.app_context():
        Base.metadata.create_all(portal_db.engine())
    try:
        yield other
    finally:
        with other.app_context():
            portal_db.engine().dispose()
        if name:
            with server.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            server.dispose()


def test_export_then_import_into_an_empty_database_round_trips(
    runner, db, app, fresh_app, tmp_path
):
    source = write(tmp_path, DATASET)
    assert runner.invoke(args=["import", str(source)]).exit_code == 0
    before = snapshot(db)
    assert sum(len(rows) for rows in before.values()) == len(DATASET)

    exported = tmp_path / "export.jsonl"
    result = runner.invoke(args=["export", str(exported)])
    assert result.exit_code == 0, result.output
    assert f"Exported {len(DATASET)} records" in result.output
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    order = [line["type"] for line in lines]
    assert order == sorted(order, key=importer.TYPES.index)
    assert len(lines) == len(DATASET)

    imported = fresh_app.test_cli_runner().invoke(args=["import", str(exported)])
    assert imported.exit_code == 0, imported.output
    other = fresh_app.extensions["portal.db"]()
    try:
        assert snapshot(other) == before
    finally:
        other.close()
    db.rollback()
    assert db.scalar(select(AuditEvent.detail).where(AuditEvent.action == "export.run"))


def test_export_leaves_out_records_without_an_external_id(app, db):
    run(app, db, jsonl(DATASET))
    group = db.scalar(select(BillGroup).filter_by(external_id="bg-2"))
    db.add(Account(name="No id"))
    db.add(Contact(bill_group=group, kind=ContactKind.BILLING, **CONTACT))
    group.external_id = None
    db.commit()
    stream = io.StringIO()
    with app.app_context():
        written = importer.export(db, stream, chunk=1)
    types = [json.loads(line)["type"] for line in stream.getvalue().splitlines()]
    assert written["account"] == 2 and written["bill_group"] == 1 and written["contact"] == 2
    assert types.count("account") == 2 and types.count("contact") == 2
    assert sum(written.values()) == len(types) == len(DATASET) - 1


def test_export_to_stdout_is_importable(runner, app, db):
    run(app, db, jsonl(DATASET))
    result = runner.invoke(args=["export", "-"])
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(DATASET)
    again = run(app, db, "\n".join(lines))
    assert again.total("unchanged") == len(DATASET) and again.rejected == 0


def test_the_readme_example_imports(app, db):
    from portal import ROOT

    readme = (ROOT / "README.md").read_text()
    example = readme.split("### Bulk import and export", 1)[1].split("```jsonl\n", 1)[1]
    example = example.split("```", 1)[0]
    summary = run(app, db, example)
    assert summary.rejected == 0 and summary.total("created") == 3
    assert counts(db)["bill_group"] == 1


# --- the shared validation messages ---------------------------------------------------


def test_describe_names_the_field_in_every_message():
    with pytest.raises(ValidationError) as caught:
        schemas.InvoiceIn.model_validate(
            {"bill_group": "bg-1", "number": "1", "status": "open", "lines": [{}], "x": 1}
        )
    described = dict(schemas.describe(caught.value, ("data",)))
    assert described["data.issue_date"] == "data.issue_date is required."
    assert described["data.x"] == "data.x is not a field of this record."
    assert described["data.lines.0.description"] == "data.lines.0.description is required."
    unprefixed = dict(schemas.describe(caught.value))
    assert unprefixed["issue_date"] == "issue_date is required."
