"""Every PDF (invoice, receipt, statement) in an embedded Unicode font: non-Latin names,
CJK invoice numbers and typographic dashes read back intact, and the fonts used are the
embedded DejaVu subsets (plus a CID font for CJK), never Helvetica."""

from __future__ import annotations

import datetime as dt
from io import BytesIO

import pytest
from pypdf import PdfReader
from reportlab.platypus import Paragraph

from portal import pdf_fonts, receipts, statement, statement_pdf
from portal.invoice_pdf import render, ruled_table
from tests.factories import TODAY, add_payment, make_bill_group, make_entity, make_invoice

NUMBER = "発票-7"
COMPANY = "Łódź Sp. z o.o."
GREEK = "Ωμέγα"
CYRILLIC = "Москва"
DASH = "—"


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(BytesIO(pdf)).pages)


def base_fonts(pdf: bytes) -> set[str]:
    fonts: set[str] = set()
    for page in PdfReader(BytesIO(pdf)).pages:
        for font in page["/Resources"]["/Font"].values():
            fonts.add(str(font.get_object()["/BaseFont"]))
    return fonts


def assert_unicode_fonts(pdf: bytes) -> None:
    fonts = base_fonts(pdf)
    # A subset is named "ABCDEF+DejaVuSans": embedded, only the glyphs used.
    assert any(f.endswith("+DejaVuSans") and f[1:7].isupper() for f in fonts), fonts
    assert not any("Helvetica" in f for f in fonts), fonts
    # 発票 (no kana beside it) in the Chinese CID font: no glyph is left to .notdef.
    assert f"/{pdf_fonts.CHINESE}" in fonts, fonts


def seller_and_group(db):
    entity = make_entity(db, name=f"{GREEK} {DASH} {CYRILLIC}", legal_name=f"{COMPANY}")
    return make_bill_group(db, entity=entity, name=f"{CYRILLIC} {DASH} {GREEK}")


def assert_all_there(text: str) -> None:
    for expected in (NUMBER, COMPANY, GREEK, CYRILLIC, DASH):
        assert expected in text, (expected, text)


@pytest.fixture
def invoice(db):
    group = seller_and_group(db)
    return make_invoice(
        db,
        group,
        number=NUMBER,
        lines=[(f"{COMPANY} {DASH} {GREEK} {CYRILLIC} はい", "1", 10000, 0)],
    )


def test_an_invoice_keeps_every_glyph(db, invoice):
    pdf = render(invoice, today=TODAY)
    assert_all_there(text_of(pdf))
    assert_unicode_fonts(pdf)
    # The footer, drawn run by run on the canvas, not by a Paragraph.
    assert f"Invoice {NUMBER} · Questions?" in " ".join(text_of(pdf).split())


def test_a_plain_table_string_dejavu_lacks_becomes_a_paragraph():
    table = ruled_table([["Head", "Amount"], ["発票-7", "1"], ["INV-1", "2"]], [50, 20])
    cells = table._cellvalues  # what the Table will draw
    assert isinstance(cells[1][0], Paragraph) and cells[1][1] == "1"
    assert cells[2][0] == "INV-1"  # plain strings stay strings: the fast path


def test_a_receipt_keeps_every_glyph(db, invoice):
    payment = add_payment(db, invoice, 5000, reference=f"{NUMBER} {DASH} はい")
    pdf = receipts.render_pdf(payment)
    assert_all_there(text_of(pdf))
    assert_unicode_fonts(pdf)


def test_a_statement_keeps_every_glyph(db, invoice):
    found = statement.statement(db, invoice.bill_group, TODAY - dt.timedelta(days=60), TODAY)
    pdf = statement_pdf.render(found)
    text = text_of(pdf)
    for expected in (NUMBER, COMPANY, GREEK, CYRILLIC, DASH):
        assert expected in text, (expected, text)
    assert_unicode_fonts(pdf)


@pytest.mark.parametrize(
    ("text", "font"),
    [
        ("請求書 はい", pdf_fonts.JAPANESE),  # kana: the Han characters are Japanese too
        ("发票-8", pdf_fonts.CHINESE),
        ("청구서 7", pdf_fonts.KOREAN),
        ("漢字 한국", pdf_fonts.KOREAN),
    ],
)
def test_cjk_runs_fall_back_by_script(text, font):
    cjk = [part for part, cid in pdf_fonts.runs(text) if cid is not None]
    assert cjk
    assert {cid for _part, cid in pdf_fonts.runs(text) if cid is not None} == {font}
    assert "".join(part for part, _cid in pdf_fonts.runs(text)) == text


def test_text_dejavu_has_needs_no_fallback():
    for text in (COMPANY, GREEK, CYRILLIC, DASH, "£ € ¥ ₩ – ·"):
        assert not pdf_fonts.needs_fallback(text)
        assert pdf_fonts.runs(text) == [(text, None)]


def test_markup_in_a_cjk_run_is_escaped():
    assert pdf_fonts.markup('発<b>"&') == (
        f'<font face="{pdf_fonts.CHINESE}">発</font>&lt;b&gt;"&amp;'
    )
