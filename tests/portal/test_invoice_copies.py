"""Invoice-copy recipients (issue 18): a billing manager adds an address that must
confirm by a link (a GET never confirms) before it receives anything; each new invoice
the billing system sends is then emailed to it once, PDF attached, by the worker; a
one-click link stops the copies. The addresses never admit anyone to the portal.

Every email here goes through the outbox to the real SMTP server of tests/conftest.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.access import may_access
from portal.actions import Actor, TooMany
from portal.actions import invoice_copies as actions
from portal.clock import today
from portal.models import (
    AuditEvent,
    BillGroup,
    BillGroupChange,
    ContactConfirmation,
    CustomerRole,
    InvoiceCopy,
    InvoiceCopyRecipient,
)
from portal.sync import schemas, upsert
from tests.conftest import Inbox, csrf_token, run_worker
from tests.portal.pages_helpers import (
    ADDRESS,
    BILLING_EMAIL,
    flashes,
    form_data,
    plain_text,
    portal_group,
    send_notices,
    set_role,
    url,
)
from tests.portal.signin_helpers import clone, race
from tests.settings import change_settings

INBOX = "ap-inbox@acme-payables.com"
PAGE = "/billing-details/invoice-copies"
CONFIRM_RE = re.compile(r"https://portal\.example\.test(/p/[\w-]+/invoice-copies/confirm/[\w-]+)")
STOP_RE = re.compile(r"https://portal\.example\.test(/p/[\w-]+/invoice-copies/stop/[\w-]+)")

pytestmark = pytest.mark.usefixtures("clock")


def add(client: FlaskClient, group: BillGroup, address: str) -> Any:
    return client.post(url(group, PAGE), data=form_data(client, url(group, PAGE), email=address))


def rows(db: Session, model: type[Any]) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model)) or 0


def link(app: Flask, smtp: Inbox, pattern: re.Pattern[str], address: str = INBOX) -> str:
    run_worker(app)
    match = pattern.search(plain_text(smtp.to(address)[-1]))
    assert match, plain_text(smtp.to(address)[-1])
    return match.group(1)


def confirm(client: FlaskClient, path: str) -> Any:
    """Open the link, then press the one button, as the recipient would."""
    opened = client.get(path)
    page = client.get(opened.headers["Location"])
    assert page.status_code == 200, page.text
    return client.post(page.request.path, data={"csrf_token": csrf_token(page.text)})


def added_and_confirmed(app, db, group, customer, smtp, address: str = INBOX) -> None:
    assert add(customer, group, address).status_code == 303
    response = confirm(app.test_client(), link(app, smtp, CONFIRM_RE, address))
    assert response.status_code == 200, response.text


def send_invoice(app: Flask, group: BillGroup, number: str, status: str = "open") -> None:
    """The billing system sends an invoice, as the API and the import do."""
    with app.app_context():
        from portal import db as portal_db

        session = portal_db.session()
        body = schemas.InvoiceIn.model_validate(
            {
                "bill_group": group.external_id,
                "number": number,
                "status": status,
                "issue_date": "2026-11-01",
                "due_date": "2026-12-01",
                "lines": [
                    {
                        "description": "Seats",
                        "quantity": "1",
                        "unit_price_minor": 1000,
                        "amount_minor": 1000,
                        "tax_rate_bp": 0,
                        "tax_minor": 0,
                    }
                ],
            }
        )
        upsert.put(session, Actor.import_run("test"), "invoices", f"ext-{number}", body)
        session.commit()


@pytest.fixture
def group(db: Session) -> BillGroup:
    return portal_group(db, external_id="bg-copies")


# --- the journey -----------------------------------------------------------------------


def test_an_added_address_confirms_by_post_then_gets_each_new_invoice_once(
    app, db, group, customer, smtp
):
    response = add(customer, group, INBOX)
    assert response.status_code == 303
    page = customer.get(url(group, PAGE)).text
    assert flashes(page) == [
        f"We have emailed {INBOX} a link to confirm it. It receives no invoices until it is "
        "confirmed."
    ]
    assert INBOX in page and "Awaiting confirmation" in page

    # Unconfirmed: an invoice now sends it nothing.
    send_invoice(app, group, "INV-1")
    path = link(app, smtp, CONFIRM_RE)
    [asked] = smtp.to(INBOX)
    assert asked["Subject"].startswith("Confirm you want copies")
    assert ADDRESS in plain_text(asked)  # who added it

    # A GET (a mail scanner) confirms nothing; the POST from the one-click page does.
    recipient = app.test_client()
    opened = recipient.get(path)
    assert opened.status_code == 303
    button = recipient.get(opened.headers["Location"])
    assert "Confirm you want invoice copies" in button.text
    db.expire_all()
    assert db.scalar(select(InvoiceCopyRecipient.confirmed_at)) is None
    done = recipient.post(button.request.path, data={"csrf_token": csrf_token(button.text)})
    assert done.status_code == 200 and "Address confirmed" in done.text
    db.expire_all()
    assert db.scalar(select(InvoiceCopyRecipient.confirmed_at)) is not None

    send_invoice(app, group, "INV-2")
    send_invoice(app, group, "INV-2")  # the sync sends it again: no second copy
    send_invoice(app, group, "INV-3", status="void")  # a void invoice: no copy
    run_worker(app)
    copies = [m for m in smtp.to(INBOX) if m["Subject"].startswith("Invoice")]
    assert [m["Subject"] for m in copies] == [f"Invoice INV-2 from {group.entity.name}"]
    [pdf] = [part for part in copies[0].iter_attachments()]
    assert pdf.get_filename() == "INV-2.pdf" and pdf.get_content().startswith(b"%PDF")
    text = plain_text(copies[0])
    assert f"because {ADDRESS} added this address" in text
    assert f"/p/{group.public_id}/invoices" not in text  # no portal link for them
    assert rows(db, InvoiceCopy) == 1
    run_worker(app)
    assert len([m for m in smtp.to(INBOX) if m["Subject"].startswith("Invoice")]) == 1

    # No portal access, ever.
    db.expire_all()
    with app.app_context():
        assert may_access(db.get(BillGroup, group.id), INBOX, today()) is None

    # The one-click stop: GET shows a button, the POST removes the address.
    stop = STOP_RE.search(text)
    assert stop
    stopping = app.test_client()
    shown = stopping.get(stopping.get(stop.group(1)).headers["Location"])
    assert rows(db, InvoiceCopyRecipient) == 1
    gone = stopping.post(shown.request.path, data={"csrf_token": csrf_token(shown.text)})
    assert gone.status_code == 200 and "No more invoice copies" in gone.text
    assert rows(db, InvoiceCopyRecipient) == 0
    again = app.test_client().get(stop.group(1))
    assert again.headers["Location"].endswith("/invoice-copies/invalid")
    send_invoice(app, group, "INV-4")
    run_worker(app)
    assert rows(db, InvoiceCopy) == 1

    # Every step is in the audit trail and the bill group's change history.
    db.expire_all()
    actions_done = db.scalars(
        select(AuditEvent.action).where(AuditEvent.action.like("invoice_copy.%"))
    ).all()
    assert actions_done == ["invoice_copy.add", "invoice_copy.confirm", "invoice_copy.remove"]
    history = customer.get(url(group, "/billing-details/history")).text
    assert f"{INBOX} (awaiting confirmation)" in history and "Recipient removed" in history


def test_the_billing_system_reads_the_list_with_its_status(app, db, group, customer, smtp):
    from tests.api.conftest import Api, make_key

    added_and_confirmed(app, db, group, customer, smtp)
    assert add(customer, group, "second@acme-payables.com").status_code == 303
    api = Api(app.test_client(), make_key(app, {"read"}))
    listed = api.get("/bill-groups/bg-copies/invoice-copy-recipients")
    assert listed.status_code == 200
    data = listed.get_json()["data"]
    assert [(r["email"], r["status"]) for r in data] == [
        (INBOX, "confirmed"),
        ("second@acme-payables.com", "pending"),
    ]
    assert data[0]["added_by"] == ADDRESS and data[1]["confirmed_at"] is None
    assert api.get("/bill-groups/nope/invoice-copy-recipients").status_code == 404


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, message",
    [
        ("ap@acme.com, ar@acme.com", "one at a time"),
        ("ap@acme.com;ar@acme.com", "one at a time"),
        ("ap@ac\x07me.com", "control characters"),
        ("ap\u200b@acme.com", "control characters"),
        ("", "Enter the email address"),
        ("not-an-address", "email address"),
        ("x" * 300 + "@acme.com", ""),
    ],
)
def test_a_bad_address_is_refused_with_a_message_and_nothing_written(
    app, db, group, customer, smtp, address, message
):
    response = add(customer, group, address)
    assert response.status_code == 400
    assert message in response.text
    assert rows(db, InvoiceCopyRecipient) == 0 and rows(db, ContactConfirmation) == 0
    run_worker(app)
    assert smtp.messages == []


def test_an_address_of_another_bill_groups_id_is_refused(app, db, group, customer, db_other):
    response = add(customer, group, db_other.public_id)
    assert response.status_code == 400
    assert rows(db, InvoiceCopyRecipient) == 0


def test_a_lone_surrogate_is_a_400_and_nothing_written(db, group, customer):
    page = url(group, PAGE)
    token = csrf_token(customer.get(page).text)
    body = f"csrf_token={token}&email=ap%ED%A0%80@acme.com"
    response = customer.post(page, data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert rows(db, InvoiceCopyRecipient) == 0


def test_twenty_identical_adds_at_once_make_one_recipient(app, db, group, customer, smtp):
    clients = [clone(app, customer) for _ in range(20)]
    forms = [form_data(c, url(group, PAGE), email=INBOX) for c in clients]
    statuses = race(
        list(zip(clients, forms, strict=True)),
        lambda job: job[0].post(url(group, PAGE), data=job[1]).status_code,
    )
    assert statuses.count(303) == 1 and set(statuses) <= {303, 409}
    assert rows(db, InvoiceCopyRecipient) == 1
    assert rows(db, ContactConfirmation) == 1
    run_worker(app)
    assert len(smtp.to(INBOX)) == 1


def test_adding_the_same_address_twice_is_a_conflict(db, group, customer):
    assert add(customer, group, INBOX).status_code == 303
    again = add(customer, group, INBOX.upper())
    assert again.status_code == 409 and "already been added" in again.text
    assert rows(db, InvoiceCopyRecipient) == 1


def test_at_most_ten_recipients_and_a_bounded_number_of_confirmation_emails(
    app, db, group, customer
):
    for n in range(actions.MAX_RECIPIENTS):
        assert add(customer, group, f"ap{n}@acme-payables.com").status_code == 303
    over = add(customer, group, "one-more@acme-payables.com")
    assert over.status_code == 409 and "at most 10" in over.text
    assert rows(db, InvoiceCopyRecipient) == actions.MAX_RECIPIENTS
    # Remove them all; adding again is held by the day's confirmation emails.
    for recipient in db.scalars(select(InvoiceCopyRecipient)).all():
        page = customer.get(url(group, PAGE))
        customer.post(
            url(group, f"{PAGE}/{recipient.id}/remove"),
            data={"csrf_token": csrf_token(page.text)},
        )
    assert rows(db, InvoiceCopyRecipient) == 0
    held = add(customer, group, "later@acme-payables.com")
    assert held.status_code == 429 and int(held.headers["Retry-After"]) > 0
    assert rows(db, InvoiceCopyRecipient) == 0


def remove_all(customer: FlaskClient, db: Session, group: BillGroup) -> None:
    for recipient in db.scalars(
        select(InvoiceCopyRecipient).where(InvoiceCopyRecipient.bill_group_id == group.id)
    ).all():
        page = customer.get(url(group, PAGE))
        customer.post(
            url(group, f"{PAGE}/{recipient.id}/remove"),
            data={"csrf_token": csrf_token(page.text)},
        )
    db.expire_all()


def test_add_remove_add_does_not_mail_one_address_again_and_again(app, db, group, customer, smtp):
    """A stranger's address, added and removed over and over: one email, whose link
    works again after each re-add (as a billing contact named again)."""
    for _ in range(5):
        assert add(customer, group, INBOX).status_code == 303
        remove_all(customer, db, group)
    assert add(customer, group, INBOX).status_code == 303
    run_worker(app)
    assert len(smtp.to(INBOX)) == 1
    assert rows(db, ContactConfirmation) == 1
    response = confirm(app.test_client(), link(app, smtp, CONFIRM_RE))
    assert response.status_code == 200 and "Address confirmed" in response.text


def test_one_address_gets_a_bounded_number_of_confirmations_from_all_bill_groups(app, db, smtp):
    """Someone admitted to many bill groups (of one seller or of many) cannot use each
    group's own daily budget to mail one stranger: the address has a budget of its own."""
    groups = [portal_group(db, name=f"Acme {n}", external_id=f"bg-many-{n}") for n in range(5)]
    answers = []
    with app.app_context():
        from portal import db as portal_db

        session = portal_db.session()
        for group in groups:
            found = session.get(BillGroup, group.id)
            try:
                actions.add_recipient(session, Actor.customer(ADDRESS), found, INBOX)
            except TooMany as exc:
                session.rollback()
                answers.append(exc.status)
            else:
                session.commit()
                answers.append("added")
    per_address = actions.CONFIRMATIONS_PER_ADDRESS_PER_DAY
    assert answers == ["added"] * per_address + [429] * (len(groups) - per_address)
    run_worker(app)
    assert len(smtp.to(INBOX)) == per_address
    assert rows(db, InvoiceCopyRecipient) == per_address


def test_a_forged_foreign_or_reused_confirmation_leads_nowhere(app, db, group, customer, smtp):
    assert add(customer, group, INBOX).status_code == 303
    path = link(app, smtp, CONFIRM_RE)
    other = portal_group(db, name="Other group")
    stranger = app.test_client()
    for forged in (
        path.rsplit("/", 1)[0] + "/" + "A" * 43,
        path.replace(group.public_id, other.public_id),  # another bill group's link
        path.replace("/invoice-copies/", "/billing-contact/"),  # the other purpose
    ):
        response = stranger.get(forged)
        assert response.status_code in (303, 404)
        if response.status_code == 303:
            assert response.headers["Location"].endswith("/invalid")
    # A POST with no link opened first confirms nothing either.
    blank = stranger.get(url(group))  # the sign-in page: a form, so a CSRF token
    posted = stranger.post(
        url(group, "/invoice-copies/confirm"), data={"csrf_token": csrf_token(blank.text)}
    )
    assert posted.headers["Location"].endswith("/invoice-copies/invalid")
    db.expire_all()
    assert db.scalar(select(InvoiceCopyRecipient.confirmed_at)) is None

    assert confirm(app.test_client(), path).status_code == 200
    reused = app.test_client().get(path)
    assert reused.headers["Location"].endswith("/invoice-copies/invalid")


def test_removing_another_groups_recipient_is_404_and_nothing_changes(
    app, db, group, customer, smtp
):
    other = portal_group(db, name="Other group")
    with app.app_context():
        from portal import db as portal_db

        session = portal_db.session()
        theirs = actions.add_recipient(
            session, Actor.customer("x@acme.com"), session.get(BillGroup, other.id), INBOX
        )
        session.commit()
        theirs_id = theirs.id
    page = customer.get(url(group, PAGE))
    for target in (theirs_id, 2**63 - 1, 10**30):
        response = customer.post(
            url(group, f"{PAGE}/{target}/remove"), data={"csrf_token": csrf_token(page.text)}
        )
        assert response.status_code == 404
    assert rows(db, InvoiceCopyRecipient) == 1


def test_a_viewer_sees_no_form_and_a_forged_add_or_remove_is_refused(app, db, group, customer):
    """A viewer's rule reads the list; adding or removing is a billing manager's: 403,
    audited as every refused customer write is, nothing written."""
    assert add(customer, group, INBOX).status_code == 303
    recipient_id = db.scalar(select(InvoiceCopyRecipient.id))
    page = customer.get(url(group, PAGE)).text
    set_role(app, db, group, CustomerRole.VIEWER)
    listed = customer.get(url(group, PAGE)).text
    assert INBOX in listed and "Add an address" not in listed and "Remove" not in listed
    token = csrf_token(page)
    added = customer.post(url(group, PAGE), data={"email": "b@acme.com", "csrf_token": token})
    removed = customer.post(url(group, f"{PAGE}/{recipient_id}/remove"), data={"csrf_token": token})
    assert (added.status_code, removed.status_code) == (403, 403)
    db.expire_all()
    assert db.scalars(select(InvoiceCopyRecipient.email)).all() == [INBOX]
    forbidden = select(func.count()).where(AuditEvent.action == "customer.forbidden")
    assert db.scalar(forbidden) == 2


def test_an_unconfirmed_recipient_never_receives_a_copy(app, db, group, customer, smtp):
    assert add(customer, group, INBOX).status_code == 303
    for n in range(3):
        send_invoice(app, group, f"INV-U{n}")
    run_worker(app)
    assert [m["Subject"] for m in smtp.to(INBOX)] == [
        f"Confirm you want copies of {group.name}'s invoices"
    ]
    assert rows(db, InvoiceCopy) == 0


def test_a_copy_waiting_when_its_recipient_is_removed_is_not_sent(app, db, group, customer, smtp):
    change_settings(app, NOTICE_WINDOW_MINUTES=60)
    added_and_confirmed(app, db, group, customer, smtp)
    send_invoice(app, group, "INV-W")
    recipient = db.scalar(select(InvoiceCopyRecipient))
    page = customer.get(url(group, PAGE))
    customer.post(
        url(group, f"{PAGE}/{recipient.id}/remove"), data={"csrf_token": csrf_token(page.text)}
    )
    run_worker(app)
    assert [m for m in smtp.to(INBOX) if m["Subject"].startswith("Invoice")] == []
    db.expire_all()
    assert db.scalar(select(InvoiceCopy.skipped)) is True


# --- the change history ------------------------------------------------------------------


def test_the_history_lists_every_change_newest_first_with_old_and_new(
    app, db, group, customer, smtp
):
    for n in range(30):
        page = url(group, "/billing-details")
        customer.post(page, data=form_data(customer, page, po_number=f"PO-{n}", vat_number=""))
    first = customer.get(url(group, "/billing-details/history"))
    assert first.status_code == 200
    assert "PO-28 → PO-29" in first.text and "Showing 1–25 of 30 changes" in first.text
    assert first.text.index("PO-28 → PO-29") < first.text.index("PO-27 → PO-28")
    second = customer.get(url(group, "/billing-details/history?page=2"))
    assert "(none) → PO-0" in second.text
    last = customer.get(url(group, "/billing-details/history?page=999999999999"))
    assert last.status_code == 200 and "(none) → PO-0" in last.text
    assert db.scalar(select(func.count()).select_from(BillGroupChange)) == 30


def test_the_history_shows_what_staff_and_the_billing_system_changed(app, db, group, customer):
    with app.app_context():
        from portal import db as portal_db
        from portal.actions import accounts

        session = portal_db.session()
        found = session.get(BillGroup, group.id)
        values = {name: getattr(found, name) for name in accounts.GROUP_FIELDS}
        accounts.update_bill_group(
            session, Actor.api_key("billing-sync"), found, values | {"po_number": "PO-API"}
        )
        session.commit()
    page = customer.get(url(group, "/billing-details/history")).text
    assert "the billing system (billing-sync)" in page and "(none) → PO-API" in page
    db.expire_all()
    [change] = db.scalars(select(BillGroupChange)).all()
    assert change.actor_type == "api"


def test_the_history_names_a_data_import_without_its_path_on_the_server(app, db, group, customer):
    with app.app_context():
        from portal import db as portal_db
        from portal.actions import accounts

        session = portal_db.session()
        found = session.get(BillGroup, group.id)
        values = {name: getattr(found, name) for name in accounts.GROUP_FIELDS}
        actor = Actor.import_run("/srv/portal/exports/2026-11.jsonl")
        accounts.update_bill_group(session, actor, found, values | {"po_number": "PO-IMP"})
        session.commit()
    page = customer.get(url(group, "/billing-details/history")).text
    assert "a data import" in page and "(none) → PO-IMP" in page
    assert "/srv/portal" not in page and "2026-11.jsonl" not in page


def test_the_history_and_the_notice_never_show_the_api_keys_hint(app, db, group, customer, smtp):
    """A real API request's actor carries the key's hint (its first characters, a part
    of the secret) for staff's audit trail; the customer's history and the emailed
    notice name the key only."""
    with app.app_context():
        from portal import db as portal_db
        from portal.actions import accounts

        session = portal_db.session()
        found = session.get(BillGroup, group.id)
        values = {name: getattr(found, name) for name in accounts.GROUP_FIELDS}
        actor = Actor.api_key("billing-sync", "pk_live_Sec18x")
        accounts.update_bill_group(session, actor, found, values | {"po_number": "PO-API"})
        session.commit()
    page = customer.get(url(group, "/billing-details/history")).text
    assert "the billing system (billing-sync)" in page
    assert "Sec18x" not in page
    db.expire_all()
    [change] = db.scalars(select(BillGroupChange)).all()
    assert "Sec18x" not in change.actor
    # Staff's audit trail still says which key it was.
    assert "pk_live_Sec18x" in actor.audit()["actor"]
    send_notices(app)
    [notice] = smtp.to(BILLING_EMAIL)
    assert "billing-sync" in plain_text(notice) and "Sec18x" not in plain_text(notice)


@pytest.fixture
def db_other(db: Session) -> BillGroup:
    return portal_group(db, name="Another group")


def test_the_billing_contact_hears_of_a_new_recipient(app, db, group, customer, smtp):
    change_settings(app, NOTICE_WINDOW_MINUTES=0)
    assert add(customer, group, INBOX).status_code == 303
    run_worker(app)
    [notice] = smtp.to(BILLING_EMAIL)
    assert "Invoice copies changed" in notice["Subject"]
    assert f"{INBOX} (awaiting confirmation)" in plain_text(notice)
