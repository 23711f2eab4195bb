"""The journeys of issue 6, one test each, in a real browser against the real server.

Each test clicks what a person would click and reads what a person would read (the page,
the plain-text part of an email, the clipboard). Tests that change access rules each
use their own demo bill group, so no test depends on another having run first:

- Globex annual licences: staff grant a domain and an address (the only rule changes);
- Acme UK operations: the customer journey, the code typed after the link was opened
  elsewhere, the address without access, and the 375 px check (each its own address);
- Initech platform: staff revoke the rule a signed-in customer depends on;
- Acme US operations: the staff preview, compared with a customer's view.
"""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from playwright.sync_api import Page, expect
from pypdf import PdfReader

from tests.e2e.conftest import (
    MOBILE,
    SIGN_IN_SUBJECT,
    NewContext,
    Portal,
    ask_for_link,
    link_and_code,
    open_bill_group,
    portal_nav,
    sign_in,
    staff_sign_in,
)

pytestmark = pytest.mark.e2e

ACME_UK = "Acme UK operations"
ACME_US = "Acme US operations"
GLOBEX = "Globex annual licences"
INITECH = "Initech platform"

PORTAL_PAGES = (
    "Overview",
    "Invoices",
    "Subscriptions",
    "Billing details",
    "Contacts",
    "Payment methods",
    "Payments",
)
INVOICE_NUMBER = re.compile(r"^NW-\d{4}-\d{5}$")


def readable_text(page: Page, selector: str) -> str:
    """The text a person reads in `selector`, once the page (stylesheets included) has
    loaded; whitespace collapsed, since line breaks in innerText follow the layout."""
    page.wait_for_load_state("load")
    return " ".join(page.locator(selector).inner_text().split())


def status(page: Page):
    """The notice a page shows after an action (role=status)."""
    return page.get_by_role("status").first


def test_staff_grants_access_and_copies_the_portal_link(new_context: NewContext, portal: Portal):
    """The issue's example is acme.com then ap@acme.com; every Acme bill group in the demo
    already admits acme.com, so this grants Globex its own domain, globex.de, which also
    shows the other overlap: a domain that would make address rules redundant."""
    context = new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=portal.base_url)
    page = context.new_page()
    staff_sign_in(page, portal)
    open_bill_group(page, "Globex GmbH", GLOBEX)
    page.get_by_role("link", name="Access settings").click()
    expect(page.get_by_role("heading", name="Portal access")).to_be_visible()

    # The domain would make the two address rules redundant: refused, naming them.
    page.get_by_label("Domain", exact=True).fill("globex.de")
    page.get_by_role("button", name="Add domain", exact=True).click()
    expect(page.locator("#domain-error")).to_contain_text(
        "would make these address rules redundant"
    )
    expect(page.locator("#domain-error")).to_contain_text("finance@globex.de")
    page.get_by_role("button", name="Add the domain and remove those addresses").click()
    expect(status(page)).to_contain_text("Added globex.de")
    domains = page.locator("#domains")
    expect(domains.get_by_role("rowheader", name="globex.de", exact=True)).to_be_visible()

    # An address under that domain: the overlap message, and no rule.
    page.get_by_label("Email address", exact=True).fill("ap@globex.de")
    page.get_by_role("button", name="Add address").click()
    expect(page.locator("#email-error")).to_have_text(
        "globex.de already has access, so ap@globex.de needs no rule of its own."
    )
    emails = page.locator("#emails")
    expect(emails.get_by_role("rowheader", name="ap@globex.de")).to_have_count(0)

    # An individual address elsewhere is added.
    page.get_by_label("Email address", exact=True).fill("cfo@globex-holdings.com")
    page.get_by_role("button", name="Add address").click()
    expect(status(page)).to_have_text(
        "Added cfo@globex-holdings.com: they can now sign in. Customer role: billing manager."
    )
    expect(emails.get_by_role("rowheader", name="cfo@globex-holdings.com")).to_be_visible()

    # Copy the portal link from the bill group page.
    page.get_by_role("link", name=f"Back to {GLOBEX}").click()
    page.get_by_role("button", name="Copy portal link").click()
    expect(page.locator("#portal-link-status")).to_have_text("Portal link copied")
    field = page.get_by_role("textbox", name="Portal link").input_value()
    try:
        copied = page.evaluate("navigator.clipboard.readText()")
    except Exception as exc:  # no clipboard here: the field is what a person copies by hand
        print(f"clipboard not readable ({exc}); using the link field")
        copied = field
    assert copied == field == portal.link(GLOBEX)

    # The link, pasted into another browser, opens that bill group's sign-in page.
    customer = new_context().new_page()
    customer.goto(copied)
    expect(customer.get_by_role("heading", name="Sign in to your billing portal")).to_be_visible()
    expect(customer.get_by_text(GLOBEX).first).to_be_visible()


def test_customer_signs_in_and_manages_the_account(new_context: NewContext, portal: Portal):
    address = "ap@acme.com"
    page = new_context(accept_downloads=True).new_page()

    # Sign in: the portal link, the address, the emailed link, Continue.
    before = ask_for_link(page, portal, ACME_UK, address)
    expect(page.get_by_text(address)).to_be_visible()
    link, _code = link_and_code(portal.next_email(address, before, SIGN_IN_SUBJECT))
    page.goto(link)
    expect(page.get_by_role("heading", name=f"Sign in to {ACME_UK}")).to_be_visible()
    expect(page.get_by_text(f"You are signing in as {address}.")).to_be_visible()
    assert "/verify/" not in page.url  # the token left the address bar
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/overview$"))
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    expect(page.get_by_text(address).first).to_be_visible()

    # An invoice and its PDF.
    portal_nav(page, "Invoices")
    expect(page.get_by_role("heading", name="Invoices", exact=True)).to_be_visible()
    first = page.get_by_role("link", name=INVOICE_NUMBER).first
    number = first.inner_text().strip()
    first.click()
    expect(page.get_by_role("heading", name=f"Invoice {number}")).to_be_visible()
    with page.expect_download(timeout=15_000) as download_info:
        page.get_by_role("link", name="Download PDF").click()
    download = download_info.value
    assert download.failure() is None
    pdf = download.path().read_bytes()
    assert pdf.startswith(b"%PDF"), pdf[:20]
    text = "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(pdf)).pages)
    assert number in text

    # The billing contact: a new phone number, shown back, and a notice emailed.
    notices = portal.mail_count(address)
    portal_nav(page, "Contacts")
    page.get_by_role("link", name="Change billing contact").click()
    expect(page.get_by_role("heading", name="Billing contact")).to_be_visible()
    page.get_by_label("Phone number").fill("+44 20 7946 0999")
    page.get_by_role("button", name="Save billing contact").click()
    expect(status(page)).to_have_text("The billing contact has been saved.")
    billing = page.get_by_role("region", name="Billing contact")
    expect(billing.get_by_text("+44 20 7946 0999")).to_be_visible()
    notice = portal.next_email(address, notices, "changed")
    assert "phone number" in notice.get_body(preferencelist=("plain",)).get_content()

    # A sandbox card, added and then made the default.
    year = (dt.date.today().year + 3) % 100
    portal_nav(page, "Payment methods")
    page.get_by_role("link", name="Add a card").click()
    expect(page.get_by_role("heading", name="Add a card")).to_be_visible()
    page.get_by_label("Name on card").fill("E2E Card Holder")
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_label("Month (MM)").fill("11")
    page.get_by_label("Year (YY)").fill(f"{year:02d}")
    page.get_by_label("Security code").fill("123")
    page.get_by_role("button", name="Add card").click()
    expect(status(page)).to_contain_text("has been added")
    row = page.get_by_role("row").filter(has_text="E2E Card Holder")
    expect(row).to_have_count(1)
    expect(row.get_by_text("Default", exact=True)).to_have_count(0)
    row.get_by_role("button", name="Make default").click()
    expect(status(page)).to_contain_text("is now your default payment method")
    row = page.get_by_role("row").filter(has_text="E2E Card Holder")
    expect(row.get_by_text("Default", exact=True)).to_be_visible()
    expect(page.locator(".badge-default")).to_have_count(1)

    # Sign out: the sign-in page, and the portal pages are closed again.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You have signed out.")).to_be_visible()
    expect(page.get_by_role("heading", name="Sign in to your billing portal")).to_be_visible()
    page.go_back()
    expect(page.get_by_role("heading", name="Sign in to your billing portal")).to_be_visible()


def test_customer_applies_a_credit_and_downloads_the_statement(
    new_context: NewContext, portal: Portal
):
    address = "credits@acme.com"
    page = new_context(accept_downloads=True).new_page()
    before = ask_for_link(page, portal, ACME_UK, address)
    link, _code = link_and_code(portal.next_email(address, before, SIGN_IN_SUBJECT))
    page.goto(link)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    expect(page.get_by_text("Credit available")).to_be_visible()

    # The demo's service credit note, a part of it applied to the oldest open invoice.
    portal_nav(page, "Credits")
    expect(page.get_by_role("heading", name="Credits", exact=True)).to_be_visible()
    page.get_by_label("Amount").fill("1.00")
    page.get_by_role("button", name="Apply credit").click()
    expect(status(page)).to_contain_text("applied to invoice")
    applied = page.get_by_role("row").filter(has_text="CN-ACME-UK-1")
    expect(applied).to_contain_text("£1.00")

    # The statement: the credit note on it, and the PDF downloads.
    portal_nav(page, "Statement")
    expect(page.get_by_role("heading", name="Statement of account")).to_be_visible()
    expect(page.get_by_role("cell", name="CN-ACME-UK-1")).to_be_visible()
    with page.expect_download(timeout=15_000) as download_info:
        page.get_by_role("link", name="Download PDF").click()
    pdf = download_info.value.path().read_bytes()
    text = "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(pdf)).pages)
    assert "Statement of account" in text and "CN-ACME-UK-1" in text


def test_customer_asks_for_more_seats_and_staff_accept_by_hand(
    new_context: NewContext, portal: Portal
):
    address = "seats@acme.com"
    customer = new_context().new_page()
    sign_in(customer, portal, ACME_UK, address)
    portal_nav(customer, "Subscriptions")
    customer.get_by_role("link", name="Change quantity").click()
    expect(
        customer.get_by_role("heading", name=re.compile(r"^Change quantity: Team"))
    ).to_be_visible()
    customer.get_by_label("New quantity").fill("500")
    customer.get_by_role("button", name="Review the change").click()
    expect(customer.locator("#quantity-error")).to_have_text("Enter a quantity between 5 and 200.")
    customer.get_by_label("New quantity").fill("60")
    customer.get_by_role("button", name="Review the change").click()
    expect(customer.get_by_role("heading", name="Review your change")).to_be_visible()
    expect(
        customer.get_by_role("row", name=re.compile(r"After the change Team 60"))
    ).to_be_visible()
    expect(customer.get_by_text("The billing system confirms the final amount")).to_be_visible()
    customer.get_by_role("button", name="Ask for this change").click()
    expect(status(customer).first).to_contain_text("Change requested.")
    expect(customer.get_by_text("Change the quantity from 40 to 60")).to_be_visible()
    expect(customer.get_by_role("link", name="Change quantity")).to_have_count(0)

    staff = new_context().new_page()
    staff_sign_in(staff, portal)
    open_bill_group(staff, "Acme Corporation", ACME_UK)
    row = staff.get_by_role("row").filter(has_text="Change the quantity from 40 to 60")
    row.get_by_label("Accept").check()
    row.get_by_label("Reason or note for the customer").fill("From your next invoice")
    before = len(portal.inbox.to(address))
    row.get_by_role("button", name=re.compile("^Answer")).click()
    expect(status(staff).first).to_contain_text("Answer saved")

    mail = portal.next_email(address, before, "accepted")
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert "Change the quantity from 40 to 60" in text and "From your next invoice" in text
    customer.reload()
    expect(customer.get_by_role("link", name="Change quantity")).to_be_visible()


def test_link_opened_elsewhere_asks_for_the_code(new_context: NewContext, portal: Portal):
    address = "treasury@acme.com"
    first = new_context().new_page()
    before = ask_for_link(first, portal, ACME_UK, address)
    link, code = link_and_code(portal.next_email(address, before, SIGN_IN_SUBJECT))

    # Another browser (a phone, a mail scanner) opens the link: told to use the code.
    second = new_context().new_page()
    second.goto(link)
    expect(
        second.get_by_role("heading", name="Open the link where you asked for it")
    ).to_be_visible()
    expect(second.get_by_text("type the code from the email")).to_be_visible()
    expect(second.get_by_role("navigation", name="Portal")).to_have_count(0)

    # The code, typed where the link was asked for, signs in.
    first.get_by_label("Code from the email").fill(code)
    first.get_by_role("button", name="Sign in").click()
    expect(first.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    expect(first.get_by_text(address).first).to_be_visible()

    # The second browser is still not signed in.
    second.goto(portal.link(ACME_UK))
    expect(second.get_by_role("heading", name="Sign in to your billing portal")).to_be_visible()


def _request_page(page: Page, portal: Portal, address: str) -> tuple[int, str, str, str]:
    """Ask for a link; what the person sees: status, address bar, title, and the text
    of the page with their own address blanked out."""
    page.goto(portal.link(ACME_UK))
    page.get_by_label("Work email address").fill(address)
    with page.expect_response(lambda r: r.request.method == "POST") as response:
        page.get_by_role("button", name="Email me a sign-in link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    text = readable_text(page, "body").replace(address, "<address>")
    return response.value.status, page.url, page.title(), text


def test_address_without_access_gets_the_same_page_and_no_email(
    new_context: NewContext, portal: Portal
):
    outsider, insider = "ap@evilacme.com", "payables@acme.com"
    outsider_before, insider_before = portal.mail_count(outsider), portal.mail_count(insider)

    refused = _request_page(new_context().new_page(), portal, outsider)
    admitted = _request_page(new_context().new_page(), portal, insider)
    assert refused == admitted

    # The worker decides requests in order: once the later, admitted request's email
    # is here, the earlier one has been decided too. Then wait a little longer still.
    portal.next_email(insider, insider_before, SIGN_IN_SUBJECT)
    portal.no_email(outsider, outsider_before, timeout=3.0)


def test_revoked_rule_signs_the_customer_out_at_the_next_click(
    new_context: NewContext, portal: Portal
):
    customer = new_context().new_page()
    sign_in(customer, portal, INITECH, portal.groups[INITECH].address)
    portal_nav(customer, "Invoices")
    expect(customer.get_by_role("heading", name="Invoices", exact=True)).to_be_visible()

    staff = new_context().new_page()
    staff_sign_in(staff, portal)
    open_bill_group(staff, "Initech SAS", INITECH)
    staff.get_by_role("link", name="Access settings").click()
    staff.get_by_role("button", name="Remove initech.fr").click()
    expect(status(staff)).to_have_text(
        "Removed initech.fr. Anyone it let in is signed out at their next click."
    )

    portal_nav(customer, "Subscriptions")
    expect(customer.get_by_role("heading", name="Sign in to your billing portal")).to_be_visible()
    assert customer.url.startswith(portal.link(INITECH) + "?next=")
    expect(customer.get_by_role("navigation", name="Portal")).to_have_count(0)


def _main_text(page: Page) -> str:
    return readable_text(page, "main")


def test_staff_preview_matches_the_customer_and_changes_nothing(
    new_context: NewContext, portal: Portal
):
    customer = new_context().new_page()
    sign_in(customer, portal, ACME_US, "controller@acme.com")

    staff = new_context().new_page()
    staff_sign_in(staff, portal)
    open_bill_group(staff, "Acme Corporation", ACME_US)
    staff.get_by_role("link", name="Preview portal").click()
    banner = staff.get_by_role("complementary", name="Preview")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(f"Preview of {ACME_US} as the customer sees it.")
    expect(banner).to_contain_text("Nothing can be changed from here.")

    # Every page, and one invoice, read the same as the customer's.
    for name in PORTAL_PAGES:
        for page in (customer, staff):
            portal_nav(page, name)
            expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
        assert _main_text(staff) == _main_text(customer), name
        expect(banner).to_be_visible()
    for page in (customer, staff):
        portal_nav(page, "Invoices")
        page.get_by_role("link", name=INVOICE_NUMBER).first.click()
        expect(page.get_by_role("heading", name=re.compile(r"^Invoice NW-"))).to_be_visible()
    assert _main_text(staff) == _main_text(customer)

    # The forms are switched off in the preview...
    portal_nav(staff, "Billing details")
    po_number = staff.get_by_label("Purchase order (PO) number")
    expect(po_number).to_be_disabled()
    expect(staff.get_by_role("button", name="Save billing details")).to_be_disabled()
    # ...and one forced back on (as with the browser's developer tools) changes nothing.
    staff.locator("main form fieldset").evaluate("fieldset => { fieldset.disabled = false; }")
    po_number.fill("PREVIEW-CHANGED-THIS")
    with staff.expect_response(lambda r: r.request.method == "POST") as response:
        staff.get_by_role("button", name="Save billing details").click()
    assert response.value.status == 403
    expect(staff.get_by_role("heading", name="You cannot do that")).to_be_visible()

    portal_nav(customer, "Billing details")
    expect(customer.get_by_label("Purchase order (PO) number")).not_to_have_value(
        "PREVIEW-CHANGED-THIS"
    )
    staff.go_back()
    staff.reload()
    expect(staff.get_by_label("Purchase order (PO) number")).not_to_have_value(
        "PREVIEW-CHANGED-THIS"
    )
    expect(staff.get_by_role("complementary", name="Preview")).to_be_visible()


def test_every_customer_page_fits_375_px(new_context: NewContext, portal: Portal):
    address = "mobile@acme.com"
    page = new_context(viewport=MOBILE, is_mobile=True, has_touch=True).new_page()
    too_wide: list[str] = []

    def check(name: str) -> None:
        page.wait_for_load_state("load")  # measured with the stylesheets applied
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > MOBILE["width"]:
            too_wide.append(f"{name} ({page.url}): scrollWidth {width}")

    page.goto(portal.link(ACME_UK))
    expect(page.get_by_role("heading", name="Sign in to your billing portal")).to_be_visible()
    check("sign-in")
    before = ask_for_link(page, portal, ACME_UK, address)
    check("check your email")
    link, _code = link_and_code(portal.next_email(address, before, SIGN_IN_SUBJECT))
    page.goto(link)
    expect(page.get_by_role("button", name="Continue")).to_be_visible()
    check("confirm")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()

    for name in PORTAL_PAGES:
        portal_nav(page, name)
        expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
        check(name)
    portal_nav(page, "Invoices")
    page.get_by_role("link", name=INVOICE_NUMBER).first.click()
    expect(page.get_by_role("heading", name=re.compile(r"^Invoice NW-"))).to_be_visible()
    check("invoice")
    for kind in ("billing", "shipping"):
        portal_nav(page, "Contacts")
        page.get_by_role("link", name=f"Change {kind} contact").click()
        expect(page.get_by_role("heading", name=f"{kind.capitalize()} contact")).to_be_visible()
        check(f"{kind} contact form")
    portal_nav(page, "Payment methods")
    page.get_by_role("link", name="Add a card").click()
    expect(page.get_by_role("heading", name="Add a card")).to_be_visible()
    check("add a card")
    for name in ("Change history", "Invoice copies"):
        portal_nav(page, "Billing details")
        page.get_by_role("link", name=name).click()
        expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
        check(name)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You have signed out.")).to_be_visible()
    check("signed out")

    assert not too_wide, "pages wider than 375 px:\n" + "\n".join(too_wide)


# --- paying (issue 17), on Acme US operations (USD, part payments allowed): its acme.com
# rule is changed by no other test, and its invoices outnumber what these pay. -----------


def _add_card(page: Page, number: str) -> None:
    """From the pay form: "Add a new card", the card, and back to the pay form."""
    page.get_by_role("link", name="Add a new card").click()
    expect(page.get_by_role("heading", name="Add a card")).to_be_visible()
    page.get_by_label("Name on card").fill("Accounts Payable")
    page.get_by_label("Card number").fill(number)
    page.get_by_label("Month (MM)").fill("12")
    page.get_by_label("Year (YY)").fill("39")
    page.get_by_label("Security code").fill("123")
    page.get_by_role("button", name="Add card").click()
    expect(page.get_by_role("heading", name="Pay", exact=True)).to_be_visible()


def test_customer_pays_two_invoices_and_downloads_the_receipt(
    new_context: NewContext, portal: Portal
):
    page = new_context(accept_downloads=True).new_page()
    sign_in(page, portal, ACME_US, "payer@acme.com")
    portal_nav(page, "Invoices")
    boxes = page.get_by_role("checkbox", name=re.compile(r"^Pay invoice "))
    assert boxes.count() >= 2
    numbers = [boxes.nth(i).get_attribute("id") for i in range(2)]
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.get_by_role("button", name="Pay selected").click()
    expect(page.get_by_role("heading", name="Pay", exact=True)).to_be_visible()
    page.get_by_role("button", name="Review payment").click()
    expect(page.get_by_role("heading", name="Review your payment")).to_be_visible()
    button = page.get_by_role("button", name=re.compile(r"^Pay \S*\d"))
    amount = button.inner_text().removeprefix("Pay ")
    button.click()
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible()
    expect(page.get_by_role("status").first).to_contain_text(amount)
    expect(page.locator("main table tbody tr")).to_have_count(2)
    expect(page.locator("main table .badge-paid")).to_have_count(2)
    assert all(numbers)

    portal_nav(page, "Payments")
    expect(page.get_by_role("heading", name="Payments", exact=True)).to_be_visible()
    row = page.locator("main table tbody tr").first
    expect(row).to_contain_text(amount)
    expect(row).to_contain_text("Succeeded")
    with page.expect_download(timeout=15_000) as download_info:
        row.get_by_role("link", name=re.compile(r"^Receipt")).click()
    download = download_info.value
    assert download.failure() is None
    text = PdfReader(io.BytesIO(download.path().read_bytes())).pages[0].extract_text()
    assert "Payment receipt" in text and amount in text


def test_customer_pays_with_a_card_that_asks_for_3d_secure(new_context: NewContext, portal: Portal):
    page = new_context().new_page()
    sign_in(page, portal, ACME_US, "threeds@acme.com")
    portal_nav(page, "Invoices")
    # The first invoice with something to pay (a checkbox), opened from its row.
    row = page.locator("main table tbody tr").filter(has=page.get_by_role("checkbox")).first
    row.get_by_role("link", name=INVOICE_NUMBER).click()
    page.get_by_role("button", name="Pay this invoice").click()
    expect(page.get_by_role("heading", name="Pay", exact=True)).to_be_visible()
    _add_card(page, "4000 0027 6000 3184")
    page.get_by_role("radio", name=re.compile(r"ending 3184$")).last.check()  # the newest
    page.get_by_label("Amount to pay").fill("5.00")
    page.get_by_role("button", name="Review payment").click()
    page.get_by_role("button", name=re.compile(r"^Pay \S*5\.00$")).click()
    expect(page.get_by_role("heading", name="Confirm this payment")).to_be_visible()
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible()
    expect(page.get_by_role("status").first).to_contain_text("5.00")


def test_a_viewer_reads_invoices_and_their_pdfs_and_is_offered_nothing_to_change(
    new_context: NewContext, portal: Portal
):
    """Staff add an address as a viewer on the access page; that person signs in, reads,
    downloads an invoice PDF, and sees no button that changes or pays."""
    address = "auditor@acme-holdings.com"
    staff = new_context().new_page()
    staff_sign_in(staff, portal)
    open_bill_group(staff, "Acme Corporation", ACME_UK)
    staff.get_by_role("link", name="Access settings").click()
    staff.get_by_label("Email address", exact=True).fill(address)
    staff.locator("#email-role").select_option("viewer")
    staff.get_by_role("button", name="Add address").click()
    expect(status(staff)).to_have_text(
        f"Added {address}: they can now sign in. Customer role: viewer."
    )
    expect(staff.get_by_label(f"Customer role for {address}")).to_have_value("viewer")

    page = new_context().new_page()
    sign_in(page, portal, ACME_UK, address)
    expect(page.locator(".role-tag")).to_have_text("Viewer")
    expect(page.get_by_text("You can view this bill group.")).to_be_visible()
    main = page.locator("main")
    for name in (
        "Pay outstanding balance",
        "Turn on automatic payment",
        "Turn off automatic payment",
    ):
        expect(main.get_by_role("button", name=name)).to_have_count(0)

    portal_nav(page, "Invoices")
    expect(page.get_by_role("heading", name="Invoices", exact=True)).to_be_visible()
    expect(main.get_by_role("button", name="Pay selected")).to_have_count(0)
    first = page.get_by_role("link", name=INVOICE_NUMBER).first
    number = first.inner_text().strip()
    first.click()
    expect(page.get_by_role("heading", name=f"Invoice {number}")).to_be_visible()
    expect(main.get_by_role("button", name="Pay this invoice")).to_have_count(0)
    with page.expect_download(timeout=15_000) as download_info:
        page.get_by_role("link", name="Download PDF").click()
    pdf = download_info.value.path().read_bytes()
    text = "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(pdf)).pages)
    assert number in text

    portal_nav(page, "Billing details")
    expect(page.get_by_text("PO-4471-UK")).to_be_visible()
    expect(main.get_by_role("button", name="Save billing details")).to_have_count(0)
    portal_nav(page, "Contacts")
    expect(main.get_by_role("link", name=re.compile(r"^(Change|Add)"))).to_have_count(0)
    portal_nav(page, "Payment methods")
    expect(main.get_by_role("button", name="Make default")).to_have_count(0)
    expect(main.get_by_role("link", name="Add a card")).to_have_count(0)
    portal_nav(page, "Subscriptions")
    expect(main.get_by_role("link", name=re.compile(r"^(Change plan|Pause|Cancel)"))).to_have_count(
        0
    )

    # Typing a form's address is no way round: back to the overview, with the note.
    page.goto(portal.link(ACME_UK) + "/pay")
    page.wait_for_url(re.compile(r"/overview$"))
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()


def test_customer_adds_an_invoice_copy_recipient_who_confirms_and_sees_the_history(
    new_context: NewContext, portal: Portal
):
    """A billing manager adds the accounts-payable inbox; the inbox's owner confirms in
    their own browser by the emailed link (the GET only shows a button); the customer
    sees it confirmed and the whole story in the change history."""
    address = "copies-journey@acme.com"
    inbox = "ap-journey@acme-payables.com"
    page = new_context().new_page()
    sign_in(page, portal, ACME_UK, address)

    portal_nav(page, "Billing details")
    page.get_by_role("link", name="Invoice copies").click()
    expect(page.get_by_role("heading", name="Invoice copies", level=1)).to_be_visible()
    page.get_by_label("Email address").fill("a@acme-payables.com, b@acme-payables.com")
    page.get_by_role("button", name="Add address").click()
    expect(page.get_by_text("Add addresses one at a time")).to_be_visible()

    before = portal.mail_count(inbox)
    page.get_by_label("Email address").fill(inbox)
    page.get_by_role("button", name="Add address").click()
    expect(status(page)).to_contain_text(f"We have emailed {inbox} a link to confirm it")
    row = page.get_by_role("row").filter(has_text=inbox)
    expect(row.get_by_text("Awaiting confirmation")).to_be_visible()

    asked = portal.next_email(inbox, before, "Confirm you want copies")
    link = re.search(r"https?://\S+/invoice-copies/confirm/\S+", plain(asked))
    assert link, plain(asked)
    theirs = new_context().new_page()
    theirs.goto(link.group(0))
    expect(theirs.get_by_role("heading", name="Confirm you want invoice copies")).to_be_visible()
    assert "/confirm/" not in theirs.url  # the token left the address bar
    theirs.get_by_role("button", name="Confirm").click()
    expect(theirs.get_by_role("heading", name="Address confirmed")).to_be_visible()
    theirs.goto(link.group(0))  # used: it leads nowhere now
    expect(theirs.get_by_role("heading", name="This link cannot be used")).to_be_visible()

    page.reload()
    row = page.get_by_role("row").filter(has_text=inbox)
    expect(row.get_by_text("Confirmed")).to_be_visible()

    portal_nav(page, "Billing details")
    page.get_by_role("link", name="Change history").click()
    expect(page.get_by_role("heading", name="Change history", level=1)).to_be_visible()
    history = page.get_by_role("table")
    expect(history.get_by_text(f"{inbox} (awaiting confirmation)")).to_be_visible()
    expect(
        history.get_by_text(re.compile(f"Recipient confirmed: .*{re.escape(inbox)}"))
    ).to_be_visible()

    # Remove it again, so the demo stays as it was for the other tests.
    portal_nav(page, "Billing details")
    page.get_by_role("link", name="Invoice copies").click()
    page.get_by_role("row").filter(has_text=inbox).get_by_role("button", name="Remove").click()
    expect(status(page)).to_contain_text(f"{inbox} no longer receives invoice copies")


def plain(message) -> str:  # type: ignore[no-untyped-def]
    return message.get_body(preferencelist=("plain",)).get_content()


def test_customer_disputes_an_invoice_with_a_pdf_and_staff_resolve_it(
    new_context: NewContext, portal: Portal
):
    from tests.files import pdf_bytes

    address = "dispute@acme.com"
    customer = new_context().new_page()
    sign_in(customer, portal, ACME_UK, address)
    portal_nav(customer, "Invoices")
    customer.get_by_role("link", name=INVOICE_NUMBER).last.click()
    heading = customer.get_by_role("heading", level=1)
    number = heading.inner_text().split()[1]
    customer.get_by_role("link", name="Ask a question or dispute this invoice").click()
    expect(customer.get_by_role("heading", name=f"Question or dispute: invoice {number}"))
    customer.get_by_label("Dispute this invoice").check()
    customer.get_by_label("Why do you dispute it?").select_option("wrong_amount")
    customer.get_by_label("Your message").fill("We have 40 seats, not 60.\nSee our order.")
    customer.get_by_label("Attach a file (optional)").set_input_files(
        {"name": "order.pdf", "mimeType": "application/pdf", "buffer": pdf_bytes()}
    )
    customer.get_by_role("button", name="Send to the billing team").click()
    expect(status(customer)).to_contain_text("Sent. The billing team will answer")
    expect(heading).to_contain_text("In dispute")
    expect(customer.get_by_role("link", name="order.pdf")).to_be_visible()
    portal_nav(customer, "Invoices")
    expect(customer.get_by_role("row").filter(has_text=number)).to_contain_text("In dispute")

    staff = new_context().new_page()
    staff_sign_in(staff, portal)
    staff.get_by_role("navigation", name="Staff").get_by_role("link", name="Disputes").click()
    staff.get_by_role("row").filter(has_text=number).get_by_role("link").first.click()
    expect(staff.get_by_text("We have 40 seats, not 60.")).to_be_visible()
    expect(staff.get_by_role("link", name="order.pdf")).to_be_visible()
    staff.get_by_label("Answer for the customer").fill("Right: we credited 20 seats.")
    staff.get_by_label(re.compile("^This resolves it")).check()
    before = len(portal.inbox.to(address))
    staff.get_by_role("button", name="Send answer").click()
    expect(status(staff)).to_contain_text("Answer sent")

    mail = portal.next_email(address, before, "resolved")
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert "Right: we credited 20 seats." in text and f"invoice {number}" in text
    customer.go_back()
    customer.reload()
    expect(customer.get_by_text("Right: we credited 20 seats.")).to_be_visible()
    expect(customer.get_by_role("heading", level=1)).not_to_contain_text("In dispute")
    expect(customer.get_by_text(re.compile(r"^Resolved \d"))).to_be_visible()
