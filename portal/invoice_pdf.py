"""Invoice PDFs with reportlab: render(invoice) -> bytes, knowing nothing of the request."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from io import BytesIO
from typing import Any

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    HRFlowable,
    Image,
    KeepTogether,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from portal import bank
from portal.models import ContactKind, Entity, Invoice, PaymentStatus
from portal.money import babel_locale, format_day, format_money, format_quantity, format_rate
from portal.pdf_fonts import SANS, SANS_BOLD, draw_string, markup, needs_fallback

MARGIN = 18 * mm
FOOTER_Y = 10 * mm
LOGO_BOX = (45 * mm, 16 * mm)
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
INK = colors.HexColor("#111827")
MUTED = colors.HexColor("#6b7280")
HAIRLINE = colors.HexColor("#d1d5db")
SHADE = colors.HexColor("#f3f4f6")
CELL_PADDING = 6  # reportlab's default left and right padding in a table cell

BODY = ParagraphStyle("body", fontName=SANS, fontSize=9, leading=12, textColor=INK)
BODY_RIGHT = ParagraphStyle("body-right", BODY, alignment=TA_RIGHT)
STRONG = ParagraphStyle("strong", BODY, fontName=SANS_BOLD)
STRONG_RIGHT = ParagraphStyle("strong-right", STRONG, alignment=TA_RIGHT)
MUTED_LEFT = ParagraphStyle("muted", BODY, textColor=MUTED)
MUTED_RIGHT = ParagraphStyle("muted-right", MUTED_LEFT, alignment=TA_RIGHT)
LABEL = ParagraphStyle("label", BODY, fontName=SANS_BOLD, fontSize=7.5, textColor=MUTED)
TITLE = ParagraphStyle("title", BODY, fontName=SANS_BOLD, fontSize=18, leading=22)
HEADING = ParagraphStyle("heading", STRONG, spaceAfter=1 * mm)


def para(lines: str | None | list[str | None], style: ParagraphStyle = BODY) -> Paragraph:
    """The only way this module makes a Paragraph: every line is escaped, so customer
    data is always text and never markup (CVE-2023-33733); empty lines are dropped."""
    items = lines if isinstance(lines, list) else [lines]
    text = [line for item in items if item for line in item.splitlines() if line.strip()]
    return Paragraph("<br/>".join(markup(line) for line in text), style)


def cell(text: str, width: float, style: ParagraphStyle = BODY) -> str | Paragraph:
    """A table cell's text: as a plain string when it fits on one line of `width` (a Table
    draws strings directly, never parsing them, at a fraction of a Paragraph's cost;
    the table's own style must then set the same font, colour and alignment), as a
    wrapping Paragraph when it does not."""
    if (
        "\n" not in text
        and not needs_fallback(text)
        and stringWidth(text, style.fontName, style.fontSize) <= width
    ):
        return text
    return para(text, style)


def render(invoice: Invoice, *, today: dt.date, locale: str = "en_GB") -> bytes:
    """The invoice as an A4 PDF; `today` decides whether an open invoice shows as overdue."""
    fmt = Formats(invoice.currency, locale)

    def story(width: float) -> list[Flowable]:
        return [
            para(f"Invoice {invoice.number}", TITLE),
            Spacer(0, 4 * mm),
            _parties(invoice, today, fmt, width),
            Spacer(0, 6 * mm),
            _lines_table(invoice, fmt, width),
            Spacer(0, 4 * mm),
            _closing(invoice, fmt, width),
            *_bank_transfer(invoice, fmt, width),
        ]

    return build(
        invoice.entity,
        title=f"Invoice {invoice.number}",
        footer=f"Invoice {invoice.number}  ·  Questions? {invoice.entity.support_email}",
        story=story,
    )


def build(
    entity: Entity, *, title: str, footer: str, story: Callable[[float], list[Flowable]]
) -> bytes:
    """An A4 document of the seller's: its header and accent rule, then `story(width)`,
    with "Page N of M" and `footer` on every page. Invoices and receipts alike."""
    buffer = BytesIO()
    doc = BaseDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN + 4 * mm,
        title=title,
        author=entity.legal_name or entity.name,
        creator=entity.name,
        invariant=1,  # no timestamps or random ids: the same document gives the same bytes
        initialFontName=SANS,  # each page's first font too: no document names Helvetica
    )
    # Unpadded, so that text, tables and the rule share one left edge.
    frame = Frame(doc.leftMargin, doc.bottomMargin, doc.width, doc.height, 0, 0, 0, 0)
    doc.addPageTemplates(PageTemplate(frames=[frame]))
    flowables = [
        *_header(entity, doc.width),
        _rule(entity.brand_colour),
        Spacer(0, 5 * mm),
        *story(doc.width),
    ]
    doc.build(flowables, canvasmaker=partial(_NumberedCanvas, footer=footer))
    return buffer.getvalue()


class Formats:
    """Numbers, money and dates for one invoice's currency and locale, all through Babel."""

    def __init__(self, currency: str, locale: str) -> None:
        self.currency, self.locale = currency, locale

    def money(self, minor: int) -> str:
        return format_money(minor, self.currency, self.locale)

    def date(self, day: dt.date) -> str:
        return format_day(day, "medium", self.locale)

    def quantity(self, value: Decimal) -> str:
        return format_quantity(value, self.locale)

    def rate(self, basis_points: int) -> str:
        return format_rate(basis_points, self.locale)

    def country(self, code: str) -> str:
        name: str = babel_locale(self.locale).territories.get(code.upper(), code)
        return name


def _header(entity: Entity, width: float) -> list[Flowable]:
    """The seller: logo on the left, name, address and VAT number on the right (on the
    receipts of portal.receipts too)."""
    seller = _stacked(
        [
            (entity.legal_name or entity.name, STRONG_RIGHT),
            (entity.address, MUTED_RIGHT),
            (entity.vat_number and f"VAT {entity.vat_number}", MUTED_RIGHT),
            (entity.support_email, MUTED_RIGHT),
        ],
        width / 2,
    )
    table = Table([[_logo(entity.logo) or "", seller]], colWidths=[width / 2] * 2)
    table.setStyle(_grid_style(valign="BOTTOM"))
    return [table, Spacer(0, 3 * mm)]


def _stacked(lines: list[tuple[str | None, ParagraphStyle]], width: float) -> Table:
    """Lines of text stacked like a paragraph's, each in its own style (a name in bold
    over a muted address): a one-column table of `cell`s. Empty lines are dropped and
    a text with line breaks gives one line each, as `para` does."""
    shown = [
        (line, style) for text, style in lines if text for line in text.splitlines() if line.strip()
    ]
    table = Table(
        [[cell(text, width, style)] for text, style in shown] or [[""]], colWidths=[width]
    )
    table.setStyle(_grid_style())
    for row, (_text, style) in enumerate(shown):
        where = (0, row), (0, row)
        align = "RIGHT" if style.alignment == TA_RIGHT else "LEFT"
        table.setStyle(
            [
                ("FONT", *where, style.fontName, style.fontSize, style.leading),
                ("TEXTCOLOR", *where, style.textColor),
                ("ALIGN", *where, align),
            ]
        )
    return table


def _logo(data: bytes | None) -> Image | None:
    if not data:
        return None
    width, height = ImageReader(BytesIO(data)).getSize()
    scale = min(LOGO_BOX[0] / width, LOGO_BOX[1] / height)
    return Image(BytesIO(data), width * scale, height * scale, hAlign="LEFT")


def _rule(brand_colour: str | None) -> HRFlowable:
    """The brand colour's only use: a thin accent rule, never text (contrast is unknown)."""
    valid = brand_colour is not None and HEX_COLOUR.fullmatch(brand_colour)
    colour = colors.HexColor(brand_colour) if brand_colour is not None and valid else HAIRLINE
    return HRFlowable(width="100%", thickness=1.5, color=colour, spaceBefore=0, spaceAfter=0)


def _parties(invoice: Invoice, today: dt.date, fmt: Formats, width: float) -> Table:
    """Bill-to on the left, the invoice's dates, status and references on the right."""
    group = invoice.bill_group
    contact = group.contact(ContactKind.BILLING)
    bill_to: list[tuple[str | None, ParagraphStyle]] = [("BILL TO", LABEL)]
    if contact is None:
        bill_to.append((group.account.name, STRONG))
    else:
        address = contact.address_lines[:-1] if contact.country else contact.address_lines
        country = fmt.country(contact.country) if contact.country else None
        bill_to.append((contact.name, STRONG))
        bill_to += [(line, BODY) for line in (contact.company, *address, country)]
    if group.vat_number:
        bill_to.append((f"VAT {group.vat_number}", BODY))

    period = None
    if invoice.period_start and invoice.period_end:
        period = f"{fmt.date(invoice.period_start)} – {fmt.date(invoice.period_end)}"
    elif invoice.period_start:
        period = f"From {fmt.date(invoice.period_start)}"
    details = [
        ("Issue date", fmt.date(invoice.issue_date)),
        ("Due date", fmt.date(invoice.due_date)),
        ("Status", invoice.display_status(today).value.capitalize()),
        ("Service period", period),
        ("PO number", invoice.po_number or group.po_number),
    ]
    value_width = width / 2 - 28 * mm
    facts = Table(
        [
            [cell(label, 28 * mm, MUTED_LEFT), cell(value, value_width, BODY_RIGHT)]
            for label, value in details
            if value
        ],
        colWidths=[28 * mm, value_width],
    )
    facts.setStyle(_grid_style(bottom=1.5))
    facts.setStyle(
        [
            ("FONT", (0, 0), (-1, -1), BODY.fontName, BODY.fontSize, BODY.leading),
            ("TEXTCOLOR", (0, 0), (0, -1), MUTED),
            ("TEXTCOLOR", (1, 0), (1, -1), INK),
            ("ALIGN", (1, 0), (1, -1), "RIGHT"),
        ]
    )
    table = Table([[_stacked(bill_to, width / 2), facts]], colWidths=[width / 2] * 2)
    table.setStyle(_grid_style())
    return table


def _lines_table(invoice: Invoice, fmt: Formats, width: float) -> Table:
    """The line items; the table splits across pages with its header row repeated.
    Numeric cells are plain strings: a Table draws those as text, it never parses them."""
    numbers = [16 * mm, 28 * mm, 16 * mm, 30 * mm]
    description_width = width - sum(numbers)
    text_width = description_width - 2 * CELL_PADDING
    rows: list[list[Any]] = [["Description", "Qty", "Unit price", "Tax", "Amount"]]
    for line in invoice.lines:
        rows.append(
            [
                cell(line.description, text_width),
                fmt.quantity(line.quantity),
                fmt.money(line.unit_price_minor),
                fmt.rate(line.tax_rate_bp),
                fmt.money(line.amount_minor),
            ]
        )
    return ruled_table(
        rows,
        [description_width, *numbers],
        ("BACKGROUND", (0, 0), (-1, 0), SHADE),
        ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
        ("TOPPADDING", (0, 0), (-1, -1), 3),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
    )


def _totals(invoice: Invoice, fmt: Formats) -> Table:
    rows = [
        ("Subtotal", invoice.subtotal_minor),
        ("Tax", invoice.tax_minor),
        ("Total", invoice.total_minor),
        ("Amount paid", invoice.amount_paid_minor),
        ("Balance due", invoice.balance_minor),
    ]
    table = Table(
        [[label, fmt.money(minor)] for label, minor in rows],
        colWidths=[30 * mm, 40 * mm],
        hAlign="RIGHT",
    )
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), SANS, 9, 12),
                ("TEXTCOLOR", (0, 0), (-1, -1), INK),
                ("ALIGN", (1, 0), (1, -1), "RIGHT"),
                ("FONT", (0, 2), (-1, 2), SANS_BOLD, 9, 12),
                ("LINEABOVE", (0, 2), (-1, 2), 0.5, HAIRLINE),
                ("FONT", (0, -1), (-1, -1), SANS_BOLD, 11, 14),
                ("LINEABOVE", (0, -1), (-1, -1), 1, INK),
                ("TOPPADDING", (0, -1), (-1, -1), 6),
            ]
        )
    )
    return table


def _closing(invoice: Invoice, fmt: Formats, width: float) -> Flowable:
    """Payments applied beside the totals, kept together; a long payment history goes
    below the totals instead, since a row of a table cannot split across pages."""
    totals = _totals(invoice, fmt)
    if not invoice.applications:
        return KeepTogether([totals])
    if len(invoice.applications) > 12:
        return KeepTogether([totals, *_payments(invoice, fmt, width)])
    table = Table(
        [[_payments(invoice, fmt, width - 78 * mm), totals]],
        colWidths=[width - 70 * mm, 70 * mm],
    )
    table.setStyle(_grid_style())
    return table


def _payments(invoice: Invoice, fmt: Formats, width: float) -> list[Flowable]:
    """Payments applied to this invoice, oldest first; a reversed payment says so."""
    applications = sorted(invoice.applications, key=lambda a: (a.payment.received_at, a.id))
    rows: list[list[Any]] = [["Date", "Reference", "Amount"]]
    for application in applications:
        payment = application.payment
        reference = payment.reference or payment.method_description or "—"
        if payment.status != PaymentStatus.SUCCEEDED:
            reference = f"{reference} ({payment.status.value})"
        rows.append(
            [
                fmt.date(payment.received_at.date()),
                cell(reference, width - 52 * mm - 2 * CELL_PADDING),
                fmt.money(application.amount_minor),
            ]
        )
    widths = [24 * mm, width - 52 * mm, 28 * mm]
    return [para("Payments applied", HEADING), ruled_table(rows, widths)]


def _bank_transfer(invoice: Invoice, fmt: Formats, width: float) -> list[Flowable]:
    """How to pay an open invoice by bank transfer, when its seller has bank details:
    the details, and for EUR the EPC payment QR code, drawn as vector squares."""
    transfer = bank.transfer_for(invoice)
    if transfer is None:
        return []
    details = transfer.details
    rows: list[tuple[str, str | None]] = [
        ("Account holder", details.account_holder),
        ("Bank", details.bank_name),
        ("IBAN", transfer.iban_display),
        ("BIC", details.bic),
        ("Account number", details.account_number),
        ("Routing number", details.routing_number),
        ("Reference", transfer.reference),
        ("Amount", fmt.money(transfer.amount_minor)),
    ]
    qr = transfer.qr()
    qr_width = 32 * mm if qr is not None else 0
    text_width = width - qr_width - (4 * mm if qr is not None else 0)
    value_width = text_width - 32 * mm
    facts = Table(
        [
            [cell(label, 32 * mm, MUTED_LEFT), cell(value, value_width)]
            for label, value in rows
            if value
        ],
        colWidths=[32 * mm, value_width],
    )
    facts.setStyle(_grid_style(bottom=1.5))
    facts.setStyle([("TEXTCOLOR", (0, 0), (0, -1), MUTED), ("TEXTCOLOR", (1, 0), (1, -1), INK)])
    body: Flowable = facts
    if qr is not None:
        body = Table([[facts, QRCode(qr.matrix, qr_width)]], colWidths=[width - qr_width, qr_width])
        body.setStyle(_grid_style())
    intro = f"Send {fmt.money(transfer.amount_minor)} to this account, quoting the reference."
    if qr is not None:
        intro += " Or scan the QR code with your banking app."
    return [
        Spacer(0, 6 * mm),
        KeepTogether([para("Pay by bank transfer", HEADING), para(intro, MUTED_LEFT), body]),
    ]


class QRCode(Flowable):
    """A QR code's modules as filled squares (a vector drawing, sharp at any zoom), with
    the four-module quiet zone the standard asks for inside `size`."""

    QUIET = 4

    def __init__(self, matrix: Any, size: float) -> None:
        super().__init__()
        self.matrix = [bytes(row) for row in matrix]
        self.size = size

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        return self.size, self.size

    def draw(self) -> None:
        canvas: Any = self.canv
        count = len(self.matrix) + 2 * self.QUIET
        module = self.size / count
        canvas.saveState()
        canvas.setFillColor(colors.white)
        canvas.rect(0, 0, self.size, self.size, stroke=0, fill=1)
        canvas.setFillColor(colors.black)
        path = canvas.beginPath()
        for y, row in enumerate(self.matrix):
            top = self.size - (y + self.QUIET + 1) * module
            x = 0
            while x < len(row):
                if not row[x]:
                    x += 1
                    continue
                start = x
                while x < len(row) and row[x]:
                    x += 1
                path.rect((start + self.QUIET) * module, top, (x - start) * module, module)
        canvas.drawPath(path, stroke=0, fill=1)
        canvas.restoreState()


def ruled_table(rows: list[list[Any]], widths: list[float], *extra: tuple[Any, ...]) -> Table:
    """A data table: a muted header row, repeated on every page it spills onto, hairlines
    between rows and figures right-aligned in the last column. A plain string with
    characters DejaVu lacks becomes a Paragraph, whose markup sets them in a CJK font."""
    rows = [
        [
            _fallback(value, row == 0, column == len(widths) - 1)
            if isinstance(value, str) and needs_fallback(value)
            else value
            for column, value in enumerate(cells)
        ]
        for row, cells in enumerate(rows)
    ]
    table = Table(rows, colWidths=widths, repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), SANS, 9, 12),
                ("FONT", (0, 0), (-1, 0), SANS_BOLD, 8, 12),
                ("TEXTCOLOR", (0, 0), (-1, -1), INK),
                ("TEXTCOLOR", (0, 0), (-1, 0), MUTED),
                ("ALIGN", (-1, 0), (-1, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.5, HAIRLINE),
                *extra,
            ]
        )
    )
    return table


def _fallback(text: str, header: bool, last: bool) -> Paragraph:
    if header:
        return para(text, STRONG_RIGHT if last else STRONG)
    return para(text, BODY_RIGHT if last else BODY)


def _grid_style(valign: str = "TOP", bottom: float = 0) -> TableStyle:
    """A layout table: no padding at the edges, no lines, and the document's font (a
    Table's own is Helvetica, for any plain string a caller does not style)."""
    return TableStyle(
        [
            ("FONT", (0, 0), (-1, -1), SANS, 9, 12),
            ("VALIGN", (0, 0), (-1, -1), valign),
            ("LEFTPADDING", (0, 0), (-1, -1), 0),
            ("RIGHTPADDING", (0, 0), (-1, -1), 0),
            ("TOPPADDING", (0, 0), (-1, -1), 0),
            ("BOTTOMPADDING", (0, 0), (-1, -1), bottom),
        ]
    )


class _NumberedCanvas(Canvas):
    """Holds every page back until the end, so that each footer can say "Page N of M".
    The footer is drawn with drawString, which never parses markup."""

    def __init__(self, *args: Any, footer: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._footer = footer
        self._pages: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._pages.append(dict(self.__dict__))
        reportlab: Any = self  # its hook for "begin a fresh page", which the stubs leave out
        reportlab._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for number, page in enumerate(self._pages, start=1):
            self.__dict__.update(page)
            self._draw_footer(number, total)
            super().showPage()
        super().save()

    def _draw_footer(self, number: int, total: int) -> None:
        reportlab: Any = self  # the page size, private in the stubs
        width, _height = reportlab._pagesize
        self.saveState()
        self.setStrokeColor(HAIRLINE)
        self.setLineWidth(0.5)
        self.line(MARGIN, FOOTER_Y + 10, width - MARGIN, FOOTER_Y + 10)
        self.setFillColor(MUTED)
        draw_string(self, MARGIN, FOOTER_Y, self._footer, SANS, 8)
        draw_string(
            self, width - MARGIN, FOOTER_Y, f"Page {number} of {total}", SANS, 8, right=True
        )
        self.restoreState()
