"""What customers may change about their bill group: PO, VAT and registration numbers,
and the billing and shipping contacts. Validation lives here, not in the forms, so the
API (later) refuses exactly what the pages refuse."""

from __future__ import annotations

import re
import unicodedata

from babel import Locale
from stdnum import exceptions as stdnum_errors
from stdnum.ch import vat as ch_vat
from stdnum.eu import vat as eu_vat
from stdnum.gb import vat as gb_vat
from stdnum.no import mva as no_vat

from portal.access import AccessError, canonical_email


class DetailError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ./_#()-]*$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()./-]{4,38}$")
_NON_EU = {"GB": gb_vat, "CH": ch_vat, "NO": no_vat}
_EU = {code.upper() for code in eu_vat.MEMBER_STATES}


def clean_text(value: str | None, *, max_length: int, what: str) -> str | None:
    """Trimmed single-line text, or None when empty; no control characters."""
    text = (value or "").strip()
    if not text:
        return None
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text):
        raise DetailError(f"The {what} contains characters that are not allowed.")
    if len(text) > max_length:
        raise DetailError(f"The {what} can be at most {max_length} characters.")
    return text


def reference_number(value: str | None, *, max_length: int, what: str) -> str | None:
    """A PO or registration number: letters, digits and simple punctuation."""
    text = clean_text(value, max_length=max_length, what=what)
    if text is not None and not _REFERENCE.match(text):
        raise DetailError(f"The {what} can contain letters, digits, spaces and . / - _ # ( ) only.")
    return text


def vat_number(value: str | None) -> str | None:
    """A VAT number with its country prefix, checked with the country's own rules and
    check digits where python-stdnum knows them (EU, GB, CH, NO); otherwise its shape."""
    text = clean_text(value, max_length=30, what="VAT number")
    if text is None:
        return None
    compact = re.sub(r"[\s.\-]", "", text).upper()
    country = compact[:2]
    if not country.isalpha() or len(compact) < 4:
        raise DetailError("Start the VAT number with its country code, like DE123456789.")
    module = _NON_EU.get(country)
    # Greece writes its VAT prefix EL; its territory code is GR.
    name = Locale("en").territories.get("GR" if country == "EL" else country, country)
    try:
        if module is not None:
            number = module.validate(compact)
        elif country in _EU or country in ("EL", "XI"):
            number = eu_vat.validate(compact)
        elif re.fullmatch(r"[A-Z]{2}[A-Z0-9]{2,18}", compact):
            return compact  # no rules we can check honestly: shape and length only
        else:
            raise stdnum_errors.InvalidFormat()
    except stdnum_errors.ValidationError:
        raise DetailError(
            f"That is not a valid VAT number for {name}. Check it against your "
            "VAT registration certificate."
        ) from None
    return number if number[:2].isalpha() else compact


def phone(value: str | None) -> str | None:
    text = clean_text(value, max_length=40, what="phone number")
    if text is not None and not _PHONE.match(text):
        raise DetailError("Enter a phone number using digits, spaces, + ( ) and -.")
    return text


def contact_email(value: str | None) -> str | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        return canonical_email(text)
    except AccessError as exc:
        raise DetailError(exc.message) from None


def countries(locale: str = "en_GB") -> list[tuple[str, str]]:
    """ISO 3166-1 alpha-2 codes and names, sorted by name."""
    names = Locale.parse(locale).territories
    return sorted(
        (
            (code, name)
            for code, name in names.items()
            if len(code) == 2 and code.isalpha() and code not in {"ZZ", "EU", "EZ", "UN", "QO"}
        ),
        key=lambda item: item[1],
    )


def country(value: str | None) -> str:
    code = (value or "").strip().upper()
    if code not in dict(countries()):
        raise DetailError("Choose a country from the list.")
    return code
