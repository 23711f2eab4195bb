"""Reminders in a browser, CSP on: the demo's worker sends its reminders on its first
pass; the link in one stops them (a page, then its button; the link itself never
does), the customer sees that on the Email reminders page and turns them back on; the
deep link of a reminder, followed through sign-in, lands on its invoice; staff set a
schedule and a huge value is refused with a message."""

from __future__ import annotations

import re
import time
from email.message import EmailMessage

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import (
    EMAIL_TIMEOUT_S,
    SIGN_IN_SUBJECT,
    NewContext,
    Portal,
    link_and_code,
    open_bill_group,
    portal_nav,
    sign_in,
    staff_sign_in,
)

pytestmark = pytest.mark.e2e

ACME_UK = "Acme UK operations"
ACME_US = "Acme US operations"
BILLING_CONTACT = "ap@acme.com"


def reminder(portal: Portal, group: str, subject: str) -> EmailMessage:
    """The demo's reminder to the billing contact of `group` whose subject has `subject`
    (sent by the worker's first pass, once the server has had a request)."""
    path = portal.groups[group].path
    deadline = time.monotonic() + EMAIL_TIMEOUT_S
    while time.monotonic() < deadline:
        for message in portal.inbox.to(BILLING_CONTACT):
            text = message.get_body(("plain",)).get_content()
            if subject in str(message["Subject"]) and f"{path}/" in text:
                return message
        time.sleep(0.2)
    raise AssertionError(f"no reminder {subject!r} for {group} to {BILLING_CONTACT}")


def links_of(message: EmailMessage) -> list[str]:
    return re.findall(r"http://127\.0\.0\.1:\d+/p/\S+", message.get_body(("plain",)).get_content())


def heading(page: Page, name: str | re.Pattern[str]) -> None:
    expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()


def test_stop_reminders_from_the_link_and_turn_them_back_on(new_context: NewContext, portal):
    page = new_context().new_page()
    page.goto(portal.url("/"))  # the first request starts the demo's worker
    message = reminder(portal, ACME_US, "renews on")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [stop] = [link for link in links_of(message) if "/unsubscribe/" in link]
    assert message["List-Unsubscribe"] == f"<{stop}>"

    page.goto(stop)
    heading(page, "Stop these reminders?")
    page.reload()  # opening it again changes nothing either
    heading(page, "Stop these reminders?")
    page.get_by_role("button", name="Stop reminders").click()
    heading(page, "Reminders stopped")
    expect(page.get_by_role("status")).to_contain_text(BILLING_CONTACT)

    page.goto(stop[:-3] + "xyz")
    heading(page, "This link cannot be used")

    sign_in(page, portal, ACME_US, "reminders-e2e@acme.com")
    portal_nav(page, "Contacts")
    page.get_by_role("link", name="Email reminders").click()
    heading(page, "Email reminders")
    expect(
        page.get_by_text(f"{BILLING_CONTACT} gets no reminders about upcoming invoices")
    ).to_be_visible()
    page.get_by_role("button", name="Turn back on").click()
    expect(page.get_by_role("status").first).to_contain_text("go to ap@acme.com again")
    expect(page.get_by_text("Nobody has stopped any reminders")).to_be_visible()


def test_the_reminders_link_through_sign_in_lands_on_the_invoice(new_context: NewContext, portal):
    page = new_context().new_page()
    page.goto(portal.url("/"))
    message = reminder(portal, ACME_UK, "is overdue")
    assert message["List-Unsubscribe"] is None  # overdue reminders are essential
    [invoice] = [link for link in links_of(message) if "/invoices/" in link]
    number = re.search(r"Invoice (\S+) from", str(message["Subject"])).group(1)

    page.goto(invoice)  # not signed in: the sign-in page, which keeps where it was going
    heading(page, "Sign in to your billing portal")
    address = "reminders-link@acme.com"
    before = portal.mail_count(address)
    page.get_by_label("Work email address").fill(address)
    page.get_by_role("button", name="Email me a sign-in link").click()
    heading(page, "Check your email")
    link, _code = link_and_code(portal.next_email(address, before, SIGN_IN_SUBJECT))
    page.goto(link)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(invoice)
    heading(page, f"Invoice {number}")


def test_staff_set_a_schedule_and_a_huge_value_is_refused(new_context: NewContext, portal):
    page = new_context().new_page()
    staff_sign_in(page, portal)
    open_bill_group(page, "Acme Corporation", ACME_UK)
    page.get_by_role("link", name="Change the reminder settings").click()
    heading(page, "Reminders of Northwind Cloud")
    expect(page.get_by_label(re.compile("^Overdue"))).to_have_value("1, 7, 14")
    page.get_by_label(re.compile("^Overdue")).fill("999999")
    page.get_by_role("button", name="Save reminder settings").click()
    expect(page.locator("#overdue-error")).to_contain_text("out of range")
    page.get_by_label(re.compile("^Overdue")).fill("14, 1, 7")
    page.get_by_role("button", name="Save reminder settings").click()
    heading(page, ACME_UK)
    expect(page.get_by_text("Nothing changed.")).to_be_visible()
