"""`flask import`: a full dataset, dry runs, stdin, exit codes, the shared messages."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.models import (
    Account,
    AuditEvent,
    BillGroup,
    ContactKind,
    Invoice,
    Payment,
    PaymentMethod,
    Subscription,
)
from portal.sync import schemas, serialize, upsert
from tests.import_helpers import (
    DATASET,
    EXPECTED,
    TODAY,
    bad_file,
    counts,
    jsonl,
    outcome,
    run,
    total_row,
    write,
)

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


def test_an_imported_invoice_is_copied_once_to_each_confirmed_recipient(app, db):
    """Invoice copies (issue 18) through the import: queued with the invoice, in its
    batch, once per invoice and address however often the line is imported again."""
    import datetime as dt

    from portal.models import InvoiceCopy, InvoiceCopyRecipient
    from tests.import_helpers import invoice

    run(app, db, jsonl(DATASET))
    group = db.scalar(select(BillGroup).filter_by(external_id="bg-1"))
    now = dt.datetime.now(dt.UTC)
    for email, confirmed in (
        ("ap-inbox@acme-payables.com", now),
        ("later@acme-payables.com", None),
    ):
        db.add(
            InvoiceCopyRecipient(
                bill_group_id=group.id, email=email, added_by="ap@acme.com", confirmed_at=confirmed
            )
        )
    db.commit()
    new = invoice("inv-copy", "INV-COPY")
    for _ in range(2):
        result = run(app, db, jsonl([new]))
        assert result.rejected == 0
    db.expire_all()
    assert db.scalars(select(InvoiceCopy.email)).all() == ["ap-inbox@acme-payables.com"]
    assert db.scalar(select(func.count()).select_from(InvoiceCopy)) == 1
