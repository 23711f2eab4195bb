"""Company single sign-on in the browser: an admin sets up Acme sign-in on a domain rule,
a customer at that domain signs in through oidc-provider-mock's own login page, an
unverified address is refused, and "required" sends the customer there instead of
mailing a link. Screenshots and the axe scan of every portal page on the way (the
Tour of test_accessibility.py), and the Nu HTML Checker over them at the end (that
module's check runs before this file, so this file checks its own pages).

The company sign-in is removed again at the end, so the other journeys see Acme US
operations as the demo made it.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import ARTIFACTS, NewContext, Portal, ask_for_link, open_bill_group
from tests.e2e.conftest import staff_sign_in as sign_in_staff
from tests.e2e.nu import Batch, allowed_warnings
from tests.e2e.test_accessibility import Tour, heading
from tests.oidc_mock import OidcMock

pytestmark = pytest.mark.e2e

ACME_US = "Acme US operations"
SSO_PAGE = re.compile(r"/access/rules/\d+/sso$")


def open_sso_settings(page: Page) -> None:
    open_bill_group(page, "Acme Corporation", ACME_US)
    page.get_by_role("link", name="Access settings").click()
    page.locator("#sso").get_by_role("link", name=re.compile("company sign-in")).click()
    page.wait_for_url(SSO_PAGE)
    heading(page, re.compile("^Company sign-in"))


def save_sso(page: Page, mode: str) -> None:
    page.get_by_label("How customers at this domain sign in").select_option(mode)
    page.get_by_role("button", name="Save company sign-in").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved: people at acme.com")


def through_the_provider(page: Page, oidc_mock: OidcMock, sub: str) -> None:
    """On the mock provider's login page: type the subject, press Authorize."""
    page.wait_for_url(re.compile(re.escape(oidc_mock.url) + "/oauth2/authorize"))
    expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()
    page.get_by_placeholder("sub").fill(sub)
    page.get_by_role("button", name="Authorize").click()


def test_customer_signs_in_with_company_sign_in(
    new_context: NewContext, portal: Portal, oidc_mock: OidcMock, tmp_path
):
    batch = Batch(tmp_path / "nu")
    tour = Tour("sso", batch)
    staff = tour.watch(new_context(bypass_csp=True).new_page())
    sign_in_staff(staff, portal)
    open_sso_settings(staff)
    tour(staff, "staff-sso-settings")

    # A provider that does not answer is caught when saving, with a message.
    staff.get_by_label("Company name").fill("Acme")
    staff.get_by_label("Issuer URL").fill("http://127.0.0.1:9")
    staff.get_by_label("Client id").fill("billing-portal-e2e")
    staff.get_by_label("Client secret").fill("e2e-client-secret")
    staff.get_by_role("button", name="Save company sign-in").click()
    expect(staff.locator("#issuer-error")).to_contain_text("Could not read the provider")
    tour(staff, "staff-sso-settings-error")
    expect(staff.get_by_label("Client secret")).to_have_value("")  # never shown back

    settings_url = staff.url
    staff.get_by_label("Issuer URL").fill(oidc_mock.url)
    staff.get_by_label("Client secret").fill("e2e-client-secret")
    save_sso(staff, "offered")
    expect(staff.locator("#sso")).to_contain_text("Acme sign-in, offered")
    try:
        # The good sign-in, through the provider's login page.
        oidc_mock.set_user("sso-e2e", {"email": "sso-e2e@acme.com", "email_verified": True})
        customer = tour.watch(new_context(bypass_csp=True).new_page())
        ask_for_link(customer, portal, ACME_US, "sso-e2e@acme.com")
        tour(customer, "check-email-with-company-sign-in")
        customer.get_by_role("link", name="Continue with Acme sign-in").click()
        through_the_provider(customer, oidc_mock, "sso-e2e")
        heading(customer, "Overview")
        expect(customer.get_by_text("sso-e2e@acme.com").first).to_be_visible()
        tour(customer, "overview-after-company-sign-in")

        # An address the provider has not verified: refused, nobody signed in.
        oidc_mock.set_user("sso-unverified", {"email": "u@acme.com", "email_verified": False})
        refused = tour.watch(new_context(bypass_csp=True).new_page())
        ask_for_link(refused, portal, ACME_US, "u@acme.com")
        refused.get_by_role("link", name="Continue with Acme sign-in").click()
        through_the_provider(refused, oidc_mock, "sso-unverified")
        heading(refused, "We could not sign you in")
        tour(refused, "company-sign-in-refused")
        refused.goto(portal.link(ACME_US) + "/overview")
        heading(refused, "Sign in to your billing portal")

        # Required: no email, the page says where to sign in.
        staff.goto(settings_url)
        save_sso(staff, "required")
        required = tour.watch(new_context(bypass_csp=True).new_page())
        before = portal.mail_count("sso-req@acme.com")
        required.goto(portal.link(ACME_US))
        required.get_by_label("Work email address").fill("sso-req@acme.com")
        required.get_by_role("button", name="Email me a sign-in link").click()
        heading(required, "Sign in with Acme sign-in")
        tour(required, "company-sign-in-required")
        portal.no_email("sso-req@acme.com", before, timeout=2)
    finally:
        staff.goto(settings_url)
        if staff.get_by_role("button", name="Remove company sign-in").count():
            staff.get_by_role("button", name="Remove company sign-in").click()
            expect(staff.get_by_role("status").first).to_contain_text("Removed company sign-in")
    tour.finish()

    findings = batch.check()
    allowed = allowed_warnings()
    failing = [f for f in findings if f.kind == "error" or f.message not in allowed]
    (ARTIFACTS / "nu-sso.txt").write_text("\n".join(map(str, findings)) + "\n")
    assert not failing, "Nu HTML Checker findings:\n" + "\n".join(map(str, failing))
