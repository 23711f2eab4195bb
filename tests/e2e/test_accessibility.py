"""Every customer and staff page: a screenshot at 1280 and at 375 px wide, and an
axe-core scan (npm package axe-core, pinned in package.json; `npm ci` installs it).

Screenshots go to artifacts/screenshots/<audience>-<nn>-<page>-<width>.png, and every
axe finding (of any impact) to artifacts/axe-<audience>.json. A test fails on any
"serious" or "critical" violation, listing them by rule id, page and target.

The pages are reached as a person reaches them, including the states in between: a
form with errors, a declined card, a link opened in another browser, a used link.
Nothing here changes what other tests rely on (errors save nothing; the one sign-in is
for this module's own address).

The contexts here use Playwright's bypass_csp: the app's Content-Security-Policy
(default-src 'self') blocks the inline <script> that add_script_tag injects, so axe
could not run otherwise. The app has no inline styles or scripts, so the pages render
the same with or without it; the journeys (test_journeys.py) run with the CSP on.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from flask import render_template
from playwright.sync_api import Page, Response, expect

from portal.app import create_app
from portal.forms import ButtonForm
from portal.models import BillGroup, Entity
from portal.web import ERROR_TEXT, error_page
from tests.conftest import TEST_CONFIG
from tests.e2e.conftest import (
    ARTIFACTS,
    AXE,
    DESKTOP,
    DIRECT,
    MOBILE,
    SCREENSHOTS,
    SIGN_IN_SUBJECT,
    NewContext,
    Portal,
    ask_for_link,
    link_and_code,
    open_bill_group,
    portal_nav,
    require,
    sign_in,
    staff_sign_in,
)
from tests.e2e.nu import Batch, allowed_warnings
from tests.email_kinds import every_kind

pytestmark = pytest.mark.e2e

FAILING_IMPACTS = ("serious", "critical")
ACME_UK = "Acme UK operations"
ACME_US = "Acme US operations"
GLOBEX = "Globex annual licences"
LEGACY = "Initech legacy support (contract ended)"

AXE_RUN = """async () => {
  const results = await axe.run(document, { resultTypes: ["violations"] });
  return results.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    targets: v.nodes.map(n => n.target.join(" ")),
  }));
}"""


class Tour:
    """Screenshots and axe for each page visited, at both widths, and the page's HTML as
    the server sent it (not the DOM the browser made of it) for the Nu HTML Checker."""

    def __init__(self, audience: str, batch: Batch) -> None:
        require(AXE, "axe-core", "run `npm ci` in the repository root (CI does)")
        self.audience = audience
        self.batch = batch
        self.count = 0
        self.findings: dict[str, list[dict]] = {}
        self.documents: dict[Page, Response] = {}
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for old in SCREENSHOTS.glob(f"{audience}-*.png"):
            old.unlink()

    def watch(self, page: Page) -> Page:
        """Keep the last document each navigation of `page` received (before any use)."""

        def seen(response: Response) -> None:
            request = response.request
            if request.resource_type == "document" and request.frame == page.main_frame:
                self.documents[page] = response

        page.on("response", seen)
        return page

    def __call__(self, page: Page, name: str) -> None:
        """Record the page the browser is on now, under `name`."""
        page.wait_for_load_state("load")
        self.count += 1
        document = self.documents.get(page)
        assert document is not None, "the page was not watched: tour.watch(page) first"
        here = page.url.partition("#")[0]  # a fragment is not part of the request
        assert document.url == here, f"{name}: the last document is {document.url}"
        self.batch.add(f"{self.audience}-{self.count:02d}-{name}", document.body())
        for width, viewport in (("1280", DESKTOP), ("375", MOBILE)):
            page.set_viewport_size(viewport)
            path = SCREENSHOTS / f"{self.audience}-{self.count:02d}-{name}-{width}.png"
            page.screenshot(path=str(path), full_page=True, animations="disabled")
            if page.evaluate("typeof window.axe") == "undefined":
                page.add_script_tag(path=str(AXE))
            for finding in page.evaluate(AXE_RUN):
                finding["url"] = page.url
                self.findings.setdefault(f"{name} @{width}", []).append(finding)
        page.set_viewport_size(DESKTOP)

    def finish(self) -> None:
        report = ARTIFACTS / f"axe-{self.audience}.json"
        report.write_text(json.dumps(self.findings, indent=2))
        failing = [
            f"{f['impact']:8} {f['id']:28} {where}: {target}"
            for where, found in self.findings.items()
            for f in found
            if f["impact"] in FAILING_IMPACTS
            for target in f["targets"]
        ]
        others = sorted(
            {f"{f['impact']} {f['id']}" for found in self.findings.values() for f in found}
        )
        print(f"{self.audience}: {self.count} pages, screenshots in {SCREENSHOTS}")
        print(f"axe findings (all impacts) in {report}: {others or 'none'}")
        assert not failing, (
            f"axe: serious or critical violations on {self.audience} pages "
            f"(details in {report}):\n" + "\n".join(failing)
        )


def heading(page: Page, name: str | re.Pattern[str]) -> None:
    expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()


def tour_portal_page(page: Page, tour: Tour, name: str, prefix: str = "") -> None:
    """Open a portal page from the portal's navigation and tour it."""
    portal_nav(page, name)
    heading(page, name)
    tour(page, prefix + name.lower().replace(" ", "-"))


def refused_then_created(
    page: Page,
    tour: Tour,
    name: str,
    label: str,
    values: tuple[str, str],
    button: str,
    created: str,
) -> None:
    """Submit a create form with a value it refuses, then one it takes; tour the form with
    its error and the page that shows the new secret once, then leave that page."""
    refused, taken = values
    field = page.get_by_label(label)
    field.fill(refused)
    page.get_by_role("button", name=button).click()
    expect(page.locator(f"#{field.get_attribute('id')}-error")).to_be_visible()
    tour(page, f"{name}s-error")
    page.get_by_label(label).fill(taken)
    page.get_by_role("button", name=button).click()
    heading(page, created)
    tour(page, f"{name}-created")
    page.get_by_role("link", name="I have copied it").click()


def test_every_customer_page(new_context: NewContext, portal: Portal, nu_batch: Batch):
    tour = Tour("customer", nu_batch)
    address = "a11y@acme.com"
    page = tour.watch(new_context(bypass_csp=True).new_page())

    page.goto(portal.url("/"))
    heading(page, "Billing portal")
    tour(page, "public-home")

    page.goto(portal.link(ACME_UK))
    heading(page, "Sign in to your billing portal")
    tour(page, "sign-in")
    page.get_by_role("button", name="Email me a sign-in link").click()
    expect(page.get_by_text("Enter your email address.")).to_be_visible()
    tour(page, "sign-in-error")

    before = ask_for_link(page, portal, ACME_UK, address)
    tour(page, "check-email")
    page.get_by_label("Code from the email").fill("0000-0000")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("That code is not right")).to_be_visible()
    tour(page, "check-email-wrong-code")

    link, _code = link_and_code(portal.next_email(address, before, SIGN_IN_SUBJECT))
    elsewhere = tour.watch(new_context(bypass_csp=True).new_page())
    elsewhere.goto(link)
    heading(elsewhere, "Open the link where you asked for it")
    tour(elsewhere, "other-browser")

    page.goto(link)
    heading(page, f"Sign in to {ACME_UK}")
    tour(page, "confirm")
    page.get_by_role("button", name="Continue").click()
    heading(page, "Overview")
    tour(page, "overview")

    tour_portal_page(page, tour, "Invoices")
    page.get_by_label("Status").select_option("overdue")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"status=overdue"))
    heading(page, "Invoices")
    tour(page, "invoices-overdue")
    page.get_by_role("link", name=re.compile(r"^NW-\d{4}-\d{5}$")).first.click()
    heading(page, re.compile(r"^Invoice NW-"))
    tour(page, "invoice")
    page.get_by_role("link", name="Ask a question or dispute this invoice").click()
    heading(page, re.compile(r"^Question or dispute: invoice NW-"))
    tour(page, "dispute-form")
    page.get_by_label("Dispute this invoice").check()
    page.get_by_role("button", name="Send to the billing team").click()
    expect(page.locator("#reason-error")).to_be_visible()
    tour(page, "dispute-form-error")
    page.get_by_label("Ask a question about this invoice").check()
    page.get_by_label("Your message").fill("Which seats does line 2 cover?")
    page.get_by_role("button", name="Send to the billing team").click()
    expect(page.get_by_text("Which seats does line 2 cover?")).to_be_visible()
    tour(page, "invoice-with-question")

    tour_portal_page(page, tour, "Subscriptions")
    page.get_by_role("link", name="Change plan").click()
    heading(page, re.compile(r"^Change plan: "))
    tour(page, "subscription-change")
    page.get_by_role("button", name="Review the change").click()
    expect(page.locator("#plan-error")).to_be_visible()
    tour(page, "subscription-change-error")
    page.get_by_label(re.compile(r"^Business: ")).check()
    page.get_by_role("button", name="Review the change").click()
    heading(page, "Review your change")
    tour(page, "subscription-review")

    tour_portal_page(page, tour, "Billing details")
    page.get_by_label("VAT number").fill("GB123")
    page.get_by_role("button", name="Save billing details").click()
    expect(page.locator(".error-message").first).to_be_visible()
    tour(page, "billing-details-error")

    tour_portal_page(page, tour, "Contacts")
    for kind in ("billing", "shipping"):
        portal_nav(page, "Contacts")
        page.get_by_role("link", name=f"Change {kind} contact").click()
        heading(page, f"{kind.capitalize()} contact")
        tour(page, f"contact-{kind}")

    tour_portal_page(page, tour, "Payment methods")
    page.get_by_role("link", name="Add a card").click()
    heading(page, "Add a card")
    tour(page, "add-card")
    page.get_by_label("Name on card").fill("Declined Card")
    page.get_by_label("Card number").fill("4000 0000 0000 0002")
    page.get_by_label("Month (MM)").fill("12")
    page.get_by_label("Year (YY)").fill("39")
    page.get_by_label("Security code").fill("123")
    page.get_by_role("button", name="Add card").click()
    expect(page.locator(".error-message").first).to_be_visible()
    tour(page, "add-card-declined")

    portal_nav(page, "Credits")
    heading(page, "Credits")
    tour(page, "credits")
    page.get_by_label("Amount").fill("99999999")
    page.get_by_role("button", name="Apply credit").click()
    expect(page.locator(".error-message").first).to_be_visible()
    tour(page, "credits-error")

    portal_nav(page, "Statement")
    heading(page, "Statement of account")
    tour(page, "statement")
    page.goto(portal.url(portal.groups[ACME_UK].path + "/statement?from=2026-12-01&to=2026-01-01"))
    expect(page.locator(".error-message").first).to_be_visible()
    tour(page, "statement-error")

    # Signed-in devices, the header's bill-group switcher (open), the "Switch to" page of
    # a link to another bill group, then back (the rest of the tour is Acme UK's).
    page.get_by_role("link", name="Signed-in devices").click()
    heading(page, "Signed-in devices")
    tour(page, "devices")
    page.locator(".switcher summary").click()
    expect(page.get_by_role("button", name=f"{ACME_US} (USD)")).to_be_visible()
    tour(page, "switcher-open")
    page.goto(portal.link(ACME_US) + "/invoices")
    heading(page, f"Switch to {ACME_US}")
    tour(page, "switch-confirm")
    page.get_by_role("button", name=f"Switch to {ACME_US}").click()
    heading(page, "Invoices")
    page.locator(".switcher summary").click()
    page.get_by_role("button", name=f"{ACME_UK} (GBP)").click()
    heading(page, "Invoices")

    page.goto(portal.url(portal.groups[ACME_UK].path + "/no-such-page"))
    heading(page, "Page not found")
    tour(page, "not-found")

    page.goto(portal.link(ACME_UK) + "/overview")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You have signed out.")).to_be_visible()
    tour(page, "signed-out")

    page.goto(link)
    heading(page, "This sign-in link cannot be used")
    tour(page, "link-invalid")

    page.goto(portal.link(LEGACY))
    expect(page.locator("main h1")).to_be_visible()
    tour(page, "unavailable")

    tour.finish()


def test_every_change_history_and_invoice_copy_page(
    new_context: NewContext, portal: Portal, nu_batch: Batch
):
    """The change history, the invoice-copy recipients (empty, refused, pending,
    confirmed), and the pages a recipient reaches from its confirmation email."""
    tour = Tour("invoice-copies", nu_batch)
    inbox = "ap-a11y@acme-payables.com"
    page = tour.watch(new_context(bypass_csp=True).new_page())
    sign_in(page, portal, ACME_UK, "a11y-copies@acme.com")

    portal_nav(page, "Billing details")
    page.get_by_role("link", name="Change history").click()
    heading(page, "Change history")
    tour(page, "change-history")

    portal_nav(page, "Billing details")
    page.get_by_role("link", name="Invoice copies").click()
    heading(page, "Invoice copies")
    tour(page, "invoice-copies")
    page.get_by_label("Email address").fill("a@acme-payables.com; b@acme-payables.com")
    page.get_by_role("button", name="Add address").click()
    expect(page.locator(".error-message").first).to_be_visible()
    tour(page, "invoice-copies-error")
    before = portal.mail_count(inbox)
    page.get_by_label("Email address").fill(inbox)
    page.get_by_role("button", name="Add address").click()
    expect(page.get_by_text("Awaiting confirmation")).to_be_visible()
    tour(page, "invoice-copies-pending")

    asked = portal.next_email(inbox, before, "Confirm you want copies")
    text = asked.get_body(preferencelist=("plain",)).get_content()
    found = re.search(r"https?://\S+/invoice-copies/confirm/\S+", text)
    assert found, text
    theirs = tour.watch(new_context(bypass_csp=True).new_page())
    theirs.goto(found.group(0))
    heading(theirs, "Confirm you want invoice copies")
    tour(theirs, "invoice-copy-confirm")
    theirs.get_by_role("button", name="Confirm").click()
    heading(theirs, "Address confirmed")
    tour(theirs, "invoice-copy-confirmed")
    theirs.goto(found.group(0))
    heading(theirs, "This link cannot be used")
    tour(theirs, "invoice-copy-link-invalid")

    page.reload()
    expect(page.get_by_text("Confirmed", exact=True)).to_be_visible()
    tour(page, "invoice-copies-confirmed")
    portal_nav(page, "Billing details")
    page.get_by_role("link", name="Change history").click()
    heading(page, "Change history")
    tour(page, "change-history-with-changes")

    # Leave the demo as it was: remove the address again.
    portal_nav(page, "Billing details")
    page.get_by_role("link", name="Invoice copies").click()
    page.get_by_role("row").filter(has_text=inbox).get_by_role("button", name="Remove").click()
    expect(page.get_by_text(f"{inbox} no longer receives invoice copies")).to_be_visible()
    tour.finish()


def test_every_paying_page(new_context: NewContext, portal: Portal, nu_batch: Batch):
    """The pay form, review, each outcome (declined, 3-D Secure, received, pending), the
    sandbox's security check and the payment history, on Acme US operations, paying part
    amounts only so its invoices stay open for the journeys."""
    tour = Tour("paying", nu_batch)
    page = tour.watch(new_context(bypass_csp=True).new_page())
    sign_in(page, portal, ACME_US, "a11y-pay@acme.com")

    def pay_with(number: str, last4: str, amount: str) -> None:
        page.goto(portal.link(ACME_US) + "/pay")
        heading(page, "Pay")
        page.get_by_role("link", name="Add a new card").click()
        heading(page, "Add a card")
        page.get_by_label("Name on card").fill("Accounts Payable")
        page.get_by_label("Card number").fill(number)
        page.get_by_label("Month (MM)").fill("12")
        page.get_by_label("Year (YY)").fill("39")
        page.get_by_label("Security code").fill("123")
        page.get_by_role("button", name="Add card").click()
        heading(page, "Pay")
        page.get_by_role("radio", name=re.compile(f"ending {last4}$")).last.check()
        page.get_by_label("Amount to pay").fill(amount)
        page.get_by_role("button", name="Review payment").click()
        heading(page, "Review your payment")

    page.goto(portal.link(ACME_US) + "/overview")
    page.get_by_role("button", name="Pay outstanding balance").click()
    heading(page, "Pay")
    tour(page, "pay-form")
    page.get_by_label("Amount to pay").fill("0.10")
    page.get_by_role("button", name="Review payment").click()
    expect(page.locator(".error-message").first).to_be_visible()
    tour(page, "pay-form-error")

    pay_with("4000 0000 0000 0341", "0341", "2.00")
    tour(page, "pay-review")
    page.get_by_role("button", name=re.compile(r"^Pay \S*2\.00$")).click()
    heading(page, "Payment declined")
    tour(page, "pay-declined")

    pay_with("4000 0027 6000 3184", "3184", "3.00")
    page.get_by_role("button", name=re.compile(r"^Pay \S*3\.00$")).click()
    heading(page, "Confirm this payment")
    tour(page, "sandbox-3ds")
    page.get_by_role("button", name="Approve").click()
    heading(page, "Payment received")
    tour(page, "pay-received")

    pay_with("4000 0000 0000 0259", "0259", "4.00")
    page.get_by_role("button", name=re.compile(r"^Pay \S*4\.00$")).click()
    heading(page, re.compile(r"^Payment (being processed|received)$"))
    tour(page, "pay-processing")

    page.goto(portal.link(ACME_US) + "/payments")
    heading(page, "Payments")
    tour(page, "payments")
    page.goto(portal.link(ACME_US) + "/payments?from=nonsense")
    heading(page, "Payments")
    tour(page, "payments-error")
    tour.finish()


def test_every_staff_page(new_context: NewContext, portal: Portal, nu_batch: Batch):
    tour = Tour("staff", nu_batch)
    page = tour.watch(new_context(bypass_csp=True).new_page())

    page.goto(portal.url("/admin/sign-in"))
    heading(page, "Staff sign-in")
    tour(page, "sign-in")
    page.get_by_label("Email address").fill(portal.staff_email)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".error-message, [role=alert]").first).to_be_visible()
    tour(page, "sign-in-error")

    staff_sign_in(page, portal)
    tour(page, "home")
    page.get_by_role("link", name="set up two-step sign-in").click()
    heading(page, "Set up two-step sign-in")
    tour(page, "enrol")
    page.go_back()  # the enrol page has no navigation of its own
    heading(page, "Billing portal staff")

    nav = page.get_by_role("navigation", name="Staff")
    nav.get_by_role("link", name="Accounts").click()
    heading(page, "Accounts")
    tour(page, "accounts")
    page.get_by_role("link", name="Add an account").click()
    expect(page.locator("main h1")).to_be_visible()
    tour(page, "account-new")
    nav.get_by_role("link", name="Accounts").click()
    page.get_by_role("link", name="Acme Corporation", exact=True).click()
    heading(page, "Acme Corporation")
    tour(page, "account")
    page.get_by_role("link", name="Edit account").click()
    expect(page.locator("main h1")).to_be_visible()
    tour(page, "account-edit")
    page.go_back()
    page.get_by_role("link", name="Add a bill group").click()
    expect(page.locator("main h1")).to_be_visible()
    tour(page, "bill-group-new")

    open_bill_group(page, "Acme Corporation", ACME_UK)
    tour(page, "bill-group")
    page.get_by_role("link", name="Edit", exact=True).click()
    expect(page.locator("main h1")).to_be_visible()
    tour(page, "bill-group-edit")
    page.go_back()
    page.get_by_role("link", name="Change the payment settings").click()
    expect(page.locator("main h1")).to_be_visible()
    tour(page, "payment-settings")
    page.go_back()
    page.get_by_role("link", name="Change the bank details").click()
    expect(page.locator("main h1")).to_be_visible()
    tour(page, "bank-details")
    page.go_back()

    page.get_by_role("link", name="Access settings").click()
    heading(page, re.compile(r"^Portal access"))
    tour(page, "access")
    page.get_by_label("Email address to check").fill("ap@acme.com")
    page.get_by_role("button", name="Check").click()
    expect(page.locator(".check-result")).to_be_visible()
    tour(page, "access-check")
    page.get_by_label("Domain", exact=True).fill("gmail.com")
    page.get_by_role("button", name="Add domain", exact=True).click()
    expect(page.locator("#domain-error")).to_be_visible()
    tour(page, "access-error")

    page.get_by_role("link", name=f"Back to {ACME_UK}").click()
    page.get_by_role("link", name="Audit trail", exact=True).last.click()
    expect(page.locator("main h1")).to_be_visible()
    tour(page, "bill-group-audit")

    page.get_by_role("link", name="Back to the bill group").or_(
        page.get_by_role("link", name=ACME_UK, exact=True)
    ).first.click()
    heading(page, ACME_UK)
    page.get_by_role("link", name="Preview portal").click()
    expect(page.get_by_role("complementary", name="Preview")).to_be_visible()
    tour(page, "preview-overview")
    for name in ("Invoices", "Billing details", "Payment methods"):
        tour_portal_page(page, tour, name, "preview-")
    page.get_by_role("link", name="Signed-in devices").click()
    heading(page, "Signed-in devices")
    tour(page, "preview-devices")
    portal_nav(page, "Invoices")
    page.get_by_role("link", name=re.compile(r"^NW-\d{4}-\d{5}$")).first.click()
    heading(page, re.compile(r"^Invoice NW-"))
    tour(page, "preview-invoice")

    page.goto(portal.url("/admin/"))
    nav.get_by_role("link", name="Disputes").click()
    heading(page, "Questions and disputes")
    tour(page, "disputes")
    page.get_by_label("State").select_option("any")
    page.get_by_role("button", name="Filter").click()
    heading(page, "Questions and disputes")
    rows = page.locator("main tbody tr th a")
    if rows.count():  # the customer tour's question, when it ran first
        rows.first.click()
        expect(page.locator("main h1")).to_be_visible()
        tour(page, "dispute")
        if page.get_by_role("button", name="Send answer").count():
            page.get_by_role("button", name="Send answer").click()
            expect(page.locator("#message-error")).to_be_visible()
            tour(page, "dispute-answer-error")

    page.goto(portal.url("/admin/"))
    nav.get_by_role("link", name="Audit trail").click()
    expect(page.locator("main h1")).to_be_visible()
    tour(page, "audit")
    nav.get_by_role("link", name="Staff").click()
    expect(page.locator("main h1")).to_be_visible()
    tour(page, "staff-users")
    page.get_by_role("link", name="Add a staff user").click()
    expect(page.locator("main h1")).to_be_visible()
    tour(page, "staff-user-new")
    nav.get_by_role("link", name="Staff").click()
    page.get_by_role("link", name=f"Edit {portal.staff_email}").click()
    expect(page.locator("main h1")).to_be_visible()
    tour(page, "staff-user-edit")

    nav.get_by_role("link", name="API keys").click()
    heading(page, "API keys")
    tour(page, "api-keys")
    refused_then_created(
        page,
        tour,
        "api-key",
        "Name",
        ("", "Accessibility scan"),
        "Create key",
        "Copy your new API key",
    )
    heading(page, "API keys")
    tour(page, "api-keys-one-key")

    nav.get_by_role("link", name="Webhooks").click()
    heading(page, "Webhooks")
    tour(page, "webhooks")
    refused_then_created(
        page,
        tour,
        "webhook",
        "Endpoint URL",
        ("ftp://hooks.example.com/portal", "https://hooks.example.com/portal"),
        "Add endpoint",
        "Copy the signing secret",
    )
    heading(page, re.compile(r"^Webhook endpoint"))
    tour(page, "webhook")

    # Leave nothing behind for the journeys: no endpoint to send to, no usable key.
    page.get_by_role("button", name="Delete endpoint").click()
    heading(page, "Webhooks")
    nav.get_by_role("link", name="API keys").click()
    page.get_by_role("button", name=re.compile(r"^Revoke Accessibility scan")).click()
    expect(page.get_by_text("Revoked Accessibility scan")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    heading(page, "Staff sign-in")

    tour.finish()


def test_bank_transfer_on_an_eur_invoice(new_context: NewContext, portal: Portal, nu_batch: Batch):
    """An open EUR invoice of Globex (the demo's seller has an IBAN): the bank details,
    the EPC QR code with its text alternative, and a copy button that copy.js shows and
    that copies the IBAN (or selects it, where the clipboard is refused)."""
    tour = Tour("bank", nu_batch)
    context = new_context(bypass_csp=True)
    page = tour.watch(context.new_page())
    sign_in(page, portal, GLOBEX, "finance@globex.de")
    page.goto(portal.link(GLOBEX) + "/invoices?status=open")
    heading(page, "Invoices")
    page.get_by_role("link", name=re.compile(r"^NW-\d{4}-\d{5}$")).first.click()
    heading(page, re.compile(r"^Invoice NW-"))
    section = page.get_by_role("region", name="Pay by bank transfer")
    expect(section).to_be_visible()
    expect(section.get_by_role("img", name=re.compile(r"^Payment QR code: €"))).to_be_visible()
    copy = section.get_by_role("button", name="Copy IBAN")
    expect(copy).to_be_visible()  # shown by copy.js; hidden without JavaScript
    copy.click()
    expect(page.locator("#bank-copy-status")).to_contain_text(
        re.compile(r"IBAN (copied|is selected)")
    )
    tour(page, "invoice-bank-transfer")
    tour.finish()


def test_every_reminder_page(new_context: NewContext, portal: Portal, nu_batch: Batch):
    """The pages behind the link in a reminder (the confirm page, done, a broken link),
    the portal's Email reminders page with a stopped reminder, and the staff's schedule
    form with its error; everything stopped is turned back on, the schedule left as it was."""
    from tests.e2e.test_reminders_browser import links_of, reminder

    tour = Tour("reminders", nu_batch)
    page = tour.watch(new_context(bypass_csp=True).new_page())
    page.goto(portal.url("/"))  # the first request starts the demo's worker
    [stop] = [
        link for link in links_of(reminder(portal, ACME_UK, "renews on")) if "/unsubscribe/" in link
    ]
    page.goto(stop)
    heading(page, "Stop these reminders?")
    tour(page, "unsubscribe-confirm")
    page.get_by_role("button", name="Stop reminders").click()
    heading(page, "Reminders stopped")
    tour(page, "unsubscribe-done")
    page.goto(stop[:-3] + "xyz")
    heading(page, "This link cannot be used")
    tour(page, "unsubscribe-invalid")

    sign_in(page, portal, ACME_UK, "a11y-reminders@acme.com")
    portal_nav(page, "Contacts")
    page.get_by_role("link", name="Email reminders").click()
    heading(page, "Email reminders")
    tour(page, "email-reminders")
    page.get_by_role("button", name="Turn back on").click()
    expect(page.get_by_text("Nobody has stopped any reminders")).to_be_visible()
    tour(page, "email-reminders-none")

    staff = tour.watch(new_context(bypass_csp=True).new_page())
    staff_sign_in(staff, portal)
    open_bill_group(staff, "Acme Corporation", ACME_UK)
    staff.get_by_role("link", name="Change the reminder settings").click()
    heading(staff, "Reminders of Northwind Cloud")
    tour(staff, "reminder-settings")
    staff.get_by_label(re.compile("^Due soon")).fill("-1, 999999")
    staff.get_by_role("button", name="Save reminder settings").click()
    expect(staff.locator("#due_soon-error")).to_be_visible()
    tour(staff, "reminder-settings-error")
    tour.finish()


def test_enrol_qr_code_is_visible(new_context: NewContext, portal: Portal):
    page = new_context().new_page()
    staff_sign_in(page, portal)
    page.get_by_role("link", name="set up two-step sign-in").click()
    image = page.get_by_role("img", name="QR code for your authenticator app")
    expect(image).to_be_visible()
    image.evaluate(
        "img => img.complete || new Promise(done => { img.onload = img.onerror = done; })"
    )
    assert image.evaluate("img => img.naturalWidth") > 0, "the QR code image did not load"


def _error_body(portal: Portal, path: str, data: bytes) -> tuple[int, bytes]:
    """POST to the live server and return the error page it answers with."""
    request = urllib.request.Request(portal.url(path), data=data, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with DIRECT.open(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_every_page_and_email_is_valid_html(portal: Portal, nu_batch: Batch):
    """The Nu HTML Checker over what the tours above saved (each page as the server
    sent it), every error page, and the HTML part of every kind of email and of every
    email the server sent so far: no error, and no warning tests/e2e/nu-allowed.txt does
    not list. One JVM for the lot. Runs after the tours (file order)."""
    for audience in ("customer", "paying", "staff"):
        if not nu_batch.has(f"{audience}-"):
            message = f"the {audience} tour did not run: run all of {Path(__file__).name}"
            if os.environ.get("CI"):
                pytest.fail(f"CI: {message}", pytrace=False)
            pytest.skip(message)

    # Error pages from the live server: a form without its CSRF token, a body too large.
    sign_in = portal.groups[ACME_UK].path + "/sign-in"
    status, body = _error_body(portal, sign_in, b"email=a%40acme.com")
    assert status == 400 and b"This form has expired" in body
    nu_batch.add("error-400-csrf-live", body)
    status, body = _error_body(portal, sign_in, b"email=" + b"x" * (2 * 1024 * 1024))
    assert status == 413, status
    nu_batch.add("error-413-live", body)
    # Every other code as the app renders it (403, 429, 503 cannot be caused from outside
    # without breaking the shared server); the same handler and template as live.
    app = create_app({**TEST_CONFIG, "DATABASE_URL": "sqlite://"})
    with app.test_request_context("/p/PUBLICID"):
        for code in sorted(ERROR_TEXT):
            shown = error_page(code)
            assert isinstance(shown, tuple) and shown[1] == code
            page = shown[0]
            nu_batch.add(f"error-{code}", page)
        # The billing-contact confirmation pages, which only a changed contact's mailbox
        # reaches, rendered as their views render them.
        entity = Entity(id=1, name="Northwind Cloud", support_email="billing@northwind.test")
        group = BillGroup(name=ACME_UK, public_id="PUBLICID", entity=entity)
        confirmation = "portal/contact_confirmation"
        for name, context in (
            ("confirm", {"email": "new-ap@acme.com", "form": ButtonForm()}),
            ("confirmed", {"email": "new-ap@acme.com"}),
            ("invalid", {}),
        ):
            page = render_template(f"{confirmation}/{name}.html", group=group, **context)
            assert "new-ap@acme.com" in page or name == "invalid"
            nu_batch.add(f"customer-contact-{name}", page)
        examples = every_kind()
    for name, example in examples.items():
        nu_batch.add(f"email-{name}", example.email.html)
    received = list(portal.inbox.messages)
    assert received, "the tours sent no email"
    for number, message in enumerate(received):
        nu_batch.add(f"email-sent-{number:02d}", message.get_body(("html",)).get_content())

    findings = nu_batch.check()
    allowed = allowed_warnings()
    failing = [f for f in findings if f.kind == "error" or f.message not in allowed]
    accepted = sorted({f.message for f in findings if f not in failing})
    report = ARTIFACTS / "nu-html-checker.txt"
    report.write_text("\n".join(map(str, findings)) + "\n")
    errors = sum(f.kind == "error" for f in findings)
    print(
        f"Nu HTML Checker: {len(nu_batch.names)} documents, {errors} errors, "
        f"{len(findings) - errors} warnings ({len(accepted)} kinds allowed); all in {report}"
    )
    assert not failing, "Nu HTML Checker findings:\n" + "\n".join(map(str, failing))
