"""The seller's app signs its customer in through the API, in a real browser: an admin
makes a `sessions` key and allows the app's origin on the staff pages, the app asks for
a portal session, the customer's browser follows the link, presses Continue, lands on
the invoices and can go back to the app. The link works once."""

from __future__ import annotations

import json
import re
import urllib.request

from playwright.sync_api import expect

from tests.e2e.conftest import SCREENSHOTS, NewContext, Portal, staff_sign_in

ACME_UK = "Acme UK operations"
APP_ORIGIN = "http://localhost:3000"  # allowed for the demo seller by `flask demo`
KEY_RE = re.compile(r"bp_[A-Za-z0-9_-]{43}")


def _post(portal: Portal, key: str, body: dict[str, object]) -> tuple[int, dict]:
    request = urllib.request.Request(
        portal.url("/api/v1/portal-sessions"),
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_the_sellers_app_signs_its_customer_in(new_context: NewContext, portal: Portal):
    staff = new_context().new_page()
    staff_sign_in(staff, portal)
    staff.get_by_role("navigation", name="Staff").get_by_role("link", name="API keys").click()
    staff.get_by_label("Name").fill("Northwind app")
    staff.get_by_label("read").uncheck()
    staff.get_by_label("sessions").check()
    staff.get_by_role("button", name="Create key").click()
    key = KEY_RE.search(staff.content())
    assert key, "the new key was not shown"
    staff.get_by_role("navigation", name="Staff").get_by_role("link", name="Return origins").click()
    expect(staff.get_by_role("heading", name="Return origins")).to_be_visible()
    expect(staff.get_by_text(APP_ORIGIN, exact=True)).to_be_visible()

    group = portal.groups[ACME_UK]
    status, made = _post(
        portal,
        key.group(0),
        {
            "bill_group": "demo-acme-uk",
            "email": group.address,
            "path": "/invoices",
            "return_url": f"{APP_ORIGIN}/account",
        },
    )
    assert status == 201, made
    assert made["url"].startswith(portal.url(f"{group.path}/session/"))

    page = new_context().new_page()
    page.goto(made["url"])
    expect(page.get_by_role("heading", name=f"Continue to {ACME_UK}")).to_be_visible()
    assert "/session/" not in page.url  # the token left the address bar
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/invoices$"))
    expect(page.get_by_role("heading", name="Invoices", exact=True)).to_be_visible()
    back = page.get_by_role("link", name="Back to Northwind Cloud")
    expect(back).to_have_attribute("href", f"{APP_ORIGIN}/account")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "portal-session-invoices.png"), full_page=True)

    # Once only: a second browser with the same link gets the neutral page.
    late = new_context().new_page()
    late.goto(made["url"])
    expect(late.get_by_text("This sign-in link cannot be used")).to_be_visible()

    # An address no rule admits: 422 with the reason, for the app's developer.
    status, refused = _post(
        portal, key.group(0), {"bill_group": "demo-acme-uk", "email": "ap@evilacme.com"}
    )
    assert status == 422
    assert refused["error"]["message"].startswith("No access rule of this bill group admits")
