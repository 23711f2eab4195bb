#!/usr/bin/env python3
"""Throughput of `flask import`: a JSON Lines file of N invoices (1-3 lines each) over
1,000 bill groups, imported into a fresh SQLite database, and into a throwaway
PostgreSQL database too when PORTAL_BENCH_DATABASE_URL names a server. Then the same
file again (every record unchanged), and an export.

    .venv/bin/python bench/import.py [--invoices 100000] [--bill-groups 1000]
    PORTAL_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python bench/import.py

Prints figures only. Each import runs in a process of its own, so that its peak RSS is
its own (the file is written, not held, by the parent).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The bench reuses the test suite's config.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import make_url, text  # noqa: E402

PRODUCTS = 20
ACCOUNTS_PER = 10  # bill groups per account


def build(path: Path, invoices: int, groups: int) -> dict[str, int]:
    """Write the file; returns the number of lines per type."""
    rng = random.Random(42)
    counts: dict[str, int] = {}

    with path.open("w", encoding="utf-8") as out:

        def put(kind: str, external_id: str, data: dict) -> None:
            out.write(json.dumps({"type": kind, "external_id": external_id, "data": data}))
            out.write("\n")
            counts[kind] = counts.get(kind, 0) + 1

        put("entity", "ent-1", {"name": "Bench Seller", "support_email": "billing@bench.example"})
        for p in range(PRODUCTS):
            put("product", f"prod-{p}", {"entity": "ent-1", "name": f"Product {p}"})
        for a in range((groups + ACCOUNTS_PER - 1) // ACCOUNTS_PER):
            put("account", f"acc-{a}", {"name": f"Customer {a}"})
        for g in range(groups):
            put(
                "bill_group",
                f"bg-{g}",
                {
                    "account": f"acc-{g // ACCOUNTS_PER}",
                    "entity": "ent-1",
                    "name": f"Bill group {g}",
                    "currency": "EUR" if g % 3 else "GBP",
                    "billing_frequency": "monthly",
                    "contract_start": "2024-01-01",
                },
            )
        for i in range(invoices):
            lines = []
            for n in range(rng.randint(1, 3)):
                quantity = rng.randint(1, 20)
                unit = rng.randint(100, 50_000)
                amount = quantity * unit
                line = {
                    "description": f"Service {n + 1}",
                    "quantity": str(quantity),
                    "unit_price_minor": unit,
                    "amount_minor": amount,
                    "tax_rate_bp": 2000,
                    "tax_minor": amount // 5,
                }
                if n == 0:
                    line["product"] = f"prod-{rng.randrange(PRODUCTS)}"
                lines.append(line)
            total = sum(line["amount_minor"] + line["tax_minor"] for line in lines)
            paid = rng.random() < 0.7
            day = 1 + i % 28
            put(
                "invoice",
                f"inv-{i}",
                {
                    "bill_group": f"bg-{rng.randrange(groups)}",
                    "number": f"INV-{i:07d}",
                    "status": "paid" if paid else "open",
                    "issue_date": f"2026-{1 + i % 12:02d}-{day:02d}",
                    "due_date": f"2026-{1 + i % 12:02d}-{day:02d}",
                    "amount_paid_minor": total if paid else 0,
                    "lines": lines,
                },
            )
    return counts


def child(url: str, path: str) -> None:
    """In a process of its own: create the schema, import, import again, export."""
    from portal import db as portal_db
    from portal.app import create_app
    from portal.db import Base
    from portal.sync import importer
    from tests.conftest import TEST_CONFIG

    app = create_app({**TEST_CONFIG, "DATABASE_URL": url})
    results: dict[str, float] = {}
    with app.app_context():
        Base.metadata.create_all(portal_db.engine())
        session = portal_db.session()
        results["rss_before_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        for run in ("import", "reimport"):
            start = time.perf_counter()
            with open(path, "rb") as stream:
                summary = importer.import_records(session, stream, source=path)
            results[f"{run}_seconds"] = time.perf_counter() - start
            results[f"{run}_records"] = summary.records
            results[f"{run}_rejected"] = summary.rejected
            results[f"{run}_created"] = summary.total("created")
            results[f"{run}_unchanged"] = summary.total("unchanged")
            results[f"{run}_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        with open(os.devnull, "w", encoding="utf-8") as sink:
            written = importer.export(session, sink)
        results["export_seconds"] = time.perf_counter() - start
        results["export_records"] = sum(written.values())
        results["export_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        portal_db.engine().dispose()
    print(json.dumps(results))


def measure(name: str, url: str, path: Path, invoices: int) -> None:
    done = subprocess.run(
        [sys.executable, __file__, "--child", url, str(path)], capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"{name}: the import failed:\n{done.stderr}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = r["import_seconds"]
    print(
        f"{name:10} import:   {r['import_records']:,} records ({r['import_rejected']} rejected) "
        f"in {seconds:.1f} s: {r['import_records'] / seconds:,.0f} records/s, "
        f"{invoices / seconds:,.0f} invoices/s; peak RSS {r['import_rss_mb']:.0f} MB "
        f"(before the import {r['rss_before_mb']:.0f} MB)"
    )
    again = r["reimport_seconds"]
    print(
        f"{'':10} again:    {r['reimport_unchanged']:,} unchanged, {r['reimport_created']} "
        f"created in {again:.1f} s: {r['reimport_records'] / again:,.0f} records/s; "
        f"peak RSS {r['reimport_rss_mb']:.0f} MB"
    )
    print(
        f"{'':10} export:   {r['export_records']:,} records in {r['export_seconds']:.1f} s: "
        f"{r['export_records'] / r['export_seconds']:,.0f} records/s; "
        f"peak RSS {r['export_rss_mb']:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--bill-groups", type=int, default=1000)
    parser.add_argument("--child", nargs=2, metavar=("URL", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    folder = Path(tempfile.mkdtemp())
    path = folder / "invoices.jsonl"
    start = time.perf_counter()
    counts = build(path, args.invoices, args.bill_groups)
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in counts.items())
    print(
        f"file: {sum(counts.values()):,} records ({kinds}), "
        f"{path.stat().st_size / 1e6:.1f} MB, written in {time.perf_counter() - start:.1f} s"
    )
    measure("SQLite", f"sqlite:///{folder / 'bench.db'}", path, args.invoices)

    server_url = os.environ.get("PORTAL_BENCH_DATABASE_URL")
    if server_url:
        from portal.db import make_engine

        name = f"portal_bench_{secrets.token_hex(4)}"
        server = make_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
        with server.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
            measure("PostgreSQL", url, path, args.invoices)
        finally:
            with server.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            server.dispose()
    path.unlink()
    for leftover in folder.iterdir():
        leftover.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
