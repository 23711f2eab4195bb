"""The invoice pages: the list (filter, search, paginate, CSV), the detail page and the PDF."""

from __future__ import annotations

import datetime as dt
import html
import io
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from pypdf import PdfReader
from sqlalchemy.orm import Session

from portal.models import (
    BillGroup,
    InvoiceStatus,
)
from tests.conftest import sign_in, statements
from tests.factories import TODAY, add_payment, make_invoice, make_payment_method
from tests.portal.pages_helpers import (
    ADDRESS,
    csv_rows,
    field_errors,
    listed,
    portal_group,
    url,
)

pytestmark = pytest.mark.usefixtures("clock")  # midday on TODAY, whatever the wall clock says


# --- invoice list -------------------------------------------------------------------------


def status_mix(db: Session, group: BillGroup) -> None:
    day = dt.timedelta(days=1)
    make_invoice(db, group, number="OPEN-100", issue_date=TODAY - 10 * day)
    # Due today: still open until the (injected) day is over.
    make_invoice(db, group, number="OPEN-101", issue_date=TODAY - 30 * day, due_date=TODAY)
    make_invoice(db, group, number="LATE-200", issue_date=TODAY - 60 * day, due_date=TODAY - day)
    make_invoice(db, group, number="PAID-300", status=InvoiceStatus.PAID)
    make_invoice(db, group, number="VOID-400", status=InvoiceStatus.VOID)
    make_invoice(db, group, number="DRAFT-500", status=InvoiceStatus.DRAFT)
    db.commit()


STATUS_FILTERS = {
    "": {"OPEN-100", "OPEN-101", "LATE-200", "PAID-300", "VOID-400"},
    "open": {"OPEN-100", "OPEN-101"},
    "overdue": {"LATE-200"},
    "paid": {"PAID-300"},
    "void": {"VOID-400"},
}


def test_status_filter(db, group, customer):
    status_mix(db, group)
    for status, numbers in STATUS_FILTERS.items():
        response = customer.get(url(group, f"/invoices?status={status}"))
        assert response.status_code == 200, status
        assert set(listed(response.text)) == numbers, status
        exported = customer.get(url(group, f"/invoices.csv?status={status}"), buffered=True)
        rows = csv_rows(exported.text)[1:]
        assert {row[0] for row in rows} == numbers, status
        if status:
            assert {row[3] for row in rows} == {status}


def test_overdue_follows_the_injected_clock_not_the_wall_clock(app, db, group, client, smtp, clock):
    status_mix(db, group)
    clock.now = dt.datetime.combine(TODAY, dt.time(23, 50), tzinfo=dt.UTC)
    sign_in(client, app, smtp, group.public_id, ADDRESS)
    assert set(listed(client.get(url(group, "/invoices?status=overdue")).text)) == {"LATE-200"}

    clock.now += dt.timedelta(minutes=20)  # past midnight: OPEN-101 was due yesterday
    assert set(listed(client.get(url(group, "/invoices?status=overdue")).text)) == {
        "LATE-200",
        "OPEN-101",
    }
    assert listed(client.get(url(group, "/invoices?status=open")).text) == ["OPEN-100"]
    overview = client.get(url(group, "/overview")).text
    assert "2 invoices are overdue" in overview


def test_date_range_is_inclusive(db, group, customer):
    for day in (1, 2, 3, 4, 5):
        make_invoice(db, group, number=f"NOV-{day}", issue_date=dt.date(2026, 11, day))
    db.commit()
    page = customer.get(url(group, "/invoices?from=2026-11-02&to=2026-11-04")).text
    assert listed(page) == ["NOV-4", "NOV-3", "NOV-2"]
    assert listed(customer.get(url(group, "/invoices?from=2026-11-04")).text) == ["NOV-5", "NOV-4"]
    assert listed(customer.get(url(group, "/invoices?to=2026-11-01")).text) == ["NOV-1"]
    same_day = customer.get(url(group, "/invoices?from=2026-11-03&to=2026-11-03")).text
    assert listed(same_day) == ["NOV-3"]
    exported = csv_rows(
        customer.get(url(group, "/invoices.csv?from=2026-11-02&to=2026-11-04"), buffered=True).text
    )
    assert [row[0] for row in exported[1:]] == ["NOV-4", "NOV-3", "NOV-2"]


NUMBER_SEARCHES = {
    "inv-ab": {"INV-ABC-1", "inv-abd-2"},
    "ABC": {"INV-ABC-1"},
    "%": {"PO%50"},  # not "any text"
    "_": {"X_1"},  # not "any character"
    "o%5": {"PO%50"},
    "  x_1  ": {"X_1"},
    "nothing": set(),
}


def test_number_search_is_a_literal_case_insensitive_substring(db, group, customer):
    for number in ("INV-ABC-1", "inv-abd-2", "PO%50", "PO550", "X_1", "XY1"):
        make_invoice(db, group, number=number)
    db.commit()
    for search, numbers in NUMBER_SEARCHES.items():
        response = customer.get(url(group, "/invoices"), query_string={"number": search})
        assert response.status_code == 200, search
        assert set(listed(response.text)) == numbers, search
        exported = customer.get(
            url(group, "/invoices.csv"), query_string={"number": search}, buffered=True
        )
        assert {row[0] for row in csv_rows(exported.text)[1:]} == numbers, search


def test_pagination(db, group, customer):
    for index in range(30):
        make_invoice(db, group, number=f"N-{index:02d}", issue_date=TODAY - dt.timedelta(index))
    db.commit()
    newest_first = [f"N-{index:02d}" for index in range(30)]

    first = customer.get(url(group, "/invoices")).text
    assert listed(first) == newest_first[:25]
    assert "Showing 1–25 of 30 invoices." in first and "Page 1 of 2" in first
    assert 'rel="next"' in first and 'rel="prev"' not in first

    second = customer.get(url(group, "/invoices?page=2")).text
    assert listed(second) == newest_first[25:]
    assert "Showing 26–30 of 30 invoices." in second and "Page 2 of 2" in second

    for beyond in ("3", "999999999999999999999", "9" * 5000):
        response = customer.get(url(group, f"/invoices?page={beyond}"))
        assert response.status_code == 200
        assert listed(response.text) == newest_first[25:], beyond
    for junk in ("abc", "-1", "0", "", "1.5", "²"):
        response = customer.get(url(group, "/invoices"), query_string={"page": junk})
        assert response.status_code == 200
        assert listed(response.text) == newest_first[:25], junk

    # Page links keep the filters.
    filtered = customer.get(url(group, "/invoices?number=n-&status=open")).text
    assert re.search(r'href="[^"]*page=2[^"]*"', filtered)
    next_link = html.unescape(re.search(r'href="([^"]*)" rel="next"', filtered)[1])
    assert parse_qs(urlsplit(next_link).query) == {
        "page": ["2"],
        "status": ["open"],
        "number": ["n-"],
    }


BAD_DATES = [
    ("from=2026-13-01", "from", "Not a valid date value."),
    ("from=yesterday", "from", "Not a valid date value."),
    ("to=2026-02-30", "to", "Not a valid date value."),
    ("from=2026-11-05&to=2026-11-04", "to", "The end date must be on or after the start date."),
]


def test_bad_dates_are_a_400_with_the_message_by_the_field(db, group, customer):
    make_invoice(db, group, number="INV-1", issue_date=dt.date(2026, 11, 4))
    db.commit()
    for query, field, message in BAD_DATES:
        response = customer.get(url(group, f"/invoices?{query}"))
        assert response.status_code == 400, query
        assert field_errors(response.text, field) == [message], query
        other = "to" if field == "from" else "from"
        assert field_errors(response.text, other) == [], query
        assert listed(response.text) == [], query
        exported = customer.get(url(group, f"/invoices.csv?{query}"), buffered=True)
        assert exported.status_code == 400, query


def test_csv_export(db, group, customer):
    day = dt.timedelta(days=1)
    part_paid = make_invoice(
        db,
        group,
        number="INV-1",
        issue_date=dt.date(2026, 10, 1),
        due_date=dt.date(2026, 10, 31),
        lines=[("Licences", "3", 4115, 2000)],  # 123.45 + 24.69 tax
    )
    add_payment(db, part_paid, 4815, reference="BACS-1")
    make_invoice(db, group, number="INV-2", status=InvoiceStatus.PAID, issue_date=TODAY - day)
    formulas = ['=HYPERLINK("https://evil.test","x")', "+1+2", "-3", "@SUM(A1)"]
    for number in formulas:
        make_invoice(db, group, number=number, issue_date=TODAY - 5 * day)
    db.commit()

    response = customer.get(url(group, "/invoices.csv"), buffered=True)
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="invoices.csv"'
    rows = csv_rows(response.text)
    assert rows[0] == ["Invoice", "Issued", "Due", "Status", "Currency", "Total", "Paid", "Balance"]
    by_number = {row[0]: row for row in rows[1:]}
    assert by_number["INV-1"] == [
        "INV-1",
        "2026-10-01",
        "2026-10-31",
        "overdue",
        "EUR",
        "148.14",
        "48.15",
        "99.99",
    ]
    assert by_number["INV-2"][3:] == ["paid", "EUR", "120.00", "120.00", "0.00"]
    for number in formulas:
        assert by_number["'" + number][5:] == ["120.00", "0.00", "120.00"]
    assert all(not row[0].startswith(("=", "+", "-", "@")) for row in rows[1:])
    assert len(rows) == 1 + 2 + len(formulas)

    # The export honours the filters.
    overdue = csv_rows(customer.get(url(group, "/invoices.csv?status=overdue"), buffered=True).text)
    assert [row[0] for row in overdue] == ["Invoice", "INV-1"]
    empty = csv_rows(customer.get(url(group, "/invoices.csv?number=zzz"), buffered=True).text)
    assert empty == [rows[0]]


def test_the_csv_download_gives_its_database_connection_back(app, db, group, customer):
    """Read to the end or dropped half-way, the stream holds no connection afterwards
    (a leaked one sits "idle in transaction", holding locks, until garbage collection)."""
    for index in range(3):
        make_invoice(db, group, number=f"INV-{index}")
    db.commit()
    db.close()
    pool = app.extensions["portal.db"].kw["bind"].pool

    whole = customer.get(url(group, "/invoices.csv"), buffered=True)
    assert len(csv_rows(whole.text)) == 4
    assert pool.checkedout() == 0

    dropped = customer.get(url(group, "/invoices.csv"))
    chunks = iter(dropped.response)
    assert next(chunks).startswith(b"Invoice,")
    next(chunks)  # the first invoice: the query is running
    dropped.close()  # the browser went away
    assert pool.checkedout() == 0


def test_csv_amounts_in_yen_have_no_decimals(db, customer, app, client, smtp):
    yen = portal_group(db, name="Acme Japan", currency="JPY")
    make_invoice(db, yen, number="JP-1", lines=[("Seats", "3", 1500, 1000)])  # 4500 + 450
    db.commit()
    sign_in(client, app, smtp, yen.public_id, ADDRESS)
    rows = csv_rows(client.get(url(yen, "/invoices.csv"), buffered=True).text)
    assert rows[1][4:] == ["JPY", "4950", "0", "4950"]
    assert "¥4,950" in client.get(url(yen, "/invoices")).text


def test_list_and_overview_use_a_fixed_number_of_statements(app, db, group, customer):
    make_payment_method(db, group, is_default=True)
    db.commit()
    customer.get(url(group, "/overview"))  # anything a first request does once

    def count(path: str) -> int:
        with statements(app) as seen:
            response = customer.get(url(group, path))
        assert response.status_code == 200
        return len(seen)

    counts = []
    # 3 (fewer rows than the overview's five recent), 10 (a page of its own), 300.
    for total, batch in ((3, 3), (10, 7), (300, 290)):
        for _ in range(batch):
            make_invoice(db, group, issue_date=TODAY - dt.timedelta(days=2))
        db.commit()
        counts.append({path: count(path) for path in ("/invoices", "/overview")})
        shown = customer.get(url(group, "/invoices")).text
        assert f"of {total} invoices." in shown

    assert counts[0] == counts[1] == counts[2]
    # The session with its group, seller, rules and default payment method in one; then
    # the list's count and page, or the overview's totals and recent invoices; and the
    # header's bill-group switcher: the seller's other groups that admit the address,
    # one small indexed statement, run only where a page draws the header (not for a
    # PDF or CSV), and not cached, so that a revoked rule leaves the list at once.
    assert counts[0] == {"/invoices": 4, "/overview": 4}


# --- invoice detail and PDF -----------------------------------------------------------------


def test_invoice_detail_shows_lines_totals_and_payments(db, group, customer):
    invoice = make_invoice(
        db,
        group,
        number="INV-2026-0042",
        issue_date=dt.date(2026, 11, 1),
        lines=[("Analytics Pro seats", "3", 4900, 2000), ("Consulting hours", "2.5", 12000, 700)],
        po_number="PO-778",
    )
    add_payment(db, invoice, 10000, reference="BACS-20261115")
    db.commit()
    # 147.00 + 29.40 tax; 300.00 + 21.00 tax: 447.00 + 50.40 = 497.40, 100.00 paid.
    page = customer.get(url(group, f"/invoices/{invoice.id}")).text

    assert "Invoice INV-2026-0042" in page and "badge-open" in page
    assert "Analytics Pro seats" in page and "Consulting hours" in page
    assert ">2.5<" in page and "€49.00" in page and "€120.00" in page and "7%" in page
    totals = dict(
        re.findall(
            r"<dt>([^<]+)</dt><dd>([^<]+)</dd>", re.search(r'class="totals".*?</dl>', page, re.S)[0]
        )
    )
    assert totals == {
        "Subtotal": "€447.00",
        "Tax": "€50.40",
        "Total": "€497.40",
        "Paid": "€100.00",
        "Balance due": "€397.40",
    }
    assert "BACS-20261115" in page and "15 Nov 2026" in page
    assert "PO-778" in page
    assert f'href="{url(group, f"/invoices/{invoice.id}.pdf")}"' in page


def test_invoice_without_payments_says_so(db, group, customer):
    invoice = make_invoice(db, group, number="INV-9")
    db.commit()
    assert "No payments yet." in customer.get(url(group, f"/invoices/{invoice.id}")).text
    assert customer.get(url(group, "/invoices/999999")).status_code == 404


# The number, and the Content-Disposition: an ASCII fallback, and the real name in UTF-8
# (RFC 6266) when it differs.
PDF_NAMES = [
    ("INV-2026-0042", 'attachment; filename="INV-2026-0042.pdf"'),
    (
        'A/B\\"C; x=y\r\n.pdf',
        'attachment; filename="A_B__C__x_y__.pdf.pdf"; '
        "filename*=UTF-8''A%2FB%5C%22C%3B%20x%3Dy%0D%0A.pdf.pdf",
    ),
    (
        "Rechnung Nº 5",
        "attachment; filename=\"Rechnung_N__5.pdf\"; filename*=UTF-8''Rechnung%20N%C2%BA%205.pdf",
    ),
    (
        "請求書-7",
        "attachment; filename=\"___-7.pdf\"; filename*=UTF-8''%E8%AB%8B%E6%B1%82%E6%9B%B8-7.pdf",
    ),
]


def test_pdf_download(db, group, customer):
    for number, expected in PDF_NAMES:
        invoice = make_invoice(db, group, number=number)
        db.commit()
        response = customer.get(url(group, f"/invoices/{invoice.id}.pdf"))
        assert response.status_code == 200, number
        assert response.headers["Content-Type"] == "application/pdf"
        disposition = response.headers["Content-Disposition"]
        assert disposition == expected, number
        disposition.encode("ascii")  # a WSGI server sends headers as Latin-1: keep to ASCII
        assert response.data.startswith(b"%PDF"), number
        if number.isascii() or "Nº" in number:  # (the PDF font has no CJK glyphs)
            pages = PdfReader(io.BytesIO(response.data)).pages
            text = " ".join(" ".join(page.extract_text() for page in pages).split())
            assert " ".join(number.split()) in text, number
