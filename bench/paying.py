#!/usr/bin/env python3
"""Review-to-confirmation latency: the review page's POST (claim, the sandbox charge, the
applied payment, the receipt queued) and the outcome page it redirects to, against the
overview page of the same signed-in customer, in the same run, in-process (the Flask test
client, no HTTP server: what is compared is the app's own work).

    .venv/bin/python bench/paying.py [rounds]          # SQLite in a temporary folder
    .venv/bin/python bench/paying.py 200 --database-url postgresql://postgres@127.0.0.1/x

Each round makes a fresh open invoice, opens the pay form and posts it (not timed), then
times POST /pay/confirm + GET of the outcome page. Prints p50 and p90 of each, in
milliseconds, and the confirmation's p50 as a multiple of the overview's. No target is
asserted: the figures are for reading (and for comparing two runs).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from portal import db as portal_db  # noqa: E402
from portal import sessions, signin  # noqa: E402
from portal.access import add_rule  # noqa: E402
from portal.app import create_app  # noqa: E402
from portal.db import Base  # noqa: E402
from tests.factories import make_bill_group, make_invoice, make_payment_method  # noqa: E402

ADDRESS = "bench@acme.com"
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
KEY = re.compile(r'name="key" type="hidden" value="([^"]+)"')
AMOUNT = re.compile(r'name="amount_minor" type="hidden" value="([^"]+)"')


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=100)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-paying-")
    url = args.database_url or f"sqlite:///{folder}/paying.db"
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "bench-paying-" + "k" * 30,
            "DATABASE_URL": url,
            "PORTAL_BASE_URL": "http://127.0.0.1",
            "PAYMENT_GATEWAY": "sandbox",
            "MAIL_TRANSPORT": "console",
        }
    )
    with app.test_request_context("/", headers={"User-Agent": "bench/paying.py"}):
        engine = portal_db.engine()
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        db = portal_db.session()
        group = make_bill_group(db, name="Bench paying")
        add_rule(db, group, "acme.com", created_by="bench")
        make_payment_method(db, group, gateway_token="sandbox_pm_bench", is_default=True)
        for _ in range(20):  # an overview with something on it
            make_invoice(db, group)
        db.commit()
        public_id, group_id = group.public_id, group.id
        sid, _row = sessions.create(db, group, ADDRESS)
        db.commit()

    client = app.test_client()
    with client.session_transaction() as flask_session:
        flask_session.update(
            {"_user_id": sessions.PREFIX + sid, "_fresh": True, "nonce": signin.new_nonce()}
        )
    base = f"/p/{public_id}"
    overview = client.get(f"{base}/overview")
    if overview.status_code != 200:
        raise SystemExit(
            f"the signed-in session does not open the overview: {overview.status_code}"
        )

    baseline: list[float] = []
    confirmation: list[float] = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        assert client.get(f"{base}/overview").status_code == 200
        baseline.append(time.perf_counter() - started)

        with app.app_context():
            db = portal_db.session()
            invoice = make_invoice(db, db.get(type(group), group_id))
            db.commit()
            invoice_id = invoice.id
        form = client.get(f"{base}/pay?invoice={invoice_id}")
        method = re.search(
            r'<input checked id="method-\d+" name="method" type="radio" value="(\d+)"', form.text
        )
        assert method, "no default method on the pay form"
        posted = client.post(
            f"{base}/pay",
            data={
                "csrf_token": CSRF.search(form.text)[1],
                "currency": "EUR",
                "method": method[1],
                "invoice": str(invoice_id),
            },
        )
        review = client.get(posted.headers["Location"])
        data = {
            "csrf_token": CSRF.search(review.text)[1],
            "key": KEY.search(review.text)[1],
            "amount_minor": AMOUNT.search(review.text)[1],
        }
        started = time.perf_counter()
        confirmed = client.post(f"{base}/pay/confirm", data=data)
        outcome = client.get(confirmed.headers["Location"])
        confirmation.append(time.perf_counter() - started)
        assert "Payment received" in outcome.text, outcome.text[:500]

    with app.app_context():
        charged = portal_db.session().execute(text("SELECT count(*) FROM sandbox_charges")).scalar()
    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"paying bench: {args.rounds} rounds on {backend}, {charged} charges")
    rows = [("overview (baseline)", baseline), ("confirm -> outcome page", confirmation)]
    print(f"{'':28} {'p50 ms':>8} {'p90 ms':>8}")
    for name, values in rows:
        print(
            f"{name:28} {percentile(values, 0.5) * 1000:8.1f} {percentile(values, 0.9) * 1000:8.1f}"
        )
    ratio = statistics.median(confirmation) / statistics.median(baseline)
    print(f"review-to-confirmation p50 is {ratio:.1f}x the overview's p50")


if __name__ == "__main__":
    main()
