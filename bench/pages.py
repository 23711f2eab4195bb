#!/usr/bin/env python3
"""SQL statements and latency of the overview and invoice-list pages, for a bill group
with 10 and with 10,000 invoices, in the same run.

    .venv/bin/python bench/pages.py [requests-per-page]
    PORTAL_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \
        .venv/bin/python bench/pages.py

Prints figures only; the suite's own test checks that the statement count does not
grow with the number of invoices. Timings are medians, and the 10,000 case is given as
a ratio to the 10 case measured moments before, so a noisy machine affects both.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The bench reuses the test suite's config and factories.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, insert  # noqa: E402

from portal import db as portal_db  # noqa: E402
from portal.access import add_rule  # noqa: E402
from portal.app import create_app  # noqa: E402
from portal.db import Base  # noqa: E402
from portal.models import Invoice, InvoiceStatus  # noqa: E402
from tests.conftest import TEST_CONFIG, csrf_token  # noqa: E402
from tests.factories import make_bill_group  # noqa: E402

TODAY = dt.date.today()


def build(app, invoices: int) -> str:
    """A bill group with `invoices` invoices (bulk inserted) and an access rule."""
    with app.app_context():
        session = portal_db.session()
        group = make_bill_group(session, currency="GBP")
        add_rule(session, group, "acme.com", created_by="bench")
        rows = []
        for i in range(invoices):
            issued = TODAY - dt.timedelta(days=i % 3000)
            status = InvoiceStatus.PAID if i > 3 else InvoiceStatus.OPEN
            total = 10_000 + i
            rows.append(
                {
                    "entity_id": group.entity_id,
                    "bill_group_id": group.id,
                    "number": f"B{group.id}-{i:06d}",
                    "currency": "GBP",
                    "status": status,
                    "issue_date": issued,
                    "due_date": issued + dt.timedelta(days=30),
                    "subtotal_minor": total,
                    "tax_minor": 0,
                    "total_minor": total,
                    "amount_paid_minor": total if status == InvoiceStatus.PAID else 0,
                    "created_at": portal_db.utcnow(),
                    "updated_at": portal_db.utcnow(),
                }
            )
        for start in range(0, len(rows), 5000):
            session.execute(insert(Invoice), rows[start : start + 5000])
        session.commit()
        return group.public_id


def signed_in_client(app, public_id: str):
    """Signs in through the real pages; the bench counts nothing of this."""
    from portal.models import OutboxMessage

    client = app.test_client()
    page = client.get(f"/p/{public_id}")
    client.post(
        f"/p/{public_id}/sign-in",
        data={"csrf_token": csrf_token(page.text), "email": "ap@acme.com"},
    )
    with app.app_context():
        from portal import signin

        signin.evaluate_pending(portal_db.session())
        message = portal_db.session().query(OutboxMessage).order_by(OutboxMessage.id.desc()).first()
        from emails.outbox import unseal

        text = unseal(message.text_body)
    path = re.search(r"(/p/\S+/verify/\S+)", text).group(1)
    confirm = client.get(client.get(path).headers["Location"])
    client.post(f"/p/{public_id}/confirm", data={"csrf_token": csrf_token(confirm.text)})
    return client


def measure(app, client, path: str, repetitions: int) -> tuple[int, float]:
    engine = app.extensions["portal.db"].kw["bind"]
    statements = []

    def count(*_args) -> None:
        statements.append(1)

    for _ in range(5):  # warm caches and the connection pool
        client.get(path)
    event.listen(engine, "before_cursor_execute", count)
    response = client.get(path)
    event.remove(engine, "before_cursor_execute", count)
    assert response.status_code == 200, (path, response.status_code)
    timings = []
    for _ in range(repetitions):
        start = time.perf_counter()
        client.get(path)
        timings.append(time.perf_counter() - start)
    return len(statements), statistics.median(timings) * 1000


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    url = os.environ.get("PORTAL_BENCH_DATABASE_URL")
    folder = tempfile.mkdtemp()
    app = create_app(
        {
            **TEST_CONFIG,
            "DATABASE_URL": url or f"sqlite:///{folder}/bench.db",
            "SECRET_ENDPOINT_LIMIT": "10000 per minute",
        }
    )
    with app.app_context():
        Base.metadata.drop_all(portal_db.engine())
        Base.metadata.create_all(portal_db.engine())
    backend = "PostgreSQL" if url else "SQLite"
    print(f"backend: {backend}; {repetitions} requests per page; median latency")
    results = {}
    for size in (10, 10_000):
        public_id = build(app, size)
        client = signed_in_client(app, public_id)
        for name, path in [
            ("overview", "overview"),
            ("invoices", "invoices"),
            ("invoices, page 200", "invoices?page=200"),
            ("invoices, filtered", "invoices?status=paid&number=00"),
        ]:
            queries, ms = measure(app, client, f"/p/{public_id}/{path}", repetitions)
            results[(name, size)] = (queries, ms)
            print(f"{name:20} {size:>6} invoices: {queries} statements, {ms:6.2f} ms")
    print()
    for name in ("overview", "invoices", "invoices, page 200", "invoices, filtered"):
        (q10, ms10), (q10k, ms10k) = results[(name, 10)], results[(name, 10_000)]
        print(
            f"{name:20} statements 10 -> 10,000: {q10} -> {q10k}; "
            f"latency ratio 10,000/10: {ms10k / ms10:.2f}"
        )
    with app.app_context():
        portal_db.engine().dispose()


if __name__ == "__main__":
    main()
