"""What customers may change about their bill group: PO, VAT and registration numbers,
and the billing and shipping contacts, and the one definition of each field's rule.

The customer forms (portal.customer.forms), the API and import schemas (portal.sync.schemas) and
the actions (portal.actions.details, portal.actions.contacts) all read the rules from
BILLING_DETAILS and CONTACT here, so a value one face refuses every face refuses, with
the same message."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from babel import Locale
from stdnum import exceptions as stdnum_errors
from stdnum.ch import vat as ch_vat
from stdnum.eu import vat as eu_vat
from stdnum.gb import vat as gb_vat
from stdnum.no import mva as no_vat

from portal.access import MAX_INPUT_LENGTH, AccessError, canonical_email
from portal.actions import Invalid


class DetailError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidFields(Invalid):
    """Some fields break their rules: `errors` maps each such field to its message, so a
    form can show every one next to its field; `message` and `field` are the first."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        field, message = next(iter(errors.items()))
        super().__init__(message, field=field)
        self.errors = dict(errors)


# Character classes of the PO/registration and phone rules, kept apart so that the API
# document can say the same rule as a pattern (portal.sync.schemas.text_pattern).
REFERENCE_FIRST = "A-Za-z0-9"
REFERENCE_REST = "A-Za-z0-9 ./_#()-"
_REFERENCE = re.compile(f"^[{REFERENCE_FIRST}][{REFERENCE_REST}]*$")
PHONE_FIRST = r"\+?[0-9]"
PHONE_REST = "0-9 ()./-"
PHONE_REST_LENGTH = (4, 38)
_PHONE = re.compile(
    f"^{PHONE_FIRST}[{PHONE_REST}]{{{PHONE_REST_LENGTH[0]},{PHONE_REST_LENGTH[1]}}}$"
)
# Unicode categories no one-line text may contain: controls, format characters (zero-width
# and direction marks among them) and the line and paragraph separators.
# Cs: a lone surrogate ("\ud800" from a caller that did not come through the request
# hygiene) can be neither stored nor encoded into a webhook or an email.
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_NON_EU = {"GB": gb_vat, "CH": ch_vat, "NO": no_vat}
_EU = {code.upper() for code in eu_vat.MEMBER_STATES}


def clean_text(value: str | None, *, max_length: int, what: str) -> str | None:
    """Trimmed single-line text, or None when empty; no control characters. The length
    counts the value as given, spaces around it included, as an input's maxlength and a
    schema's maxLength do, so that what the forms, the API document and this rule allow
    is one thing."""
    if len(value or "") > max_length:
        raise DetailError(f"The {what} can be at most {max_length} characters.")
    text = (value or "").strip()
    if not text:
        return None
    if any(unicodedata.category(ch) in FORBIDDEN_CATEGORIES for ch in text):
        raise DetailError(f"The {what} contains characters that are not allowed.")
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


def po_number(value: str | None) -> str | None:
    return reference_number(value, max_length=64, what="PO number")


def registration_number(value: str | None) -> str | None:
    return reference_number(value, max_length=64, what="registration number")


def _text(max_length: int, what: str) -> Callable[[str | None], str | None]:
    return lambda value: clean_text(value, max_length=max_length, what=what)


def _required(
    check: Callable[[str | None], str | None], message: str
) -> Callable[[str | None], str]:
    def run(value: str | None) -> str:
        clean = check(value)
        if clean is None:
            raise DetailError(message)
        return clean

    return run


@dataclass(frozen=True)
class Rule:
    """One field's rule: `check` returns the clean value or raises DetailError with the
    message for the person who typed it; `max_length` is what a form or schema may refuse
    before the check runs (an input's maxlength, a body's size), None for no such limit;
    `required` says whether a value must be given."""

    check: Callable[[str | None], Any]
    max_length: int | None = None
    required: bool = False


BILLING_DETAILS: dict[str, Rule] = {
    "po_number": Rule(po_number, 64),
    "vat_number": Rule(vat_number, 30),
    "registration_number": Rule(registration_number, 64),
}

ADDRESS_FIELDS = ("company", "line1", "line2", "city", "region", "postal_code", "country")

CONTACT: dict[str, Rule] = {
    "name": Rule(_required(_text(200, "name"), "Enter a name."), 200, required=True),
    "company": Rule(_text(200, "company"), 200),
    "email": Rule(contact_email, MAX_INPUT_LENGTH),
    "phone": Rule(phone, 40),
    "line1": Rule(
        _required(_text(200, "address"), "Enter the first line of the address."),
        200,
        required=True,
    ),
    "line2": Rule(_text(200, "address"), 200),
    "city": Rule(
        _required(_text(100, "town or city"), "Enter the town or city."), 100, required=True
    ),
    "region": Rule(_text(100, "region"), 100),
    "postal_code": Rule(_text(20, "postcode"), 20),
    "country": Rule(country, required=True),
}


def checked(rules: Mapping[str, Rule], values: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of `rules` run through its check; InvalidFields naming every field
    that is wrong (nothing is half-checked, so the caller writes all or nothing)."""
    clean: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, rule in rules.items():
        try:
            clean[name] = rule.check(values.get(name))
        except DetailError as exc:
            errors[name] = exc.message
    if errors:
        raise InvalidFields(errors)
    return clean
