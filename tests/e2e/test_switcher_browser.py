"""One sign-in, several bill groups, and signed-in devices, in a real browser: sign in to
Acme UK, switch to Acme US without an email, follow a link to a UK page (one click back),
see both browsers under Signed-in devices and sign the other one out."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import NewContext, Portal, sign_in

pytestmark = pytest.mark.e2e

ACME_UK = "Acme UK operations"
ACME_US = "Acme US operations"
ADDRESS = "switcher@acme.com"


def test_customer_switches_bill_groups_and_signs_out_another_device(
    new_context: NewContext, portal: Portal
):
    laptop = new_context().new_page()
    phone = new_context().new_page()
    sign_in(phone, portal, ACME_US, ADDRESS)
    sign_in(laptop, portal, ACME_UK, ADDRESS)
    emails = portal.mail_count(ADDRESS)

    # The header lists the other Acme group; one click, no email.
    laptop.locator(".switcher summary").click()
    laptop.get_by_role("button", name=f"{ACME_US} (USD)").click()
    expect(laptop.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    expect(laptop.locator(".bill-group")).to_have_text(ACME_US)
    assert portal.mail_count(ADDRESS) == emails

    # A link to a page of the other group (as in an email): "Switch to", then that page.
    laptop.goto(portal.link(ACME_UK) + "/invoices")
    expect(laptop.get_by_role("heading", name=f"Switch to {ACME_UK}")).to_be_visible()
    laptop.get_by_role("button", name=f"Switch to {ACME_UK}").click()
    expect(laptop.get_by_role("heading", name="Invoices", exact=True)).to_be_visible()
    expect(laptop.locator(".bill-group")).to_have_text(ACME_UK)
    assert portal.mail_count(ADDRESS) == emails

    # Both browsers are listed, across the two groups; sign the phone out.
    laptop.get_by_role("link", name="Signed-in devices").click()
    expect(laptop.get_by_role("heading", name="Signed-in devices")).to_be_visible()
    rows = laptop.locator("table.devices tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="This device")).to_have_count(1)
    expect(rows.filter(has_text=f"{ACME_US} (USD)")).to_have_count(1)
    rows.filter(has_not_text="This device").get_by_role(
        "button", name=re.compile("^Sign out")
    ).click()
    expect(laptop.get_by_text(re.compile(r"^Signed out "))).to_be_visible()
    expect(laptop.locator("table.devices tbody tr")).to_have_count(1)

    phone.reload()
    expect(phone.get_by_role("heading", name="Sign in to your billing portal")).to_be_visible()
    # The laptop is still in.
    laptop.goto(portal.link(ACME_UK) + "/overview")
    expect(laptop.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
