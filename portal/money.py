"""Money is integer minor units plus an ISO 4217 code; this is the only place that
turns it (and dates) into text or back, through Babel."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel import Locale
from babel.dates import format_date
from babel.numbers import (
    format_currency,
    format_decimal,
    format_percent,
    get_currency_precision,
    is_currency,
    list_currencies,
)
from flask import Flask

from portal.config import settings_of

DEFAULT_LOCALE = "en_GB"


class MoneyError(ValueError):
    pass


@lru_cache(maxsize=32)
def babel_locale(identifier: str) -> Locale:
    """The Babel locale, parsed once: Babel parses a locale name on every call it is given,
    and a page of invoices formats a hundred amounts and dates."""
    return Locale.parse(identifier)


@lru_cache(maxsize=512)
def _known_currency(code: str) -> bool:
    # is_currency builds the set of every currency Babel knows on each call.
    return is_currency(code)


def currency_codes() -> list[str]:
    """Every code check_currency accepts (upper case), sorted: the API document's list."""
    return sorted(code for code in list_currencies() if len(code) == 3 and _known_currency(code))


def check_currency(code: str) -> str:
    """An upper-case ISO 4217 code, or MoneyError."""
    if not isinstance(code, str) or len(code) != 3 or not _known_currency(code.upper()):
        raise MoneyError(f"{code!r} is not an ISO 4217 currency code.")
    return code.upper()


def to_decimal(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-get_currency_precision(check_currency(currency)))


def to_minor(amount: str | Decimal, currency: str) -> int:
    """Parse a major-unit amount ("12.50") exactly; more decimals than the currency has
    is an error rather than a silent rounding."""
    digits = get_currency_precision(check_currency(currency))
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError):
        raise MoneyError(f"{amount!r} is not an amount.") from None
    if not value.is_finite():
        raise MoneyError(f"{amount!r} is not an amount.")
    scaled = value.scaleb(digits)
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{currency} amounts have at most {digits} decimal places.")
    return int(scaled)


# Babel spends ~50 µs on each amount and date (locale data lookups, pattern parsing);
# a page shows dozens, and the same figures come back page after page. The results are
# pure functions of their arguments, so they are kept, a few thousand of each.
@lru_cache(maxsize=8192)
def format_money(minor: int, currency: str, locale: str = DEFAULT_LOCALE) -> str:
    return format_currency(to_decimal(minor, currency), currency, locale=babel_locale(locale))


@lru_cache(maxsize=8192)
def format_day(day: dt.date, width: str, locale: str = DEFAULT_LOCALE) -> str:
    """A date as "1 December 2026" (width "long") or "1 Dec 2026" ("medium")."""
    return format_date(day, width, locale=babel_locale(locale))


@lru_cache(maxsize=4096)
def format_quantity(value: Decimal | int, locale: str = DEFAULT_LOCALE) -> str:
    """Up to four decimals (hours, GB), none when whole: 2.5, 1,234, 0.1255."""
    return format_decimal(value, format="#,##0.####", locale=babel_locale(locale))


@lru_cache(maxsize=512)
def format_rate(basis_points: int, locale: str = DEFAULT_LOCALE) -> str:
    """A tax rate stored in basis points: 2000 -> 20%, 550 -> 5.5%."""
    return format_percent(
        Decimal(basis_points) / 10000, locale=babel_locale(locale), decimal_quantization=False
    )


def init_app(app: Flask) -> None:
    locale = settings_of(app).LOCALE

    def money_filter(minor: int, currency: str) -> str:
        return format_money(minor, currency, locale)

    def date_long(day: dt.date) -> str:
        return format_day(day, "long", locale)

    def date_short(day: dt.date) -> str:
        return format_day(day, "medium", locale)

    app.jinja_env.filters.update(
        money=money_filter,
        date_long=date_long,
        date_short=date_short,
        quantity=lambda value: format_quantity(value, locale),
        tax_rate=lambda basis_points: format_rate(basis_points, locale),
    )
