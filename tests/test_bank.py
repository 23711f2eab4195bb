"""portal.bank's pure functions: the bank details' rules, the payment reference, and the
EPC069-12 payload inside the QR code (segno cannot decode a QR code, so the tests read
the payload string that is passed to segno)."""

from __future__ import annotations

import pytest
import segno.helpers

from portal import bank
from portal.bank import BankError, ReferenceFormat, check_details, epc_payload

IBAN = "DE89370400440532013000"
BIC = "COBADEFFXXX"


def details(**overrides):
    values = {
        "account_holder": "Harbour Analytics GmbH",
        "bank_name": "Commerzbank",
        "iban": "DE89 3704 0044 0532 0130 00",
        "bic": "cobadeffxxx",
        "account_number": None,
        "routing_number": None,
        "reference_format": "invoice_number",
    }
    return check_details(**(values | overrides))


def refused(**overrides) -> BankError:
    with pytest.raises(BankError) as caught:
        details(**overrides)
    return caught.value


def test_an_iban_and_bic_are_stored_compact_and_upper_case():
    got = details()
    assert (got.iban, got.bic, got.account_holder) == (IBAN, BIC, "Harbour Analytics GmbH")
    assert got.present and got.reference_format is ReferenceFormat.INVOICE_NUMBER


def test_a_us_account_and_routing_number():
    got = details(iban="", bic="", account_number="000123456789", routing_number="111000025")
    assert (got.iban, got.account_number, got.routing_number) == (None, "000123456789", "111000025")


def test_everything_empty_clears_the_details():
    got = details(account_holder="", bank_name=" ", iban="", bic=None)
    assert not got.present and got.columns()["bank_iban"] is None


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"iban": "DE89 3704 0044 0532 0130 01"}, "iban", "check digits do not match"),
        ({"iban": "DE89 3704 0044 0532 0130"}, "iban", "too many or too few"),
        # Check digits right (computed), but Germany's IBANs have 22 characters.
        ({"iban": "DE5137040044053201300"}, "iban", "form of an IBAN of DE"),
        ({"iban": "hello"}, "iban", "Enter an IBAN"),
        ({"bic": "BNPAFRPP"}, "bic", "bank in FR, the IBAN of an account in DE"),
        ({"bic": "COBA"}, "bic", "8 or 11"),
        ({"iban": "", "bic": BIC}, "iban", "goes with an IBAN"),
        ({"account_holder": ""}, "account_holder", "account holder's name"),
        ({"account_holder": "Harbour\nGmbH"}, "account_holder", "not allowed"),
        ({"account_holder": "Harbour\u202eGmbH"}, "account_holder", "not allowed"),
        ({"bank_name": "Bank\x00"}, "bank_name", "not allowed"),
        ({"iban": "DE89\x0b3704"}, "iban", "not allowed"),
        ({"account_holder": "x" * 71}, "account_holder", "at most 70"),
        ({"iban": "D" * 100_000}, "iban", "at most"),
        ({"bank_name": "x" * 1_000_000}, "bank_name", "at most 70"),
        ({"account_number": "123456", "routing_number": "111000025"}, "account_number", "not both"),
        (
            {"iban": "", "bic": "", "account_number": "12a456", "routing_number": "111000025"},
            "account_number",
            "digits only",
        ),
        (
            {"iban": "", "bic": "", "account_number": "123456", "routing_number": "111000026"},
            "routing_number",
            "check digit",
        ),
        ({"iban": "", "bic": "", "account_number": "123456"}, "routing_number", "both"),
        ({"iban": "", "bic": ""}, "iban", "Enter an IBAN, or an account"),
        ({"reference_format": "whatever"}, "reference_format", "Choose how"),
    ],
)
def test_bad_details_are_refused_naming_the_field(overrides, field, message):
    error = refused(**overrides)
    assert (error.field, message in error.message) == (field, True), error.message


class _Group:
    external_id: str | None = "ACME-UK"


class _Invoice:
    number = "INV-0042"
    bill_group = _Group()


def test_the_payment_reference_follows_the_format():
    invoice: object = _Invoice()
    plain = details()
    both = details(reference_format="group_and_invoice")
    assert bank.payment_reference(plain, invoice) == "INV-0042"  # type: ignore[arg-type]
    assert bank.payment_reference(both, invoice) == "ACME-UK INV-0042"  # type: ignore[arg-type]
    _Group.external_id = None
    try:  # without an external id, the invoice number alone
        assert bank.payment_reference(both, invoice) == "INV-0042"  # type: ignore[arg-type]
    finally:
        _Group.external_id = "ACME-UK"


def payload(**overrides) -> str:
    values = {
        "name": "Harbour Analytics GmbH",
        "iban": IBAN,
        "bic": BIC,
        "amount_minor": 1234,
        "reference": "INV-0042",
    }
    return epc_payload(**(values | overrides))


def test_the_payload_has_the_epc_fields_in_order():
    assert payload().split("\n") == [
        "BCD",
        "002",
        "1",  # character set 1: UTF-8
        "SCT",
        BIC,
        "Harbour Analytics GmbH",
        IBAN,
        "EUR12.34",
        "",  # no purpose code
        "",  # no structured reference: the invoice number is not an RF reference
        "INV-0042",
    ]


def test_the_payload_is_what_segnos_own_epc_helper_makes():
    ours = payload().encode("utf-8")
    theirs = segno.helpers._make_epc_qr_data(
        "Harbour Analytics GmbH", IBAN, "12.34", text="INV-0042", bic=BIC, encoding=1
    )
    assert ours == theirs
    qr = bank.epc_qr(payload())
    assert qr.error == "M" and qr.version <= 13


@pytest.mark.parametrize(
    ("minor", "amount"),
    [(1, "EUR0.01"), (1230, "EUR12.30"), (100, "EUR1.00"), (99_999_999_999, "EUR999999999.99")],
)
def test_the_amount_has_two_decimals(minor, amount):
    assert payload(amount_minor=minor).split("\n")[7] == amount


@pytest.mark.parametrize("minor", [0, -5, 100_000_000_000])
def test_an_amount_outside_the_standard_is_refused(minor):
    with pytest.raises(ValueError, match="EUR 0.01 to 999,999,999.99"):
        payload(amount_minor=minor)


def test_an_iso_11649_reference_goes_in_the_structured_field():
    lines = payload(reference="RF18 5390 0754 7034").split("\n")
    assert lines[9:] == ["RF18539007547034"]


def test_the_lengths_are_cut_to_the_standards():
    lines = payload(name="N" * 100, reference="R" * 300).split("\n")
    assert len(lines[5]) == 70 and len(lines[10]) == 140


def test_non_latin_text_is_utf8_within_331_bytes():
    text = payload(name="Ωμέγα Москва 発票", reference="発票-7 " * 60)
    encoded = text.encode("utf-8")
    assert len(encoded) <= 331
    lines = text.split("\n")
    assert lines[2] == "1" and lines[5] == "Ωμέγα Москва 発票"
    assert lines[10].startswith("発票-7 発票-7")
    bank.epc_qr(text)  # still fits a version 13 QR code


def test_control_characters_cannot_add_fields():
    text = payload(name="Evil\nDE00", reference="INV-1\nBCD\r\n002\x00")
    assert len(text.split("\n")) == 11
    assert text.split("\n")[5] == "Evil DE00"
    assert text.split("\n")[10] == "INV-1 BCD 002"


@pytest.mark.parametrize(
    "brk", ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
)
def test_every_line_break_a_reader_might_split_on_is_a_space(brk):
    """The holder's name and the reference (an invoice number from the billing system)
    cannot carry another IBAN into the payload, whatever a banking app splits lines on."""
    evil = f"INV-1{brk}DE02120300000000202051"
    text = payload(name=f"Harbour{brk}GB33BUKB20201555555555", reference=evil)
    lines = text.split("\n")
    assert len(lines) == 11 and lines[6] == IBAN
    assert not any(ch in text for ch in "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
    assert lines[10] == "INV-1 DE02120300000000202051"
