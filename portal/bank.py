"""Paying by bank transfer: a seller's bank details and their rules, the payment reference
of an invoice, and the EPC069-12 "SEPA credit transfer" QR code of an open EUR invoice.

Pure functions, no database: `check_details` is the one set of field rules (the staff
form's action uses it), `transfer_for(invoice)` says what an invoice's page and PDF show,
`epc_payload` is the exact text inside the QR code."""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import segno
from stdnum import bic as stdnum_bic
from stdnum import iban as stdnum_iban
from stdnum import iso11649
from stdnum.exceptions import InvalidChecksum
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.us import rtn

from portal.details import DetailError, clean_text
from portal.models import Entity, Invoice, InvoiceStatus
from portal.money import to_decimal

# EPC069-12: the beneficiary's name is at most 70 characters, the unstructured remittance
# text 140, a structured (ISO 11649 "RF") reference 35; the whole payload 331 bytes.
HOLDER_MAX = 70
BANK_NAME_MAX = 70
IBAN_MAX = 34
BIC_MAX = 11
ACCOUNT_NUMBER_MAX = 17  # a US account number's most digits
EPC_TEXT_MAX = 140
EPC_REFERENCE_MAX = 35
EPC_PAYLOAD_MAX_BYTES = 331
EPC_MAX_AMOUNT_MINOR = 99_999_999_999  # EUR 999,999,999.99
IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{1,30}")


class ReferenceFormat(enum.StrEnum):
    """How the payment reference of an invoice is made."""

    INVOICE_NUMBER = "invoice_number"
    GROUP_AND_INVOICE = "group_and_invoice"


REFERENCE_LABELS = {
    ReferenceFormat.INVOICE_NUMBER: "The invoice number (INV-0042)",
    ReferenceFormat.GROUP_AND_INVOICE: (
        "The bill group's external id and the invoice number (ACME-UK INV-0042)"
    ),
}


class BankError(DetailError):
    """A bank detail that breaks a rule; `field` names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class BankDetails:
    """A seller's bank details as stored: an IBAN (and maybe a BIC), or an account and
    routing number; the account holder always; all None when there are none."""

    account_holder: str | None = None
    bank_name: str | None = None
    iban: str | None = None
    bic: str | None = None
    account_number: str | None = None
    routing_number: str | None = None
    reference_format: ReferenceFormat = ReferenceFormat.INVOICE_NUMBER

    @property
    def present(self) -> bool:
        return self.iban is not None or self.account_number is not None

    def columns(self) -> dict[str, Any]:
        """The entity's columns of these details."""
        return {
            "bank_account_holder": self.account_holder,
            "bank_name": self.bank_name,
            "bank_iban": self.iban,
            "bank_bic": self.bic,
            "bank_account_number": self.account_number,
            "bank_routing_number": self.routing_number,
            "bank_reference_format": self.reference_format.value,
        }


def details_of(entity: Entity) -> BankDetails:
    try:
        reference = ReferenceFormat(entity.bank_reference_format)
    except ValueError:
        reference = ReferenceFormat.INVOICE_NUMBER
    return BankDetails(
        account_holder=entity.bank_account_holder,
        bank_name=entity.bank_name,
        iban=entity.bank_iban,
        bic=entity.bank_bic,
        account_number=entity.bank_account_number,
        routing_number=entity.bank_routing_number,
        reference_format=reference,
    )


def _text(value: str | None, max_length: int, what: str, field: str) -> str | None:
    try:
        return clean_text(value, max_length=max_length, what=what)
    except DetailError as exc:
        raise BankError(str(exc), field) from None


def _compact(value: str | None, max_length: int, what: str, field: str) -> str | None:
    """A code typed with spaces or dashes ("DE89 3704 ..."), upper-cased, without them.
    The length allowed counts the grouping spaces a person types."""
    text = _text(value, max_length + max_length // 4 + 2, what, field)
    return None if text is None else "".join(text.split()).replace("-", "").upper()


def check_iban(value: str | None) -> str | None:
    compact = _compact(value, IBAN_MAX, "IBAN", "iban")
    if compact is None:
        return None
    if not IBAN_SHAPE.fullmatch(compact):
        raise BankError(
            "Enter an IBAN: a country code, two check digits and the account, like "
            "DE89 3704 0044 0532 0130 00.",
            "iban",
        )
    try:
        return str(stdnum_iban.validate(compact))
    except InvalidChecksum:
        raise BankError(
            "That IBAN's check digits do not match: check it for a typo, or a character "
            "too many or too few.",
            "iban",
        ) from None
    except StdnumError:  # a country without IBANs, or the wrong length or form for one
        raise BankError(
            f"That IBAN does not have the form of an IBAN of {compact[:2]}: check the "
            "country code and the number of characters.",
            "iban",
        ) from None


def check_bic(value: str | None) -> str | None:
    compact = _compact(value, BIC_MAX, "BIC", "bic")
    if compact is None:
        return None
    try:
        return str(stdnum_bic.validate(compact))
    except StdnumError:
        raise BankError(
            "Enter a BIC (SWIFT code) of 8 or 11 letters and digits, like COBADEFFXXX.", "bic"
        ) from None


def check_details(
    *,
    account_holder: str | None,
    bank_name: str | None,
    iban: str | None,
    bic: str | None,
    account_number: str | None,
    routing_number: str | None,
    reference_format: str | None,
) -> BankDetails:
    """The bank details staff entered, checked and normalised (IBAN and BIC compact and
    upper-case); every field empty clears them. Raises BankError naming the field."""
    holder = _text(account_holder, HOLDER_MAX, "account holder", "account_holder")
    bank = _text(bank_name, BANK_NAME_MAX, "bank name", "bank_name")
    clean_iban = check_iban(iban)
    clean_bic = check_bic(bic)
    number = _compact(account_number, ACCOUNT_NUMBER_MAX, "account number", "account_number")
    routing = _compact(routing_number, 9, "routing number", "routing_number")
    try:
        reference = ReferenceFormat(reference_format or ReferenceFormat.INVOICE_NUMBER)
    except ValueError:
        raise BankError("Choose how the payment reference is made.", "reference_format") from None

    if clean_iban is not None and (number is not None or routing is not None):
        raise BankError(
            "Enter an IBAN or an account and routing number, not both.", "account_number"
        )
    if clean_bic is not None and clean_iban is None:
        raise BankError("A BIC goes with an IBAN: enter the IBAN too.", "iban")
    if clean_iban is not None and clean_bic is not None and clean_bic[4:6] != clean_iban[:2]:
        raise BankError(
            f"That BIC is of a bank in {clean_bic[4:6]}, the IBAN of an account in "
            f"{clean_iban[:2]}: check both.",
            "bic",
        )
    if number is not None and not number.isdigit():
        raise BankError("An account number has digits only.", "account_number")
    if number is not None and len(number) < 4:
        raise BankError("An account number has at least 4 digits.", "account_number")
    if (number is None) != (routing is None):
        field = "routing_number" if routing is None else "account_number"
        raise BankError("Enter both the account number and the routing number.", field)
    if routing is not None:
        try:
            routing = str(rtn.validate(routing))
        except StdnumError:
            raise BankError(
                "Enter a 9-digit routing number (ABA); its check digit did not match.",
                "routing_number",
            ) from None
    present = clean_iban is not None or number is not None
    if present and holder is None:
        raise BankError("Enter the account holder's name, as the bank has it.", "account_holder")
    if not present and (holder is not None or bank is not None):
        raise BankError("Enter an IBAN, or an account and routing number.", "iban")
    return BankDetails(holder, bank, clean_iban, clean_bic, number, routing, reference)


# --- what an invoice shows ------------------------------------------------------------


def _one_line(value: str) -> str:
    """A text for one field of the QR payload: control and format characters (a newline
    would start the next field) become spaces, runs of spaces one."""
    cleaned = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in value
    )
    return " ".join(cleaned.split())


def payment_reference(details: BankDetails, invoice: Invoice) -> str:
    """The reference a customer quotes with the transfer."""
    number = _one_line(invoice.number)
    group_id = invoice.bill_group.external_id
    if details.reference_format == ReferenceFormat.GROUP_AND_INVOICE and group_id:
        return f"{_one_line(group_id)} {number}"
    return number


def format_iban(iban: str) -> str:
    """An IBAN in groups of four, as it is printed for people."""
    return str(stdnum_iban.format(iban))


def epc_amount(amount_minor: int) -> str:
    """EUR and the amount with a dot and two decimals: "EUR12.34"."""
    return f"EUR{Decimal(amount_minor).scaleb(-2):.2f}"


def _fit_bytes(text: str, limit: int) -> str:
    """The longest prefix of `text` whose UTF-8 is at most `limit` bytes."""
    encoded = text.encode("utf-8")[: max(limit, 0)]
    return encoded.decode("utf-8", "ignore").rstrip()


def epc_payload(*, name: str, iban: str, bic: str | None, amount_minor: int, reference: str) -> str:
    """The text of an EPC069-12 QR code (version 002, character set 1: UTF-8, which the
    standard allows for any Unicode name or reference), fields one per line:
    BCD, 002, 1, SCT, BIC, name, IBAN, amount, purpose, structured reference, text.
    An ISO 11649 creditor reference ("RF18 5390 0754 7034") goes in the structured field;
    any other reference in the unstructured text, cut to 140 characters, and shorter still
    if the whole would pass 331 bytes. Raises ValueError for an amount the standard does
    not allow (0.01 to 999,999,999.99)."""
    if not 1 <= amount_minor <= EPC_MAX_AMOUNT_MINOR:
        raise ValueError(f"An EPC QR code is for EUR 0.01 to 999,999,999.99, not {amount_minor}.")
    name = _one_line(name)[:HOLDER_MAX]
    reference = _one_line(reference)
    structured = ""
    text = reference[:EPC_TEXT_MAX]
    compact = reference.replace(" ", "").upper()
    if reference and len(compact) <= EPC_REFERENCE_MAX and iso11649.is_valid(compact):
        structured, text = compact, ""
    fields = ["BCD", "002", "1", "SCT", bic or "", name, iban, epc_amount(amount_minor), ""]
    fields.append(structured)
    head = "\n".join(fields)
    if text:
        room = EPC_PAYLOAD_MAX_BYTES - len(head.encode("utf-8")) - 1
        text = _fit_bytes(text, room)
    return f"{head}\n{text}" if text else head


def epc_qr(payload: str) -> Any:
    """The QR code of a payload, as segno's EPC helper (make_epc_qr) makes it: error
    correction M, never boosted, version 13 at most."""
    qr = segno.make_qr(payload.encode("utf-8"), error="m", boost_error=False)
    if not isinstance(qr.version, int) or qr.version > 13:
        raise ValueError("The EPC payload needs a QR code larger than version 13.")
    return qr


@dataclass(frozen=True)
class Transfer:
    """What an open invoice's page and PDF show for paying it by bank transfer."""

    details: BankDetails
    reference: str
    amount_minor: int
    currency: str
    epc_payload: str | None  # None: no QR code (not EUR, no IBAN, amount out of range)

    @property
    def amount_text(self) -> str:
        """The amount as a bank's form takes it: 1234.50, no currency or grouping."""
        return str(to_decimal(self.amount_minor, self.currency))

    @property
    def iban_display(self) -> str | None:
        return None if self.details.iban is None else format_iban(self.details.iban)

    def qr(self) -> Any:
        return None if self.epc_payload is None else epc_qr(self.epc_payload)

    def qr_svg(self) -> str | None:
        """The QR code as an inline <svg> (no script, no style: the CSP allows it)."""
        qr = self.qr()
        if qr is None:
            return None
        svg: str = qr.svg_inline(
            scale=4, border=4, dark="#000", light="#fff", svgclass="epc-qr", omitsize=False
        )
        return svg


def transfer_for(invoice: Invoice) -> Transfer | None:
    """The bank transfer details of an open invoice with a balance, when its seller has
    bank details; None for a draft, paid or void invoice, or a seller without any."""
    if invoice.status != InvoiceStatus.OPEN or invoice.balance_minor <= 0:
        return None
    details = details_of(invoice.entity)
    if not details.present or details.account_holder is None:
        return None
    reference = payment_reference(details, invoice)
    payload = None
    if (
        invoice.currency == "EUR"
        and details.iban is not None
        and invoice.balance_minor <= EPC_MAX_AMOUNT_MINOR
    ):
        payload = epc_payload(
            name=details.account_holder,
            iban=details.iban,
            bic=details.bic,
            amount_minor=invoice.balance_minor,
            reference=reference,
        )
    return Transfer(details, reference, invoice.balance_minor, invoice.currency, payload)
