"""Money: integer minor units in, Babel-formatted text out, exact parsing back."""

from decimal import Decimal

import pytest

from portal.money import (
    MoneyError,
    check_currency,
    format_money,
    format_quantity,
    format_rate,
    to_minor,
)


@pytest.mark.parametrize(
    ("minor", "currency", "locale", "text"),
    [
        (123456, "GBP", "en_GB", "£1,234.56"),
        (123456, "EUR", "de_DE", "1.234,56\xa0€"),
        (123456, "JPY", "en_GB", "JP¥123,456"),
        (5, "USD", "en_US", "$0.05"),
        (-1999, "EUR", "en_GB", "-€19.99"),
        (10**15, "USD", "en_US", "$10,000,000,000,000.00"),
    ],
)
def test_format_money(minor, currency, locale, text):
    assert format_money(minor, currency, locale) == text


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("12.50", "EUR", 1250), ("100", "JPY", 100), ("0.001", "BHD", 1), (Decimal("7"), "USD", 700)],
)
def test_to_minor_is_exact(amount, currency, minor):
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize("amount", ["1.234", "1.5", 1.1, "NaN", "Infinity", "abc", None])
def test_to_minor_refuses_what_it_cannot_represent_exactly(amount):
    currency = "JPY" if amount == "1.5" else "USD"
    with pytest.raises(MoneyError):
        to_minor(amount, currency)


def test_currency_codes_are_checked():
    assert check_currency("eur") == "EUR"
    for code in ["EURO", "XXY", "", None]:
        with pytest.raises(MoneyError):
            check_currency(code)


@pytest.mark.parametrize(("locale", "text"), [("en_GB", "£2,500.00"), ("de_DE", "2.500,00\xa0£")])
def test_the_money_filter_uses_the_configured_locale(sibling, locale, text):
    # The filter takes the locale at start-up: a built app with another one.
    app = sibling(LOCALE=locale)
    with app.app_context():
        template = app.jinja_env.from_string("{{ 250000 | money('GBP') }}")
        assert template.render() == text


@pytest.mark.parametrize(
    ("value", "locale", "text"),
    [
        (Decimal("2.5000"), "en_GB", "2.5"),
        (Decimal("1234"), "en_GB", "1,234"),
        (Decimal("0.1255"), "en_GB", "0.1255"),
        (Decimal("1234.5"), "de_DE", "1.234,5"),
    ],
)
def test_quantities_keep_up_to_four_decimals(value, locale, text):
    assert format_quantity(value, locale) == text


@pytest.mark.parametrize(
    ("basis_points", "locale", "text"),
    [
        (2000, "en_GB", "20%"),
        (550, "en_GB", "5.5%"),
        (0, "en_GB", "0%"),
        (1900, "de_DE", "19\xa0%"),
    ],
)
def test_tax_rates_from_basis_points(basis_points, locale, text):
    assert format_rate(basis_points, locale) == text
