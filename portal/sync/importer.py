"""Bulk import and export of the billing system's records as JSON Lines.

The format: UTF-8, one JSON object per line, each naming one record:

    {"type": "entity", "external_id": "ent-1", "data": {"name": "Northwind", ...}}
    {"type": "account", "external_id": "acc-1", "data": {"name": "Acme Ltd"}}
    {"type": "contact", "bill_group": "bg-1", "kind": "billing", "data": {"name": ...}}

`type` is one of entity, account, bill_group, contact, product, subscription, invoice,
payment, payment_method. `data` is exactly the body of `PUT /api/v1/<resource>/<external
id>` (portal.sync.schemas; money in integer minor units, quantities as strings), and
references inside it are external ids. A contact has no external id: it is named by its
bill group's external id and its kind ("billing" or "shipping"). Blank lines and lines
starting with `#` are skipped. A line may refer to records of earlier lines.

Importing is idempotent: each line is the same upsert the API makes (portal.sync.upsert),
so importing a file twice leaves the second run with everything "unchanged". A line is
written whole or not at all: a line that fails (not JSON, unknown type, a value the
schema refuses, an unknown reference, a clash the database refuses, longer than
MAX_LINE_BYTES) is rolled back alone, in a SAVEPOINT of its own, and reported with its
line number and reasons; every other line is written, and committed every `batch_size`
records. (For speed, lines are first tried a group at a time in one savepoint and one
flush; if anything in the group fails, it is redone a line per savepoint: see
import_records.)

Export writes every record that has an external id (contacts: those whose bill group
has one) in the same format and in dependency order, so that importing an export into
an empty database makes the same records. Not part of the format: entity logos, access
rules, sign-in data, and references to records without an external id (written as
null, which the import refuses where a reference is required).

Both run inside an app context (the audit row takes the clock from the app).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from pydantic import ValidationError
from sqlalchemy import Select, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from portal import audit
from portal.actions import ActionError, Actor
from portal.actions.contacts import update_contact
from portal.models import BillGroup, Contact, ContactKind
from portal.sync import records, schemas, upsert

MAX_LINE_BYTES = 1024 * 1024
BATCH_SIZE = 500
EXPORT_CHUNK = 500
_SKIP_CHUNK = 64 * 1024

Reason = tuple[str | None, str]  # (field, message); field None for the line as a whole


# One `type` of line per synced record type, in dependency order: the order of an
# export, and a safe order for any file.
Kind = records.Record
KINDS: dict[str, Kind] = records.RECORDS
TYPES = tuple(KINDS)
UNREADABLE = "(unreadable)"  # the count of lines whose type could not be told
_KEYS = {"type", "external_id", "data"}
_CONTACT_KEYS = {"type", "bill_group", "kind", "data"}


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class Rejection:
    """A line that was not written, and why."""

    line: int
    type: str | None
    key: str | None  # the external id, or "<bill group>/<kind>" for a contact
    reasons: tuple[Reason, ...]

    @property
    def reason(self) -> str:
        return " ".join(message for _field, message in self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "type": self.type,
            "key": self.key,
            "errors": [{"field": f, "message": m} for f, m in self.reasons],
        }


@dataclass
class Summary:
    source: str
    dry_run: bool = False
    lines: int = 0  # lines read, blank and comment lines included
    counts: dict[str, Counts] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)  # the first `keep`

    def count(self, kind: str | None) -> Counts:
        return self.counts.setdefault(kind or UNREADABLE, Counts())

    def total(self, outcome: str) -> int:
        return sum(getattr(c, outcome) for c in self.counts.values())

    @property
    def records(self) -> int:
        return sum(self.total(o) for o in ("created", "updated", "unchanged", "rejected"))

    @property
    def rejected(self) -> int:
        return self.total("rejected")

    def ordered(self) -> list[tuple[str, Counts]]:
        order = {name: index for index, name in enumerate((*TYPES, UNREADABLE))}
        return sorted(self.counts.items(), key=lambda item: order.get(item[0], len(order)))

    def describe(self) -> str:
        """One line of counts, for the audit trail."""
        totals = ", ".join(
            f"{o} {self.total(o)}" for o in ("created", "updated", "unchanged", "rejected")
        )
        by_type = "; ".join(
            f"{name} {c.created}/{c.updated}/{c.unchanged}/{c.rejected}"
            for name, c in self.ordered()
        )
        return f"{self.source}: {self.records} records: {totals} (by type, {by_type})"


class _Refused(Exception):
    def __init__(self, *reasons: Reason) -> None:
        super().__init__(reasons[0][1])
        self.reasons = reasons


# --- reading --------------------------------------------------------------------------


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, bytes or None if too long, bytes consumed), never holding more than
    MAX_LINE_BYTES + 1 of a line in memory."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        consumed = len(raw)
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:  # skip to the end of the line
                rest = stream.readline(_SKIP_CHUNK)
                consumed += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, None, consumed
            continue
        yield number, raw, consumed


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise _Refused((None, f"The key {twice!r} appears twice in one object."))
    return result


def _constant(name: str) -> Any:
    raise _Refused((None, f"{name} is not a number JSON allows."))


def _parse(raw: bytes, first: bool) -> dict[str, Any] | None:
    """The line's JSON object, or None for a blank or comment line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refused((None, f"The line is not UTF-8 (byte {exc.start + 1}).")) from None
    if first:
        text = text.removeprefix("\ufeff")
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    try:
        data = json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise _Refused((None, f"Not valid JSON: {exc.msg} at column {exc.colno}.")) from None
    if not isinstance(data, dict):
        raise _Refused((None, 'A line is one JSON object: {"type": ..., "data": {...}}.'))
    return data


def _kind(data: dict[str, Any]) -> Kind:
    name = data.get("type")
    if "type" not in data:
        raise _Refused(("type", f"type is required: one of {', '.join(TYPES)}."))
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise _Refused(("type", f"Unknown type {name!r}: use one of {', '.join(TYPES)}."))
    return kind


def _key(kind: Kind, data: dict[str, Any]) -> str | None:
    """The record's key as far as it can be told, for the report."""
    parts = (
        [data.get("bill_group"), data.get("kind")]
        if kind.name == "contact"
        else [data.get("external_id")]
    )
    if all(isinstance(part, str) and len(part) <= 100 for part in parts):
        return "/".join(parts)  # type: ignore[arg-type]
    return None


def _envelope(kind: Kind, data: dict[str, Any]) -> dict[str, Any]:
    """The line's data, once its keys are checked."""
    keys = _CONTACT_KEYS if kind.name == "contact" else _KEYS
    reasons: list[Reason] = [
        (key, f"{key} is not a key of a line of type {kind.name} ({', '.join(sorted(keys))}).")
        for key in data
        if key not in keys
    ]
    reasons += [(key, f"{key} is required.") for key in sorted(keys) if key not in data]
    if reasons:
        raise _Refused(*reasons)
    if not isinstance(data["data"], dict):
        raise _Refused(("data", "data must be a JSON object: the record's fields."))
    if kind.name == "contact":
        group = data["bill_group"]
        if not isinstance(group, str) or not schemas.is_external_id(group):
            reasons.append(("bill_group", "bill_group must be a bill group's external id."))
        if data["kind"] not in schemas.CONTACT_KINDS:
            reasons.append(("kind", 'kind must be "billing" or "shipping".'))
        if reasons:
            raise _Refused(*reasons)
        return data["data"]
    external_id = data["external_id"]
    if not isinstance(external_id, str) or not schemas.is_external_id(external_id):
        raise _Refused(("external_id", "external_id must be 1-100 of A-Z a-z 0-9 . _ : -"))
    return data["data"]


def _body(kind: Kind, data: dict[str, Any]) -> schemas.Body:
    try:
        return kind.body.model_validate(data)
    except ValidationError as exc:
        raise _Refused(*schemas.describe(exc, ("data",))) from None


# --- writing --------------------------------------------------------------------------


def _write(
    db: Session, actor: Actor, kind: Kind, key: str, body: schemas.Body, batch: upsert.Batch
) -> upsert.Upserted:
    if kind.name == "contact":
        group_id, contact_kind = key.split("/")
        group = upsert.find(db, BillGroup, group_id, batch)
        if group is None:
            raise _Refused(("bill_group", f"There is no bill group with external id {group_id!r}."))
        saved = update_contact(
            db,
            actor,
            group,
            ContactKind(contact_kind),
            body.model_dump(),
            defer_flush=batch.defer_flush,
        )
        return upsert.Upserted(saved.contact, saved.created, bool(saved.changed))
    return upsert.put(db, actor, kind.resource, key, body, batch=batch)


def _database_refused(exc: IntegrityError | DataError) -> Reason:
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else ""
    return None, f"The database refused the record: {detail}"


def _begin(db: Session) -> None:
    """Open the transaction for real before the first SAVEPOINT. Python's sqlite3 only
    sends BEGIN before a data-changing statement, so a SAVEPOINT sent first would start
    the transaction itself and its RELEASE would commit it: a dry run would write, and
    a failed batch could not be rolled back."""
    connection = db.connection()
    if connection.dialect.name == "sqlite":
        raw = connection.connection.dbapi_connection
        if raw is not None and not raw.in_transaction:
            connection.exec_driver_sql("BEGIN")


@dataclass(frozen=True)
class _Line:
    """A line that parsed and validated, waiting to be written."""

    number: int
    kind: Kind
    key: str
    body: schemas.Body


_WRITE_ERRORS = (_Refused, upsert.SyncError, ActionError, IntegrityError, DataError)


def _reasons(exc: Exception) -> tuple[Reason, ...]:
    if isinstance(exc, _Refused):
        return exc.reasons
    if isinstance(exc, upsert.SyncError | ActionError):
        return ((f"data.{exc.field}" if exc.field else None, exc.message),)
    assert isinstance(exc, IntegrityError | DataError)
    return (_database_refused(exc),)


def _references(line: _Line) -> set[tuple[str, str]]:
    """The records, as (type, key), that this line's write reads."""
    body: Any = line.body
    if line.kind.name == "contact":
        return {("bill_group", line.key.split("/")[0])}
    found = {
        (name, value)
        for name in ("entity", "account", "bill_group", "payment_method")
        if isinstance(value := getattr(body, name, None), str)
    }
    found |= {("product", item.product) for item in getattr(body, "items", ())}
    if line.kind.name == "subscription":
        found |= {("plan", ext) for ext in [body.plan, *body.allowed_changes.plans] if ext}
    found |= {("product", row.product) for row in getattr(body, "lines", ()) if row.product}
    found |= {("invoice", a.invoice) for a in getattr(body, "applications", ())}
    return found


# Kept in the lookups from one group to the next: the records other lines name.
_REFERENCED = {"entity", "account", "bill_group", "product", "plan", "payment_method"}


def _prefetch(db: Session, lines: list[_Line], lookups: dict[Any, Any]) -> list[Any]:
    """Look up, one query per type, every record the lines write or name that is not
    in `lookups` yet; records found are added, the others marked ABSENT. Returns the
    entries the caller must drop once the lines are written: the ABSENT ones (they may
    exist now) and the records no other line names (so memory stays flat)."""
    wanted: dict[str, set[str]] = {}
    for line in lines:
        if line.kind.name != "contact":
            wanted.setdefault(line.kind.name, set()).add(line.key)
        for name, key in _references(line):
            wanted.setdefault(name, set()).add(key)
    absent = []
    for name, keys in wanted.items():
        kind = KINDS[name]
        model = kind.model
        missing = [key for key in keys if (model, key) not in lookups]
        if not missing:
            continue
        query = select(model).where(model.external_id.in_(missing))
        found = {row.external_id: row for row in db.scalars(query.options(*kind.children))}
        for key in missing:
            lookups[(model, key)] = found.get(key, upsert.ABSENT)
            if key not in found or name not in _REFERENCED:
                absent.append((model, key))
    return absent


def _write_together(
    db: Session, actor: Actor, lines: list[_Line], batch: upsert.Batch
) -> list[upsert.Upserted] | None:
    """Every line in one savepoint with one flush; None, and nothing written, if any
    line or the flush fails (the caller then writes them one by one)."""
    deferred = dataclasses.replace(batch, defer_flush=True)
    try:
        with db.begin_nested(), db.no_autoflush:
            results = [
                _write(db, actor, line.kind, line.key, line.body, deferred) for line in lines
            ]
            db.flush()
        return results
    except _WRITE_ERRORS:
        return None


def _write_one(
    db: Session, actor: Actor, line: _Line, batch: upsert.Batch
) -> upsert.Upserted | Exception:
    try:
        with db.begin_nested():
            return _write(db, actor, line.kind, line.key, line.body, batch)
    except _WRITE_ERRORS as exc:
        return exc


LOOKUPS_MAX = 20_000  # records kept for find(); emptied when there are more


def import_records(
    db: Session,
    stream: IO[bytes],
    *,
    source: str = "-",
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    keep: int | None = None,
    on_reject: Callable[[Rejection], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Import the JSON Lines in `stream` (binary) into `db`, committing every
    `batch_size` records and once more at the end with one audit row ("import.run").

    Rejected lines are passed to `on_reject`, in line order, and the first `keep` (all
    if None) kept in the summary. `progress(bytes, lines)` is called now and then with
    what was read since its last call. With `dry_run`, every line is checked and
    written as usual, then everything is rolled back and nothing is audited. The
    session's transaction is the import's: start it with nothing pending.

    How it is fast and still one line at a time: lines that validate are written in
    groups of up to `batch_size` inside one savepoint with a single flush (a group ends
    early before a line that names a record of the group), and when anything in a group
    fails, the group is rolled back and written again one line per savepoint, so that
    exactly the failing lines are rejected. Records found by external id are kept for
    the next lookups (portal.sync.upsert.Batch), forgotten after any rollback."""
    summary = Summary(source=source, dry_run=dry_run)
    actor = Actor.import_run(source)
    group: list[_Line] = []
    keys: set[tuple[str, str]] = set()  # (type, key) of the lines in `group`
    held: list[Rejection] = []  # reported once the lines before them are written
    uncommitted = 0
    read_bytes = read_lines = 0
    lookups: dict[tuple[type, str], Any] = {}
    batch = upsert.Batch(lookups)

    def reject(number: int, kind: str | None, key: str | None, reasons: tuple[Reason, ...]) -> None:
        held.append(Rejection(number, kind, key, reasons))

    def report() -> None:
        for rejection in sorted(held, key=lambda r: r.line):
            summary.count(rejection.type).rejected += 1
            if keep is None or len(summary.rejections) < keep:
                summary.rejections.append(rejection)
            if on_reject is not None:
                on_reject(rejection)
        held.clear()

    def write_group() -> None:
        nonlocal uncommitted
        results: list[upsert.Upserted | Exception] | None = None
        if len(group) > 1:
            transient = _prefetch(db, group, lookups)
            results = _write_together(db, actor, group, batch)  # type: ignore[assignment]
            for entry in transient:
                lookups.pop(entry, None)
        if results is None:
            lookups.clear()
            results = []
            for line in group:
                results.append(_write_one(db, actor, line, batch))
                if isinstance(results[-1], Exception):
                    lookups.clear()
        for line, result in zip(group, results, strict=True):
            if isinstance(result, Exception):
                reject(line.number, line.kind.name, line.key, _reasons(result))
                continue
            counts = summary.count(line.kind.name)
            if result.created:
                counts.created += 1
            elif result.changed:
                counts.updated += 1
            else:
                counts.unchanged += 1
        uncommitted += len(group)
        group.clear()
        keys.clear()
        report()
        if len(lookups) > LOOKUPS_MAX:
            lookups.clear()
        if uncommitted >= batch_size and not dry_run:
            db.commit()
            uncommitted = 0
            _begin(db)

    try:
        _begin(db)
        for number, raw, consumed in _lines(stream):
            summary.lines = number
            read_bytes += consumed
            read_lines += 1
            if progress is not None and read_lines >= 1000:
                progress(read_bytes, read_lines)
                read_bytes = read_lines = 0
            kind: Kind | None = None
            key: str | None = None
            try:
                if raw is None:
                    raise _Refused(
                        (None, f"The line is longer than {MAX_LINE_BYTES:,} bytes; not read.")
                    )
                data = _parse(raw, number == 1)
                if data is None:
                    continue
                kind = _kind(data)
                key = _key(kind, data)
                body = _body(kind, _envelope(kind, data))
            except _Refused as exc:
                reject(number, kind.name if kind else None, key, exc.reasons)
                if not group:
                    report()
                elif len(held) >= batch_size:
                    write_group()  # and report what it holds
                continue
            line = _Line(number, kind, key, body)  # type: ignore[arg-type]
            own = (kind.name, line.key)
            if group and (own in keys or not keys.isdisjoint(_references(line))):
                write_group()  # it names a record of the group: write those first
            group.append(line)
            keys.add(own)
            if len(group) >= batch_size:
                write_group()
        if group:
            write_group()
        report()
        if progress is not None and read_lines:
            progress(read_bytes, read_lines)
        if dry_run:
            db.rollback()
            return summary
        audit.record(
            db,
            "import.run",
            "rejected_lines" if summary.rejected else "imported",
            actor_type="system",
            actor="import",
            detail=summary.describe(),
        )
        db.commit()
        return summary
    except BaseException:
        db.rollback()
        if not dry_run and summary.records:
            # What earlier batches committed stays; the trail says so.
            try:
                audit.record(
                    db,
                    "import.run",
                    "failed",
                    actor_type="system",
                    actor="import",
                    detail=f"stopped at line {summary.lines}; {summary.describe()}",
                )
                db.commit()
            except Exception:  # the database may be what failed
                db.rollback()
        raise


# --- export ---------------------------------------------------------------------------


def _fields(record: dict[str, Any], model: type[schemas.Body]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key in model.model_fields}


def _line(kind: str, external_id: str | None, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "external_id": external_id, "data": data}


# The export of a record is its API JSON cut to the fields of its body (its children's
# to those of theirs): exactly what importing it takes. Not the API's clock or address.
_EXPORT_CONTEXT = records.Context(today=dt.date.today, base_url=lambda: "")
_CHILD_BODIES: dict[str, tuple[str, type[schemas.Body]]] = {
    "subscription": ("items", schemas.SubscriptionItemIn),
    "invoice": ("lines", schemas.InvoiceLineIn),
    "payment": ("applications", schemas.PaymentApplicationIn),
}


def _export_line(kind: Kind, row: Any) -> dict[str, Any]:
    data = _fields(kind.serialize(row, _EXPORT_CONTEXT), kind.body)
    if kind.name in _CHILD_BODIES:
        children, body = _CHILD_BODIES[kind.name]
        data[children] = [_fields(child, body) for child in data[children]]
    if kind.name == "contact":
        return {
            "type": "contact",
            "bill_group": row.bill_group.external_id,
            "kind": row.kind.value,
            "data": data,
        }
    return _line(kind.name, row.external_id, data)


def _export_query(kind: Kind) -> Select[Any]:
    """The records of `kind` that export writes, in id order."""
    if kind.name == "contact":
        # Contacts are named by their bill group's external id.
        return (
            select(Contact)
            .join(BillGroup, Contact.bill_group_id == BillGroup.id)
            .where(BillGroup.external_id.is_not(None))
            .options(*kind.options)
            .order_by(Contact.id)
        )
    model = kind.model
    return (
        select(model)
        .where(model.external_id.is_not(None))
        .options(*kind.options)
        .order_by(model.id)
    )


def export(db: Session, stream: IO[str], *, chunk: int = EXPORT_CHUNK) -> dict[str, int]:
    """Write every record with an external id to `stream` (text) as JSON Lines, in
    dependency order, reading `chunk` rows at a time; returns the count per type."""
    counts: dict[str, int] = {}
    for name, kind in KINDS.items():
        written = 0
        for row in db.scalars(_export_query(kind), execution_options={"yield_per": chunk}):
            line = _export_line(kind, row)
            stream.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")))
            stream.write("\n")
            written += 1
        counts[name] = written
    return counts
