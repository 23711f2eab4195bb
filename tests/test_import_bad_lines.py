"""`flask import` refuses each bad line with its reason and keeps the good ones."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.models import (
    Account,
    AuditEvent,
    BillGroup,
    Invoice,
    InvoiceLine,
)
from portal.sync import importer, serialize, upsert
from tests.import_helpers import (
    CONTACT,
    DATASET,
    TODAY,
    bad_file,
    counts,
    invoice,
    jsonl,
    outcome,
    run,
    total_row,
    write,
)

# --- bad lines ------------------------------------------------------------------------


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
