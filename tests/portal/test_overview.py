"""The overview page (PRODUCT.md journey 5): balances, overdue invoices, no drafts."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from portal.models import (
    InvoiceStatus,
)
from tests.factories import TODAY, add_payment, make_invoice, make_payment_method
from tests.portal.pages_helpers import (
    csv_rows,
    listed,
    url,
)

pytestmark = pytest.mark.usefixtures("clock")  # midday on TODAY, whatever the wall clock says


# --- overview -------------------------------------------------------------------------------


def test_overview_figures(db, group, customer):
    day = dt.timedelta(days=1)
    # 120.00 open, 60.00 overdue, 240.00 overdue of which 100.00 paid: 320.00 outstanding,
    # two overdue for 200.00. Paid, void and draft invoices owe nothing.
    make_invoice(db, group, number="OPEN-1", issue_date=TODAY - 5 * day)
    make_invoice(
        db,
        group,
        number="LATE-1",
        issue_date=TODAY - 40 * day,
        due_date=TODAY - day,
        lines=[("Support", "1", 5000, 2000)],
    )
    part_paid = make_invoice(
        db,
        group,
        number="LATE-2",
        issue_date=TODAY - 70 * day,
        due_date=TODAY - 40 * day,
        lines=[("Licences", "2", 10000, 2000)],
    )
    add_payment(db, part_paid, 10000, reference="BACS-1")
    make_invoice(db, group, number="PAID-1", status=InvoiceStatus.PAID)
    make_invoice(db, group, number="VOID-1", status=InvoiceStatus.VOID)
    make_invoice(
        db,
        group,
        number="DRAFT-1",
        status=InvoiceStatus.DRAFT,
        issue_date=TODAY,
        lines=[("Not yet", "1", 999900, 0)],
    )
    make_payment_method(db, group, brand="visa", last4="4242")
    make_payment_method(db, group, brand="mastercard", last4="4444", is_default=True)
    db.commit()

    page = customer.get(url(group, "/overview")).text

    assert re.search(r"<dt>Outstanding balance</dt><dd>€320\.00</dd>", page)
    alert = re.search(r'<div class="alert" role="alert">(.*?)</div>', page, re.S)[1]
    assert "2 invoices are overdue" in alert and "€200.00 in total" in alert
    assert "status=overdue" in alert
    assert "<dt>Default payment method</dt><dd>Mastercard ending 4444</dd>" in page
    assert "Visa ending 4242" not in page
    assert "DRAFT-1" not in page
    assert set(listed(page)) == {"OPEN-1", "LATE-1", "LATE-2", "PAID-1", "VOID-1"}


def test_overview_without_overdue_invoices_has_no_alert(db, group, customer):
    make_invoice(db, group, number="OPEN-1", issue_date=TODAY)
    db.commit()
    page = customer.get(url(group, "/overview")).text
    assert 'role="alert"' not in page
    assert "<dt>Outstanding balance</dt><dd>€120.00</dd>" in page
    assert "<dt>Default payment method</dt><dd>None</dd>" in page


def test_drafts_are_never_shown(db, group, customer):
    draft = make_invoice(db, group, number="DRAFT-7", status=InvoiceStatus.DRAFT)
    make_invoice(db, group, number="OPEN-7")
    db.commit()

    assert listed(customer.get(url(group, "/invoices")).text) == ["OPEN-7"]
    assert listed(customer.get(url(group, "/invoices?number=draft")).text) == []
    exported = customer.get(url(group, "/invoices.csv"), buffered=True).text
    assert [row[0] for row in csv_rows(exported)[1:]] == ["OPEN-7"]
    assert customer.get(url(group, f"/invoices/{draft.id}")).status_code == 404
    assert customer.get(url(group, f"/invoices/{draft.id}.pdf")).status_code == 404
    assert "DRAFT-7" not in customer.get(url(group, "/overview")).text
