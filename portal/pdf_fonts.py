"""The fonts of every PDF (invoices, receipts, statements): DejaVu Sans, embedded and
subset, for Latin, Greek, Cyrillic and most symbols; reportlab's built-in CID fonts for
the Chinese, Japanese and Korean characters DejaVu does not have, chosen per run of
characters by script. Registered once, when this module is imported.

`markup(text)` gives Paragraph markup (escaped, so customer data is never markup) with
each CJK run in its CID font; `draw_string` does the same on a canvas; `needs_fallback`
says whether a text has any character DejaVu lacks (a table may then not draw it as a
plain string)."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

from reportlab.lib.fonts import addMapping
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont

FONTS = Path(__file__).resolve().parent / "fonts"

SANS = "DejaVuSans"
SANS_BOLD = "DejaVuSans-Bold"

# reportlab's CID fonts (Adobe's, never embedded: every PDF reader has them or a
# substitute), one per script.
JAPANESE = "HeiseiKakuGo-W5"
CHINESE = "STSong-Light"
KOREAN = "HYGothic-Medium"

Script = Literal["ja", "zh", "ko"]
CID_FONTS: dict[Script, str] = {"ja": JAPANESE, "zh": CHINESE, "ko": KOREAN}


def _register() -> frozenset[int]:
    regular = TTFont(SANS, str(FONTS / "DejaVuSans.ttf"))
    bold = TTFont(SANS_BOLD, str(FONTS / "DejaVuSans-Bold.ttf"))
    pdfmetrics.registerFont(regular)
    pdfmetrics.registerFont(bold)
    # <b> in a Paragraph, and ParagraphStyle(fontName=SANS) made bold, pick the bold face.
    addMapping(SANS, 0, 0, SANS)
    addMapping(SANS, 1, 0, SANS_BOLD)
    addMapping(SANS, 0, 1, SANS)
    addMapping(SANS, 1, 1, SANS_BOLD)
    for name in CID_FONTS.values():
        pdfmetrics.registerFont(UnicodeCIDFont(name))
    face: Any = regular.face  # its codepoint -> glyph map, untyped in the stubs
    bold_face: Any = bold.face
    return frozenset(face.charToGlyph) & frozenset(bold_face.charToGlyph)


COVERED = _register()


def _script(char: str) -> Script | None:
    """The CJK script of a character DejaVu lacks, or None (not CJK)."""
    name = unicodedata.name(char, "")
    if name.startswith(("HIRAGANA", "KATAKANA", "HALFWIDTH KATAKANA")):
        return "ja"
    if name.startswith("HANGUL"):
        return "ko"
    if name.startswith(("CJK", "IDEOGRAPHIC", "FULLWIDTH", "BOPOMOFO")):
        return "zh"
    return None


def needs_fallback(text: str) -> bool:
    """Whether DejaVu lacks a character of `text` (on every table cell: the loop is C's)."""
    return not text.isascii() and not COVERED.issuperset(map(ord, text))


def runs(text: str) -> list[tuple[str, str | None]]:
    """The text in runs of (characters, CID font or None for DejaVu). Han characters are
    set in the Japanese font when the text has kana, the Korean one when it has hangul,
    else the Chinese one; a character no font has stays with DejaVu (its .notdef)."""
    if not needs_fallback(text):
        return [(text, None)]
    scripts = {_script(char) for char in text if ord(char) not in COVERED}
    han: Script = "ja" if "ja" in scripts else "ko" if "ko" in scripts else "zh"
    out: list[tuple[str, str | None]] = []
    for char in text:
        font: str | None = None
        if ord(char) not in COVERED:
            script = _script(char)
            if script is not None:
                font = CID_FONTS[han if script == "zh" else script]
        if out and out[-1][1] == font:
            out[-1] = (out[-1][0] + char, font)
        else:
            out.append((char, font))
    return out


def markup(text: str) -> str:
    """Paragraph markup for plain text: escaped, CJK runs in their CID font."""
    return "".join(
        escape(part) if font is None else f'<font face="{font}">{escape(part)}</font>'
        for part, font in runs(text)
    )


def string_width(text: str, font: str, size: float) -> float:
    return sum(
        pdfmetrics.stringWidth(part, font if cid is None else cid, size) for part, cid in runs(text)
    )


def draw_string(
    canvas: Any, x: float, y: float, text: str, font: str, size: float, *, right: bool = False
) -> None:
    """Text drawn as drawString draws it (never parsing markup), in one text object that
    changes font run by run, so a reader extracts it as one string; `right` aligns its
    end at x."""
    if right:
        x -= string_width(text, font, size)
    line = canvas.beginText(x, y)
    for part, cid in runs(text):
        line.setFont(font if cid is None else cid, size)
        line.textOut(part)
    canvas.drawText(line)
