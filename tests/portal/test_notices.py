"""Notice bombing (issue 14): notices to the billing contact are merged per window and
capped per day without ever dropping a change, and a billing contact address a customer
names hears nothing but one "you were named" email until its mailbox confirms it.

Every email here goes through the outbox to the real SMTP server of tests/conftest.py.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import notices
from portal.config import settings_of
from portal.models import (
    AuditEvent,
    BillGroup,
    Contact,
    ContactConfirmation,
    ContactKind,
    Notice,
    NoticeChange,
)
from tests.clock import Clock
from tests.conftest import Inbox, csrf_token, run_worker, sign_in
from tests.portal.pages_helpers import (
    ADDRESS,
    BILLING_EMAIL,
    GROUP_NAME,
    billing_contact,
    contact_fields,
    flashes,
    form_data,
    plain_text,
    portal_group,
    save_contact,
    url,
)
from tests.portal.signin_helpers import clone, race
from tests.settings import change_settings

NEW = "finance@acme.com"
LINK_RE = re.compile(r"https://portal\.example\.test(/p/[\w-]+/billing-contact/confirm/[\w-]+)")
CHANGE_LINE = re.compile(r"- .* UTC: .* changed the .*\.")


pytestmark = pytest.mark.usefixtures("clock")


def window(app: Flask) -> dt.timedelta:
    return dt.timedelta(minutes=settings_of(app).NOTICE_WINDOW_MINUTES)


def after_window(app: Flask, clock: Clock) -> None:
    clock.now += window(app)
    run_worker(app)


def save_po(client: FlaskClient, group: BillGroup, po: str) -> int:
    page = url(group, "/billing-details")
    data = form_data(client, page, po_number=po, vat_number="", registration_number="")
    return client.post(page, data=data).status_code


def save_billing_contact(client: FlaskClient, group: BillGroup, **changes: str) -> Any:
    return save_contact(client, group, "billing", **contact_fields(**changes))


def change_lines(message: Any) -> list[str]:
    lines = plain_text(message).splitlines()
    return [line for line in lines if CHANGE_LINE.fullmatch(line)]


def audit_count(db: Session, action: str) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).where(AuditEvent.action == action)) or 0


def confirm_path(app: Flask, smtp: Inbox, address: str = NEW) -> str:
    """The link in the newest "you were named" email to `address`."""
    run_worker(app)
    named = smtp.to(address)[-1]
    match = LINK_RE.search(plain_text(named))
    assert match, plain_text(named)
    return match.group(1)


# --- merging and the daily cap ------------------------------------------------------


def test_twenty_saves_give_one_notice_that_lists_every_change(
    app, db, group, customer, smtp, clock
):
    for n in range(20):
        assert save_po(customer, group, f"PO-{n}") == 303
        clock.now += dt.timedelta(seconds=5)

    run_worker(app)  # the window is still open: nothing yet
    assert smtp.to(BILLING_EMAIL) == []

    after_window(app, clock)

    [notice] = smtp.to(BILLING_EMAIL)
    assert notice["Subject"] == f"Billing details changed for {GROUP_NAME}"
    text = plain_text(notice)
    assert "20 changes were made to" in " ".join(text.split())
    lines = change_lines(notice)
    assert len(lines) == 20
    assert all(f"{ADDRESS} changed the billing details: PO number." in line for line in lines)
    assert lines[0].startswith("- 21 November 2026 at 12:00 UTC")
    assert lines[-1].startswith("- 21 November 2026 at 12:01 UTC")
    html = notice.get_body(preferencelist=("html",)).get_content()
    assert html.count("changed the billing details: PO number.") == 20
    assert audit_count(db, "billing_details.update") == 20

    after_window(app, clock)  # nothing more to say
    assert len(smtp.to(BILLING_EMAIL)) == 1


def test_twenty_concurrent_saves_send_one_notice(app, db, group, customer, smtp, clock):
    clients = [clone(app, customer) for _ in range(20)]
    forms = [
        form_data(c, url(group, "/billing-details"), po_number=f"PO-{n}", vat_number="")
        for n, c in enumerate(clients)
    ]

    statuses = race(
        list(zip(clients, forms, strict=True)),
        lambda job: job[0].post(url(group, "/billing-details"), data=job[1]).status_code,
    )

    assert statuses == [303] * 20
    saved = audit_count(db, "billing_details.update")
    assert 1 <= saved <= 20
    after_window(app, clock)
    [notice] = smtp.to(BILLING_EMAIL)
    assert len(change_lines(notice)) == saved
    # The billing contact and the customer who made the changes: one each.
    [own] = smtp.to(ADDRESS)
    assert len(change_lines(own)) == saved
    assert len(smtp.messages) == 2


def test_two_workers_racing_send_the_notice_once(app, db, group, customer, smtp, clock):
    for n in range(3):
        save_po(customer, group, f"PO-{n}")
    clock.now += window(app)

    def one_pass(_: int) -> int:
        with app.app_context():
            from portal import db as portal_db

            return notices.send_due(portal_db.session())

    # One notice per recipient: the billing contact and the customer who saved.
    assert sum(race(list(range(8)), one_pass)) == 2
    run_worker(app)
    [notice] = smtp.to(BILLING_EMAIL)
    assert len(change_lines(notice)) == 3


def test_the_daily_cap_holds_changes_for_the_next_allowed_notice(
    app, db, group, customer, smtp, clock
):
    change_settings(app, NOTICE_LIMIT_PER_DAY=3)
    for n in range(6):
        save_po(customer, group, f"PO-{n}")
        after_window(app, clock)

    assert len(smtp.to(BILLING_EMAIL)) == 3  # the cap
    assert [len(change_lines(m)) for m in smtp.to(BILLING_EMAIL)] == [1, 1, 1]
    db.expire_all()
    waiting = db.scalar(
        select(func.count()).where(
            NoticeChange.notice_id.is_(None), NoticeChange.recipient == BILLING_EMAIL
        )
    )
    assert waiting == 3  # recorded, not lost

    clock.now += dt.timedelta(hours=23)
    run_worker(app)
    assert len(smtp.to(BILLING_EMAIL)) == 3  # still within 24 hours of the first

    clock.now += dt.timedelta(hours=1)
    run_worker(app)
    sent = smtp.to(BILLING_EMAIL)
    assert len(sent) == 4
    assert [line.split(": ")[-1] for line in change_lines(sent[-1])] == ["PO number."] * 3
    assert audit_count(db, "billing_details.update") == 6
    assert (
        db.scalar(select(func.sum(Notice.change_count)).where(Notice.recipient == BILLING_EMAIL))
        == 6
    )


def test_a_window_of_zero_sends_on_the_next_pass(app, db, group, customer, smtp):
    change_settings(app, NOTICE_WINDOW_MINUTES=0)
    save_po(customer, group, "PO-1")
    run_worker(app)
    assert len(smtp.to(BILLING_EMAIL)) == 1


# --- a new billing contact address ---------------------------------------------------


def test_a_new_address_gets_one_named_email_and_no_notice_until_it_confirms(
    app, db, group, customer, smtp, clock
):
    assert save_billing_contact(customer, group, email=NEW).status_code == 303
    # Saved again and again, with the same new address: still one "named" email.
    for n in range(5):
        assert (
            save_billing_contact(customer, group, email=NEW, phone=f"+49 30 99{n}00").status_code
            == 303
        )
    save_po(customer, group, "PO-9")
    after_window(app, clock)

    [named] = smtp.to(NEW)
    assert named["Subject"].strip() == f"Confirm you are the billing contact of {GROUP_NAME}"
    named_text = plain_text(named)
    assert "You were named billing contact of" in named_text
    assert "works once and expires in 72 hours" in named_text
    html = named.get_body(preferencelist=("html",)).get_content()
    assert LINK_RE.search(html)
    # The old, confirmed address heard of everything, in one notice.
    [notice] = smtp.to(BILLING_EMAIL)
    assert len(change_lines(notice)) == 7
    assert "awaiting confirmation" in plain_text(notice)
    contact = billing_contact(db, group)
    assert (contact.email, contact.pending_email) == (BILLING_EMAIL, NEW)
    listing = customer.get(url(group, "/contacts")).text
    assert NEW in listing and "Awaiting confirmation" in listing
    form = customer.get(url(group, "/contacts/billing")).text
    assert f'value="{NEW}"' in form and "is awaiting confirmation" in form
    # The token is stored only as its hash.
    token = confirm_path(app, smtp).rsplit("/", 1)[1]
    [row] = db.scalars(select(ContactConfirmation)).all()
    assert row.token_hash != token and len(row.token_hash) == 64
    assert token not in str(db.scalars(select(AuditEvent.detail)).all())


def test_a_get_of_the_link_does_not_confirm_and_the_post_does(
    app, db, group, customer, smtp, clock
):
    save_billing_contact(customer, group, email=NEW)
    path = confirm_path(app, smtp)
    scanner = app.test_client()

    assert scanner.head(path).status_code == 200
    opened = scanner.get(path)
    assert opened.status_code == 303
    assert opened.headers["Location"].endswith("/billing-contact/confirm")  # token gone
    page = scanner.get(opened.headers["Location"])
    assert page.status_code == 200
    assert f"Make <strong>{NEW}</strong> the billing contact" in page.text
    for _ in range(3):
        scanner.get(path)
    assert billing_contact(db, group).email == BILLING_EMAIL  # GETs confirm nothing

    # Without the CSRF token: refused, nothing confirmed.
    refused = scanner.post(opened.headers["Location"], data={})
    assert refused.status_code == 400
    assert "Traceback" not in refused.text
    assert billing_contact(db, group).email == BILLING_EMAIL

    browser = app.test_client()
    page = browser.get(browser.get(path).headers["Location"])
    done = browser.post(
        f"/p/{group.public_id}/billing-contact/confirm",
        data={"csrf_token": csrf_token(page.text)},
    )
    assert done.status_code == 200
    assert f"<strong>{NEW}</strong> is now the billing contact" in done.text
    contact = billing_contact(db, group)
    assert (contact.email, contact.pending_email) == (NEW, None)
    assert audit_count(db, "contact.billing.confirm") == 1

    # Single use: the link, and a second POST, now lead to "cannot be used".
    again = browser.get(path)
    assert again.headers["Location"].endswith("/billing-contact/invalid")
    assert "cannot be used" in browser.get(again.headers["Location"]).text

    # From now on the new address hears of changes, and the old one heard of the switch.
    smtp.clear()
    save_po(customer, group, "PO-NEW")
    after_window(app, clock)
    [to_new] = smtp.to(NEW)
    assert "changed the billing details: PO number." in plain_text(to_new)
    [to_old] = smtp.to(BILLING_EMAIL)
    assert "email address (the new one has been confirmed)" in plain_text(to_old)


def test_twenty_racing_confirmations_succeed_once(app, db, group, customer, smtp):
    save_billing_contact(customer, group, email=NEW)
    path = confirm_path(app, smtp)
    browser = app.test_client()
    page = browser.get(browser.get(path).headers["Location"])
    token = csrf_token(page.text)
    clients = [clone(app, browser) for _ in range(20)]

    results = race(
        clients,
        lambda c: (
            c.post(
                f"/p/{group.public_id}/billing-contact/confirm", data={"csrf_token": token}
            ).status_code
        ),
    )

    assert sorted(results) == [200] + [303] * 19
    assert audit_count(db, "contact.billing.confirm") == 1
    assert billing_contact(db, group).email == NEW


def test_the_link_expires(app, db, group, customer, smtp, clock):
    save_billing_contact(customer, group, email=NEW)
    path = confirm_path(app, smtp)
    browser = app.test_client()
    page = browser.get(browser.get(path).headers["Location"])
    clock.now += dt.timedelta(hours=settings_of(app).CONTACT_CONFIRM_TTL_HOURS, seconds=1)

    late = browser.post(
        f"/p/{group.public_id}/billing-contact/confirm",
        data={"csrf_token": csrf_token(page.text)},
    )

    assert late.status_code == 303 and late.headers["Location"].endswith("/invalid")
    assert browser.get(path).headers["Location"].endswith("/invalid")
    assert billing_contact(db, group).email == BILLING_EMAIL


def test_a_forged_or_foreign_token_leads_nowhere(app, db, group, customer, smtp, clock):
    other = portal_group(db, name="Other group")
    save_billing_contact(customer, group, email=NEW)
    path = confirm_path(app, smtp)
    browser = app.test_client()
    assert browser.get(path + "x").headers["Location"].endswith("/invalid")
    foreign = path.replace(group.public_id, other.public_id)
    assert browser.get(foreign).headers["Location"].endswith("/invalid")
    assert (
        browser.get(f"/p/{group.public_id}/billing-contact/confirm")
        .headers["Location"]
        .endswith("/invalid")
    )


def test_naming_another_address_retires_the_first_link_and_naming_it_again_revives_it(
    app, db, group, customer, smtp
):
    save_billing_contact(customer, group, email=NEW)
    first = confirm_path(app, smtp)
    save_billing_contact(customer, group, email="other@acme.com")
    second = confirm_path(app, smtp, "other@acme.com")
    browser = app.test_client()
    assert browser.get(first).headers["Location"].endswith("/invalid")

    response = save_billing_contact(customer, group, email=NEW)

    assert response.status_code == 303
    assert len(smtp.to(NEW)) == 1  # within the interval: no second "named" email
    assert flashes(customer.get(url(group, "/contacts")).text)[-1].startswith(
        f"We emailed {NEW} a link to confirm it recently; that link still works."
    )
    assert browser.get(second).headers["Location"].endswith("/invalid")
    assert browser.get(first).headers["Location"].endswith("/billing-contact/confirm")


def test_going_back_to_the_confirmed_address_cancels_the_pending_one(
    app, db, group, customer, smtp
):
    save_billing_contact(customer, group, email=NEW)
    path = confirm_path(app, smtp)
    save_billing_contact(customer, group, email=BILLING_EMAIL)
    contact = billing_contact(db, group)
    assert (contact.email, contact.pending_email) == (BILLING_EMAIL, None)
    assert app.test_client().get(path).headers["Location"].endswith("/invalid")
    assert "Awaiting confirmation" not in customer.get(url(group, "/contacts")).text


def test_a_bill_group_names_a_bounded_number_of_addresses_a_day(
    app, db, group, customer, smtp, clock
):
    change_settings(app, CONTACT_NAMED_LIMIT_PER_DAY=2)
    save_billing_contact(customer, group, email="one@acme.com")
    clock.now += dt.timedelta(minutes=20)
    save_billing_contact(customer, group, email="two@acme.com")

    refused = save_billing_contact(customer, group, email="three@acme.com", name="Someone")

    assert refused.status_code == 429
    assert "Too many new billing contact addresses" in refused.text
    # Room again when the first of today's two is a day old.
    assert refused.headers["Retry-After"] == str(24 * 60 * 60 - 20 * 60)
    run_worker(app)
    assert smtp.to("three@acme.com") == []
    contact = billing_contact(db, group)
    assert (contact.name, contact.pending_email) == ("Jo Bloggs", "two@acme.com")
    clock.now += dt.timedelta(days=1, seconds=1)
    assert sign_in(customer, app, smtp, group.public_id, ADDRESS).status_code == 303
    assert save_billing_contact(customer, group, email="three@acme.com").status_code == 303
    run_worker(app)
    assert len(smtp.to("three@acme.com")) == 1


def test_a_first_billing_contact_waits_for_confirmation_too(app, db, smtp, clock, client):
    group = portal_group(db, name="No contact yet")
    db.execute(Contact.__table__.delete().where(Contact.bill_group_id == group.id))
    db.commit()
    assert sign_in(client, app, smtp, group.public_id, ADDRESS).status_code == 303
    smtp.clear()

    assert save_billing_contact(client, group, email=NEW).status_code == 303
    save_po(client, group, "PO-1")
    after_window(app, clock)

    # The new address gets only the "named" email; the customer who made the changes
    # hears of them (the change alert to the person who made a change).
    assert sorted(m["To"] for m in smtp.messages) == sorted([NEW, ADDRESS])
    contact = billing_contact(db, group)
    assert (contact.email, contact.pending_email) == (None, NEW)
    assert "nobody receives notices about changes" in client.get(url(group, "/contacts")).text


def test_an_address_the_billing_system_sets_counts_as_confirmed(app, db, group, smtp, clock):
    from portal.actions import Actor
    from portal.actions.contacts import update_contact
    from portal.sync import schemas

    with app.app_context():
        from portal import db as portal_db

        session = portal_db.session()
        found = session.get(BillGroup, group.id)
        assert found is not None
        body = schemas.ContactIn.model_validate(
            {
                "name": "Jo Bloggs",
                "email": "ap-team@acme.com",
                "line1": "Hauptstraße 1",
                "city": "Berlin",
                "country": "DE",
            }
        )
        update_contact(
            session, Actor.import_run("test"), found, ContactKind.BILLING, body.model_dump()
        )
        session.commit()
        assert notices.recipients(found) == ["ap-team@acme.com"]
    contact = billing_contact(db, group)
    assert (contact.email, contact.pending_email) == ("ap-team@acme.com", None)
    assert smtp.messages == []  # no confirmation asked of the billing system's address
