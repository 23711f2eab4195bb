"""What the import and export tests share: records, files, running the importer, counts."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.models import InvoiceLine, PaymentApplication, SubscriptionItem
from portal.sync import importer
from portal.sync.records import RECORDS, Context
from tests.api.conftest import CARD
from tests.factories import TODAY


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
            **CARD,  # the API tests' card, but held by someone and from the sandbox
            "holder_name": "Accounts Payable",
            "gateway": "sandbox",
            "gateway_token": "tok_import_1",
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
    models: dict[str, Any] = {name: record.model for name, record in RECORDS.items()}
    # The rows that come inside their parent's record, counted on their own too.
    models |= {
        "subscription_item": SubscriptionItem,
        "invoice_line": InvoiceLine,
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

    at = Context(today=lambda: TODAY, base_url=lambda: "")

    def rows(name: str) -> list[dict[str, Any]]:
        record = RECORDS[name]
        found = [_plain(record.serialize(row, at)) for row in db.scalars(select(record.model))]
        return sorted(found, key=lambda r: json.dumps(r, sort_keys=True))

    return {name: rows(name) for name in RECORDS}


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
