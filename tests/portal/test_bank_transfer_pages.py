"""Paying by bank transfer on the customer's invoice page and in its PDF: the seller's
details with copy buttons and, for EUR, the EPC QR code; only on an open invoice with a
balance, only with bank details, and never for another bill group's invoice."""

from __future__ import annotations

import io
import re

import pytest
from pypdf import PdfReader

from portal import bank
from portal.models import InvoiceStatus
from portal.web import CSP
from tests.factories import add_payment, make_bill_group, make_invoice
from tests.portal.pages_helpers import url

IBAN = "DE89370400440532013000"


def with_bank_details(entity, **overrides) -> None:
    values = {
        "bank_account_holder": "Harbour Analytics GmbH",
        "bank_name": "Commerzbank",
        "bank_iban": IBAN,
        "bank_bic": "COBADEFFXXX",
        "bank_reference_format": "invoice_number",
    }
    for name, value in (values | overrides).items():
        setattr(entity, name, value)


def invoice_page(customer, group, invoice) -> str:
    response = customer.get(url(group, f"/invoices/{invoice.id}"))
    assert response.status_code == 200, response.status_code
    return response.text


def pdf_text(customer, group, invoice) -> str:
    response = customer.get(url(group, f"/invoices/{invoice.id}.pdf"))
    assert response.status_code == 200
    reader = PdfReader(io.BytesIO(response.data))
    return " ".join(" ".join(page.extract_text().split()) for page in reader.pages)


def test_an_open_eur_invoice_shows_the_details_the_copy_buttons_and_the_qr_code(
    db, group, customer
):
    with_bank_details(group.entity)
    invoice = make_invoice(db, group, number="INV-77", lines=[("Service", "1", 10000, 0)])
    add_payment(db, invoice, 1766)
    db.commit()
    page = invoice_page(customer, group, invoice)
    assert "Pay by bank transfer" in page
    assert "DE89 3704 0044 0532 0130 00" in page and f'data-copy-value="{IBAN}"' in page
    assert "COBADEFFXXX" in page and "Harbour Analytics GmbH" in page
    # Copy buttons start hidden (no dead button without JavaScript), copy.js shows them.
    assert re.search(r'data-copy-target="bank-iban"[^>]*hidden', page)
    assert 'data-copy-target="bank-reference"' in page and 'src="/static/copy.js' in page
    assert '<code id="bank-reference">INV-77</code>' in page
    # The QR code: inline SVG with a text alternative, no script or style for the CSP.
    assert re.search(r'<div role="img" aria-label="Payment QR code: €82.34 to Harbour', page)
    svg = re.search(r"<svg.*?</svg>", page, re.S)
    assert svg and "<script" not in svg[0] and "style=" not in svg[0]
    response = customer.get(url(group, f"/invoices/{invoice.id}"))
    assert response.headers["Content-Security-Policy"] == CSP  # no 'unsafe-inline' needed
    # The payload in the QR code: the open balance and the configured reference.
    transfer = bank.transfer_for(invoice)
    assert transfer is not None and transfer.epc_payload is not None
    assert transfer.epc_payload.split("\n")[5:] == [
        "Harbour Analytics GmbH",
        IBAN,
        "EUR82.34",
        "",
        "",
        "INV-77",
    ]


def test_the_pdf_shows_the_details_and_draws_the_qr_code(db, group, customer):
    with_bank_details(group.entity, bank_reference_format="group_and_invoice")
    group.external_id = "ACME-EU"
    invoice = make_invoice(db, group, number="INV-78", lines=[("Service", "1", 5000, 0)])
    db.commit()
    text = pdf_text(customer, group, invoice)
    assert "Pay by bank transfer" in text
    assert "DE89 3704 0044 0532 0130 00" in text and "COBADEFFXXX" in text
    assert "Reference ACME-EU INV-78" in text and "Amount €50.00" in text
    assert "scan the QR code" in text
    assert bank.transfer_for(invoice).epc_payload.endswith("\nACME-EU INV-78")


def test_a_us_account_has_no_qr_code(db, customer, group):
    with_bank_details(
        group.entity,
        bank_iban=None,
        bank_bic=None,
        bank_account_number="000123456789",
        bank_routing_number="111000025",
    )
    invoice = make_invoice(db, group)
    db.commit()
    page = invoice_page(customer, group, invoice)
    assert "000123456789" in page and "111000025" in page
    assert "<svg" not in page and "Payment QR code" not in page
    assert "000123456789" in pdf_text(customer, group, invoice)


@pytest.mark.parametrize("currency", ["GBP", "USD"])
def test_an_iban_but_not_eur_shows_details_without_a_qr_code(db, customer, currency):
    # A bill group in another currency, of a seller with an IBAN: no EPC QR code (EUR only).
    from tests.portal.pages_helpers import portal_group

    other = portal_group(db, name=f"Acme {currency}", currency=currency)
    with_bank_details(other.entity)
    invoice = make_invoice(db, other)
    db.commit()
    assert bank.transfer_for(invoice).epc_payload is None
    assert bank.transfer_for(invoice).iban_display == "DE89 3704 0044 0532 0130 00"


@pytest.mark.parametrize("status", [InvoiceStatus.PAID, InvoiceStatus.VOID, InvoiceStatus.DRAFT])
def test_paid_void_and_draft_invoices_show_no_details(db, group, customer, status):
    with_bank_details(group.entity)
    invoice = make_invoice(db, group, status=status)
    db.commit()
    if status != InvoiceStatus.DRAFT:  # a draft is not the customer's to see at all
        page = invoice_page(customer, group, invoice)
        assert "Pay by bank transfer" not in page and "DE89" not in page and "<svg" not in page
        assert "Pay by bank transfer" not in pdf_text(customer, group, invoice)
    assert bank.transfer_for(invoice) is None


def test_an_open_invoice_paid_in_full_shows_no_details(db, group, customer):
    with_bank_details(group.entity)
    invoice = make_invoice(db, group, lines=[("Service", "1", 1000, 0)])
    add_payment(db, invoice, 1000)
    invoice.status = InvoiceStatus.OPEN
    db.commit()
    assert "Pay by bank transfer" not in invoice_page(customer, group, invoice)


def test_without_bank_details_nothing_is_shown(db, group, customer):
    invoice = make_invoice(db, group)
    db.commit()
    page = invoice_page(customer, group, invoice)
    assert "Pay by bank transfer" not in page and "copy.js" not in page
    assert "Pay by bank transfer" not in pdf_text(customer, group, invoice)


def test_another_bill_groups_invoice_is_never_shown(db, group, customer):
    theirs = make_bill_group(db, name="Someone else")
    with_bank_details(theirs.entity, bank_account_holder="Their Seller Ltd")
    invoice = make_invoice(db, theirs, number="THEIRS-1")
    db.commit()
    for path in (f"/invoices/{invoice.id}", f"/invoices/{invoice.id}.pdf"):
        response = customer.get(url(group, path))
        assert response.status_code == 404
        assert b"Their Seller" not in response.data and b"THEIRS-1" not in response.data


def test_markup_in_the_details_is_text(db, group, customer):
    with_bank_details(group.entity, bank_account_holder='<img src=x onerror="alert(1)">')
    invoice = make_invoice(db, group, number='INV-<b>"9')
    db.commit()
    page = invoice_page(customer, group, invoice)
    assert '<img src=x onerror="alert(1)">' not in page
    assert "&lt;img src=x onerror=" in page
    assert "<b>" not in page.split("bank-transfer-heading")[1]
