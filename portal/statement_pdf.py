"""A statement of account as a PDF, built from the invoice PDF's parts (portal.invoice_pdf:
the seller's header and logo, the brand rule, the ruled table whose header repeats on
every page, "Page N of M"): render(statement) -> bytes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, KeepTogether, Spacer, Table, TableStyle

from portal.invoice_pdf import (
    BODY,
    CELL_PADDING,
    HAIRLINE,
    HEADING,
    INK,
    MUTED_LEFT,
    SHADE,
    STRONG,
    TITLE,
    Formats,
    build,
    cell,
    para,
    ruled_table,
)
from portal.models import ContactKind
from portal.pdf_fonts import SANS_BOLD
from portal.statement import KIND_LABELS, Statement


def render(found: Statement, *, locale: str = "en_GB") -> bytes:
    group = found.group
    entity = group.entity
    fmt = Formats(found.currency, locale)
    period = f"{fmt.date(found.date_from)} – {fmt.date(found.date_to)}"
    contact = group.contact(ContactKind.BILLING)

    def story(width: float) -> list[Flowable]:
        return [
            para("Statement of account", TITLE),
            Spacer(0, 2 * mm),
            para([group.account.name, group.name, contact.name if contact else None], STRONG),
            para(period, MUTED_LEFT),
            Spacer(0, 5 * mm),
            _lines(found, fmt, width),
            Spacer(0, 5 * mm),
            KeepTogether([para("Aging of open invoices", HEADING), _aging(found, fmt, width)]),
        ]

    return build(
        entity,
        title=f"Statement of account {period}",
        footer=f"Statement {period}  ·  {group.name}  ·  Questions? {entity.support_email}",
        story=story,
    )


# The lines in 8 point: DejaVu Sans is a tenth wider than Helvetica was, and at 9 point a
# date or a usual "INV-0042 · description" would no longer fit its column.
LINE = ParagraphStyle("statement-line", BODY, fontSize=8, leading=11)


def _lines(found: Statement, fmt: Formats, width: float) -> Table:
    numbers = [20 * mm, 24 * mm, 24 * mm, 26 * mm]
    text = width - 24 * mm - sum(numbers)
    rows: list[list[Any]] = [["Date", "Type", "Details", "Charges", "Credits", "Balance"]]
    before = found.date_from - dt.timedelta(days=1)
    rows.append([fmt.date(before), "", "Opening balance", "", "", fmt.money(found.opening_minor)])
    for line in found.lines:
        details = f"{line.reference} · {line.description}" if line.description else line.reference
        rows.append(
            [
                fmt.date(line.day),
                KIND_LABELS[line.kind],
                cell(details, text - 2 * CELL_PADDING, LINE),
                fmt.money(line.charge_minor) if line.charge_minor else "",
                fmt.money(line.credit_minor) if line.credit_minor else "",
                fmt.money(line.balance_minor),
            ]
        )
    rows.append(
        [
            fmt.date(found.date_to),
            "",
            "Closing balance",
            fmt.money(found.charges_minor),
            fmt.money(found.credits_minor),
            fmt.money(found.closing_minor),
        ]
    )
    return ruled_table(
        rows,
        [24 * mm, *numbers[:1], text, *numbers[1:]],
        ("BACKGROUND", (0, 0), (-1, 0), SHADE),
        ("ALIGN", (3, 0), (-1, -1), "RIGHT"),
        ("FONT", (0, 1), (-1, -1), LINE.fontName, LINE.fontSize, LINE.leading),
        ("FONT", (0, -1), (-1, -1), SANS_BOLD, LINE.fontSize, LINE.leading),
        ("LINEABOVE", (0, -1), (-1, -1), 1, INK),
        ("TOPPADDING", (0, 0), (-1, -1), 3),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
    )


def _aging(found: Statement, fmt: Formats, width: float) -> Table:
    labels = [label for label, _amount in found.aging] + ["Total open"]
    amounts = [fmt.money(amount) for _label, amount in found.aging] + [fmt.money(found.open_minor)]
    column = width / len(labels)
    table = Table([labels, amounts], colWidths=[column] * len(labels))
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), SANS_BOLD, 8, 12),
                ("FONT", (0, 1), (-1, 1), BODY.fontName, 10, 13),
                ("TEXTCOLOR", (0, 0), (-1, -1), INK),
                ("ALIGN", (0, 0), (-1, -1), "RIGHT"),
                ("BACKGROUND", (0, 0), (-1, 0), SHADE),
                ("LINEBELOW", (0, 0), (-1, -1), 0.5, HAIRLINE),
            ]
        )
    )
    return table
