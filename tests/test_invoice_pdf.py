"""Invoice PDFs, read back as text: what the customer sees, pagination, markup injection
(CVE-2023-33733), the logo, currencies and a void invoice."""

from __future__ import annotations

import datetime as dt
import secrets
from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from pypdf import PdfReader
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth

from portal.invoice_pdf import render
from portal.models import (
    Contact,
    InvoiceStatus,
    PaymentStatus,
)
from tests.factories import (
    TODAY,
    add_payment,
    make_bill_group,
    make_contact,
    make_entity,
    make_invoice,
)

# The published exploit for CVE-2023-33733: reportlab < 3.6.13 evaluated a font colour.
CVE_2023_33733 = (
    "[[[getattr(pow, Word('__globals__'))['os'].system('touch MARKER') for Word in "
    "[ orgTypeFun( 'Word', (str,), { 'mutated': 1, 'startswith': lambda self, x: 1 == 0, "
    "'__eq__': lambda self, x: self.mutated and self.mutated-1 or "
    "(setattr(self, 'mutated', self.mutated-1) or 1==1), "
    "'mutate': lambda self: {setattr(self, 'mutated', self.mutated-1)}, "
    "'__hash__': lambda self: hash(str(self)), }, ) ] ] "
    "for orgTypeFun in [type(type(1))] if Word]]] and 'red'"
)


def pages_text(pdf: bytes) -> list[str]:
    """Each page's text with whitespace runs (line wraps included) as single spaces."""
    return [" ".join(page.extract_text().split()) for page in PdfReader(BytesIO(pdf)).pages]


def flat(value: str) -> str:
    return " ".join(value.split())


def add_contact(db, group, **overrides: Any) -> Contact:
    """A billing contact in London, with no email address or phone on the invoice."""
    london = {
        "company": "Acme Ltd",
        "email": None,
        "line1": "1 Finance Way",
        "city": "London",
        "postal_code": "EC2A 4NE",
        "country": "GB",
    }
    return make_contact(db, group, **(london | overrides))


def png_logo() -> bytes:
    buffer = BytesIO()
    PILImage.new("RGB", (120, 40), (15, 118, 110)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_xobjects(pdf: bytes) -> list[Any]:
    images = []
    for page in PdfReader(BytesIO(pdf)).pages:
        xobjects = page["/Resources"].get("/XObject", {})
        images += [x for x in xobjects.values() if x.get_object()["/Subtype"] == "/Image"]
    return images


def test_invoice_reads_back_with_everything_the_customer_needs(db):
    entity = make_entity(
        db,
        name="Harbour Analytics",
        address="12 Harbour Street\nEdinburgh EH6 6QW",
        vat_number="GB987654321",
        support_email="accounts@harbour.example.com",
    )
    group = make_bill_group(
        db, entity=entity, currency="GBP", po_number="PO-4471", vat_number="GB123456789"
    )
    add_contact(db, group)
    invoice = make_invoice(
        db,
        group,
        number="HA-2026-0042",
        issue_date=dt.date(2026, 11, 11),
        period_start=dt.date(2026, 11, 1),
        period_end=dt.date(2026, 11, 30),
        lines=[("Platform licence", "1", 100000, 2000), ("Support hours", "2.5000", 1152, 2000)],
    )
    add_payment(db, invoice, 23456)

    pdf = render(invoice, today=TODAY)
    [text] = pages_text(pdf)

    for expected in [
        "Invoice HA-2026-0042",
        "Harbour Analytics",
        "12 Harbour Street Edinburgh EH6 6QW",
        "VAT GB987654321",
        "Jo Bloggs",
        "Acme Ltd",
        "United Kingdom",
        "PO-4471",
        "VAT GB123456789",
        "Platform licence",
        "Support hours",
        "2.5",
        "20%",
        "11 Nov 2026",  # issue date
        "11 Dec 2026",  # due date
        "1 Nov 2026 – 30 Nov 2026",
        "Open",
        "£1,028.80",  # subtotal
        "£205.76",  # tax
        "£1,234.56",  # total
        "BACS-20261115",
        "15 Nov 2026",
        "£234.56",  # paid
        "£1,000.00",  # balance due
        "accounts@harbour.example.com",
        "Page 1 of 1",
    ]:
        assert expected in text, expected
    assert "2.5000" not in text
    assert PdfReader(BytesIO(pdf)).metadata.title == "Invoice HA-2026-0042"


def test_the_same_invoice_gives_the_same_bytes(db):
    invoice = make_invoice(db)
    assert render(invoice, today=TODAY) == render(invoice, today=TODAY)


def test_status_is_what_the_customer_sees_on_the_day(db):
    invoice = make_invoice(db, issue_date=dt.date(2026, 9, 1))  # due 1 October
    assert "Overdue" in pages_text(render(invoice, today=TODAY))[0]
    assert "Overdue" not in pages_text(render(invoice, today=dt.date(2026, 9, 15)))[0]


def test_without_a_billing_contact_the_account_is_billed(db):
    group = make_bill_group(db)
    invoice = make_invoice(db, group)
    assert group.account.name in pages_text(render(invoice, today=TODAY))[0]


def test_a_long_invoice_repeats_the_header_and_numbers_every_page(db):
    lines = [(f"Usage item {i:03d}", "1", 100, 0) for i in range(1, 501)]
    group = make_bill_group(db, currency="GBP")
    invoice = make_invoice(db, group, lines=lines)

    pages = pages_text(render(invoice, today=TODAY))

    count = len(pages)
    assert count > 1
    for number, text in enumerate(pages, start=1):
        assert "Description" in text and "Unit price" in text
        assert f"Page {number} of {count}" in text
        assert invoice.number in text
    everything = " ".join(pages)
    assert all(f"Usage item {i:03d}" in everything for i in range(1, 501))
    assert "Balance due" in pages[-1] and "£500.00" in pages[-1]


def test_a_long_payment_history_goes_below_the_totals(db):
    invoice = make_invoice(db, lines=[("Licence", "1", 100000, 0)])
    for day in range(1, 16):
        add_payment(
            db,
            invoice,
            1000,
            reference=f"INSTALMENT-{day:02d}",
            received_at=dt.datetime(2026, 10, day, 9, tzinfo=dt.UTC),
            status=PaymentStatus.REFUNDED if day == 15 else PaymentStatus.SUCCEEDED,
        )

    text = " ".join(pages_text(render(invoice, today=TODAY)))

    assert all(f"INSTALMENT-{day:02d}" in text for day in range(1, 16))
    assert "INSTALMENT-15 (refunded)" in text
    assert text.index("Balance due") < text.index("INSTALMENT-01")


def text_runs(pdf: bytes) -> list[tuple[str, float, float]]:
    """(text, x, font size) of every run of text on the first page, as drawn."""
    runs: list[tuple[str, float, float]] = []

    def visit(text: str, _cm: Any, tm: Any, _font: Any, size: float) -> None:
        if text.strip():
            runs.append((text.strip(), tm[4], size * tm[0]))

    PdfReader(BytesIO(pdf)).pages[0].extract_text(visitor_text=visit)
    return runs


def test_every_text_stays_inside_its_column_whatever_its_length(db):
    # Short texts are drawn as plain strings and long ones wrap: either way no text may
    # run into the next column (a plain string would, unwrapped).
    long = "Consulting: migration of the general ledger and three subsidiaries' books " * 3
    group = make_bill_group(db, po_number="PO-" + "7" * 60)
    add_contact(db, group, company="The Very Long Name Holdings International Group plc " * 2)
    invoice = make_invoice(db, group, lines=[(long, "1", 100, 0), ("Support", "1", 100, 0)])
    add_payment(db, invoice, 50, reference="REMITTANCE " * 9)  # 99 of its 100 characters

    runs = text_runs(render(invoice, today=TODAY))
    qty_x = next(x for text, x, _size in runs if text == "Qty")
    described = [(t, x, size) for t, x, size in runs if t.split()[0] in long.split()]
    assert len(described) >= 3  # wrapped onto several lines
    for text, x, size in described:
        assert x + stringWidth(text, "DejaVuSans", size) < qty_x, text
    page_right = A4[0] - 18 * mm
    for text, x, size in runs:
        font = "DejaVuSans-Bold" if text.startswith(("Invoice ", "Balance")) else "DejaVuSans"
        assert x + stringWidth(text, font, size) <= page_right + 1, text
    assert "Support" in [text for text, _x, _size in runs]


def test_markup_in_customer_data_is_printed_not_parsed(db):
    marker = Path(f"/tmp/pwned-{secrets.token_hex(8)}")
    exploit = f'<font color="{CVE_2023_33733.replace("MARKER", str(marker))}">exploit</font>'
    font = '<font color="red">x</font>'
    img = '<img src="/etc/passwd"/>'
    entity = make_entity(db, address=f"{img}\n{exploit}")
    group = make_bill_group(db, entity=entity, po_number="<b>PO</b> & co")
    add_contact(db, group, name=f"{font} {img}", company="<para>Acme</para>")
    invoice = make_invoice(
        db, group, lines=[(exploit, "1", 100, 0), (font, "1", 100, 0), (img, "1", 100, 0)]
    )
    add_payment(db, invoice, 50, reference="<br/><u>ref</u>")

    text = " ".join(pages_text(render(invoice, today=TODAY)))

    for literal in [exploit, font, img, "<b>PO</b> & co", "<para>Acme</para>", "<u>ref</u>"]:
        assert flat(literal) in text, literal
    assert not marker.exists()


def test_the_logo_is_embedded_when_there_is_one(db):
    with_logo = make_entity(db, logo=png_logo(), logo_type="image/png")
    invoice = make_invoice(db, make_bill_group(db, entity=with_logo))
    assert len(image_xobjects(render(invoice, today=TODAY))) >= 1

    without = make_invoice(db)
    pdf = render(without, today=TODAY)
    assert image_xobjects(pdf) == []
    assert without.number in pages_text(pdf)[0]


def test_yen_have_no_decimals(db):
    group = make_bill_group(db, currency="JPY")
    invoice = make_invoice(db, group, lines=[("Licence", "3", 12000, 1000)])
    text = pages_text(render(invoice, today=TODAY))[0]
    for expected in ["JP¥12,000", "JP¥36,000", "JP¥3,600", "JP¥39,600", "10%"]:
        assert expected in text, expected
    assert "JP¥39,600.00" not in text


def test_euros_in_english_and_in_german(db):
    group = make_bill_group(db, currency="EUR")
    invoice = make_invoice(
        db, group, lines=[("Licence", "1", 123456, 1900), ("Books", "2", 1000, 550)]
    )
    english = pages_text(render(invoice, today=TODAY))[0]
    for expected in ["€1,234.56", "€1,254.56", "€235.66", "€1,490.22", "19%", "5.5%"]:
        assert expected in english, expected

    german = pages_text(render(invoice, today=TODAY, locale="de_DE"))[0]
    assert "1.490,22" in german and "€" in german


def test_a_void_invoice_says_so_and_owes_nothing(db):
    group = make_bill_group(db, currency="EUR")
    invoice = make_invoice(
        db, group, status=InvoiceStatus.VOID, lines=[("Licence", "1", 10000, 2000)]
    )
    add_payment(db, invoice, 5000)  # paid in part, then voided: still nothing owed

    text = pages_text(render(invoice, today=TODAY))[0]

    assert "Void" in text
    assert "€120.00" in text and "€50.00" in text
    assert "€0.00" in text
    assert "€70.00" not in text
