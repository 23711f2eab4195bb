"""Files customers and staff attach to a dispute's thread: checked by what they are, not
by what they are called or said to be.

A file is kept only if its bytes are a PDF that pypdf can read (and that carries no
JavaScript), or an image Pillow can decode fully; an image is then drawn again into a
fresh file of its own type, so nothing rides along (metadata, a script in a text chunk,
a second file after the end marker: a polyglot). The type we keep is the one we found,
and the download is always served as an attachment with that type and nosniff
(portal.downloads.stored_file_response), so a browser never renders it as a page.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import unicodedata
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from pypdf import PdfReader
from pypdf.errors import PyPdfError

log = logging.getLogger(__name__)

# The largest file kept; the request body may be a little larger (the message and the
# form's framing: portal.bodies.larger_body).
MAX_BYTES = 5 * 1024 * 1024
# A decompression bomb is refused before it is decoded: a 5 MB PNG can claim 30000²
# pixels. 40 megapixels is more than any phone photo or scan of a page.
MAX_PIXELS = 40_000_000
MAX_FILENAME = 100

PDF = "application/pdf"
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {PDF: "pdf", "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
ALLOWED = "Attach a PDF, or a PNG, JPEG or WebP image."
NOT_READABLE = "This file is not a PDF or an image we can read. " + ALLOWED

# Markup a browser would sniff as a page, at the start of a file that says it is a PDF.
_MARKUP = re.compile(rb"<\s*(?:!doctype|html|head|body|script|svg|iframe|object|embed)", re.I)
_PDF_SCRIPT = re.compile(rb"/(?:JavaScript|JS|Launch|EmbeddedFile|RichMedia)\b")


class AttachmentError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class CheckedFile:
    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def size_text(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"


def check(filename: str | None, data: bytes) -> CheckedFile:
    """The file as it is kept, or AttachmentError with a message for the person who sent
    it: empty, too large, or not a PDF or image we can read."""
    if not data:
        raise AttachmentError("The file is empty. Choose the file again.")
    if len(data) > MAX_BYTES:
        raise AttachmentError(f"The file can be at most {size_text(MAX_BYTES)}.")
    if data.startswith(b"%PDF-"):
        content_type, kept = PDF, _pdf(data)
    else:
        content_type, kept = _image(data)
    return CheckedFile(_filename(filename, content_type), content_type, kept)


def _pdf(data: bytes) -> bytes:
    if _MARKUP.search(data[:1024]) or _PDF_SCRIPT.search(data):
        raise AttachmentError("This PDF contains scripts or web page markup. " + ALLOWED)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pypdf warns about every repaired xref
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted:
                raise AttachmentError("This PDF is password-protected. Attach one without.")
            if len(reader.pages) < 1:
                raise AttachmentError("This PDF has no pages. " + ALLOWED)
    except AttachmentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        log.info("refused an attachment: unreadable PDF (%s)", type(exc).__name__)
        raise AttachmentError("This file says it is a PDF but cannot be read. " + ALLOWED) from None
    return data


def _image(data: bytes) -> tuple[str, bytes]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(IMAGE_TYPES)) as image:
                found = image.format or ""
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise AttachmentError("The image is too large to show. Send a smaller one.")
                image.load()  # every pixel: a PNG header on garbage fails here
                return IMAGE_TYPES[found], _redrawn(image, found)
    except AttachmentError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise AttachmentError(
            "This file is not a PDF or an image we can read. " + ALLOWED
        ) from None
    except (OSError, ValueError, SyntaxError, KeyError, EOFError) as exc:
        log.info("refused an attachment: undecodable image (%s)", type(exc).__name__)
        raise AttachmentError("This image is damaged or incomplete. " + ALLOWED) from None


def _redrawn(image: Image.Image, found: str) -> bytes:
    """The pixels in a fresh file of the same type, without metadata or trailing bytes."""
    out = io.BytesIO()
    if found == "JPEG":
        image.convert("RGB").save(out, "JPEG", quality=90)
    elif found == "WEBP":
        image.save(out, "WEBP", quality=90)
    else:
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
            image = image.convert("RGBA")
        image.save(out, "PNG")
    return out.getvalue()


def _filename(given: str | None, content_type: str) -> str:
    """The name it is kept and downloaded as: the sent name without its folders or
    invisible characters, with the extension of what it is."""
    base = (given or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(
        ch for ch in base if unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Zl", "Zp"}
    )
    stem = base.rsplit(".", 1)[0].strip(" .") if "." in base else base.strip(" .")
    extension = EXTENSIONS[content_type]
    stem = stem[: MAX_FILENAME - len(extension) - 1] or "attachment"
    return f"{stem}.{extension}"
