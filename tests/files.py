"""Files for the attachment tests: real ones, made here, and the liars."""

from __future__ import annotations

import io

from PIL import Image
from reportlab.pdfgen import canvas


def pdf_bytes(text: str = "Delivery note 42") -> bytes:
    out = io.BytesIO()
    page = canvas.Canvas(out)
    page.drawString(72, 720, text)
    page.save()
    return out.getvalue()


def png_bytes(size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def jpeg_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (30, 200, 30)).save(out, "JPEG")
    return out.getvalue()


HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
)
# A PDF's header on a web page: what a browser would sniff as HTML.
POLYGLOT = b"%PDF-1.4\n<html><script>alert(1)</script></html>\n%%EOF"


def png_then_garbage() -> bytes:
    return png_bytes()[:40] + b"\x00garbage" * 200


def png_with_html_after() -> bytes:
    """A PNG that decodes, followed by a web page: kept only as the redrawn image."""
    return png_bytes() + HTML
