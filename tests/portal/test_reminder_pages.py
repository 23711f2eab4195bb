"""Stopping reminders from the link in one (RFC 8058 one-click, and the page behind the
link), the portal's Email reminders page, and the reminder's deep link through sign-in.

Abuse beside the happy paths: a token for another bill group or an address never
reminded, altered, expired, with non-Latin or control characters; a GET never stops
anything; a one-click POST without its body; twenty POSTs racing; the rate limit."""

from __future__ import annotations

import datetime as dt
import re
import time

import itsdangerous.timed
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from emails import outbox
from portal import reminders
from portal.models import (
    AuditEvent,
    BillGroup,
    CustomerRole,
    OutboxMessage,
    ReminderKind,
    ReminderUnsubscription,
)
from tests.admin.conftest import staff_client  # noqa: F401  (the preview test)
from tests.conftest import csrf_token, link_and_code, request_link, run_worker
from tests.factories import TODAY, make_invoice
from tests.portal.pages_helpers import BILLING_EMAIL, portal_group, set_role, url
from tests.portal.signin_helpers import race
from tests.settings import change_settings

pytestmark = pytest.mark.usefixtures("clock")

DAY = dt.timedelta(days=1)
BASE = "https://portal.example.test"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def remind(app: Flask, db: Session, group: BillGroup, kind: str = "due_soon") -> OutboxMessage:
    """Make `group` due a reminder of `kind` and queue it; the outbox row."""
    column = reminders.COLUMNS[ReminderKind(kind)]
    setattr(db.merge(group).entity, column, "7")
    due = TODAY + 2 * DAY if kind == "due_soon" else TODAY - 8 * DAY
    make_invoice(db, db.merge(group), issue_date=TODAY - 9 * DAY, due_date=due)
    db.commit()
    with app.app_context():
        assert reminders.send_due(db) == 1
    return db.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.kind == f"reminder_{kind}")
        .order_by(OutboxMessage.id.desc())
    ).first()


def unsubscribe_path(app: Flask, message: OutboxMessage) -> str:
    with app.app_context():
        headers = dict(outbox.unseal_headers(message.headers))
    return headers["List-Unsubscribe"].removeprefix(f"<{BASE}").removesuffix(">")


def stopped(db: Session) -> list[tuple[int, str, str]]:
    db.expire_all()
    return sorted(
        (row.bill_group_id, row.address, row.kind.value)
        for row in db.scalars(select(ReminderUnsubscription))
    )


def audited(db: Session, action: str) -> list[AuditEvent]:
    db.expire_all()
    return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action)))


@pytest.fixture
def group(db: Session) -> BillGroup:
    return portal_group(db)


@pytest.fixture
def link(app, db, group) -> str:
    return unsubscribe_path(app, remind(app, db, group))


# --- the happy paths --------------------------------------------------------------------


def test_one_click_post_stops_them_without_cookie_csrf_or_sign_in(app, db, group, link):
    client = app.test_client()
    response = client.post(link, data=ONE_CLICK)
    assert response.status_code == 200
    assert "Reminders stopped" in response.text
    assert stopped(db) == [(group.id, BILLING_EMAIL, "due_soon")]
    [row] = audited(db, "reminders.unsubscribe")
    assert row.bill_group_id == group.id and BILLING_EMAIL in row.detail
    # Again: still stopped, nothing more written.
    assert client.post(link, data=ONE_CLICK).status_code == 200
    assert len(stopped(db)) == 1 and len(audited(db, "reminders.unsubscribe")) == 1


def test_the_link_opened_in_a_browser_shows_a_button_and_only_the_button_stops(
    app, db, group, link
):
    client = app.test_client()
    page = client.get(link)
    assert page.status_code == 200
    assert "Stop these reminders?" in page.text and BILLING_EMAIL in page.text
    assert stopped(db) == []  # a GET (a mail scanner) never stops anything
    assert client.head(link).status_code in (200, 405) and stopped(db) == []
    # The page's form is an ordinary CSRF-protected one.
    assert client.post(f"{link}/confirm").status_code == 400
    assert stopped(db) == []
    done = client.post(f"{link}/confirm", data={"csrf_token": csrf_token(page.text)})
    assert done.status_code == 200 and "Reminders stopped" in done.text
    assert stopped(db) == [(group.id, BILLING_EMAIL, "due_soon")]


def test_a_one_click_post_without_its_body_stops_nothing(app, db, link):
    client = app.test_client()
    for data in ({}, {"List-Unsubscribe": "one-click"}, {"List-Unsubscribe": "One-Click "}):
        response = client.post(link, data=data)
        assert response.status_code == 400
        assert "This link cannot be used" in response.text
    assert stopped(db) == []


def test_the_next_reminder_of_that_kind_is_not_sent_and_overdue_still_is(app, db, group, link):
    app.test_client().post(link, data=ONE_CLICK)
    group = db.merge(group)
    make_invoice(db, group, issue_date=TODAY - 9 * DAY, due_date=TODAY + 3 * DAY)
    db.commit()
    with app.app_context():
        assert reminders.send_due(db) == 0
    assert remind(app, db, group, "overdue").headers is None  # essential: no unsubscribe


# --- abuse ------------------------------------------------------------------------------


def _token(link: str) -> str:
    return link.rsplit("/", 1)[1]


def refused(client: FlaskClient, path: str) -> None:
    for response in (client.get(path), client.post(path, data=ONE_CLICK)):
        assert response.status_code in (400, 404), (path, response.status_code)
        if response.status_code == 400:
            assert "cannot be used" in response.text or "not right" in response.text


def test_another_bill_groups_token_is_refused(app, db, group, link):
    other = portal_group(db, name="Other group")
    client = app.test_client()
    refused(client, f"/p/{other.public_id}/unsubscribe/{_token(link)}")
    assert stopped(db) == []


def test_a_token_for_an_address_never_reminded_is_refused(app, db, group, link):
    with app.app_context():
        token = reminders.unsubscribe_token(group, "someone-else@acme.com", [ReminderKind.DUE_SOON])
    refused(app.test_client(), url(group, f"/unsubscribe/{token}"))
    assert stopped(db) == []


def test_a_token_for_overdue_is_refused(app, db, group, link):
    with app.app_context():
        token = reminders.unsubscribe_token(group, BILLING_EMAIL, [ReminderKind.OVERDUE])
    refused(app.test_client(), url(group, f"/unsubscribe/{token}"))
    assert stopped(db) == []


def test_a_tampered_token_is_refused(app, db, group, link):
    token = _token(link)
    payload, _, rest = token.partition(".")
    flipped = ("A" if payload[0] != "A" else "B") + payload[1:]
    client = app.test_client()
    for bad in (
        f"{flipped}.{rest}",
        token[:-2],
        token + "x",
        "",
        "not-a-token",
        "x" * 2000,
    ):
        refused(client, url(group, f"/unsubscribe/{bad}") if bad else url(group, "/unsubscribe/"))
    assert stopped(db) == []


def test_a_token_older_than_a_year_is_refused_and_one_months_old_works(
    app, db, group, link, monkeypatch
):
    def made(days_ago: int) -> str:
        then = time.time() - days_ago * 86400
        with monkeypatch.context() as patched, app.app_context():
            patched.setattr(itsdangerous.timed.time, "time", lambda: then)
            token = reminders.unsubscribe_token(group, BILLING_EMAIL, [ReminderKind.DUE_SOON])
        return url(group, f"/unsubscribe/{token}")

    refused(app.test_client(), made(366))
    assert stopped(db) == []
    assert app.test_client().post(made(30), data=ONE_CLICK).status_code == 200
    assert len(stopped(db)) == 1


@pytest.mark.parametrize(
    "bad", ["токен", "令牌.abc", "%00abc", "abc%0d%0aSet-Cookie:x", "%ED%A0%80"]
)
def test_non_latin_and_control_characters_are_refused(app, db, group, link, bad):
    refused(app.test_client(), url(group, f"/unsubscribe/{bad}"))
    refused(app.test_client(), f"{link}{bad}")
    assert stopped(db) == []


def test_an_unknown_bill_group_is_refused(app, db, link):
    refused(app.test_client(), f"/p/zzzzzzzzzzzzzzzz/unsubscribe/{_token(link)}")
    refused(app.test_client(), f"/p/short/unsubscribe/{_token(link)}")


def test_the_endpoint_is_rate_limited(app, db, link):
    change_settings(app, SECRET_ENDPOINT_LIMIT="3 per minute")
    client = app.test_client()
    codes = [client.get(link).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    assert client.post(link, data=ONE_CLICK).status_code == 429
    assert stopped(db) == []


@pytest.mark.db
def test_twenty_racing_one_click_posts_write_one_row(app, db, group, link):
    clients = [app.test_client() for _ in range(20)]
    codes = race(clients, lambda client: client.post(link, data=ONE_CLICK).status_code)
    assert codes == [200] * 20
    assert stopped(db) == [(group.id, BILLING_EMAIL, "due_soon")]
    assert len(audited(db, "reminders.unsubscribe")) == 1


# --- the portal page --------------------------------------------------------------------


def signed_in(app: Flask, smtp, group: BillGroup) -> FlaskClient:
    from tests.conftest import sign_in

    client = app.test_client()
    assert sign_in(client, app, smtp, group.public_id, "ap@acme.com").status_code == 303
    smtp.clear()
    return client


def test_a_customer_sees_what_was_stopped_and_turns_it_back_on(app, db, smtp, group, link):
    app.test_client().post(link, data=ONE_CLICK)
    client = signed_in(app, smtp, group)
    assert "Email reminders" in client.get(url(group, "/contacts")).text
    page = client.get(url(group, "/email-reminders"))
    assert page.status_code == 200
    assert f"{BILLING_EMAIL} gets no reminders about invoices due soon" in page.text
    assert "invoices due soon: 7 days before the due date" in page.text
    [row] = db.scalars(select(ReminderUnsubscription)).all()
    action = url(group, f"/email-reminders/{row.id}/resubscribe")
    assert client.post(action).status_code == 400  # no CSRF token
    assert len(stopped(db)) == 1
    done = client.post(action, data={"csrf_token": csrf_token(page.text)})
    assert done.status_code == 303
    assert stopped(db) == []
    [event] = audited(db, "reminders.resubscribe")
    assert event.actor == "ap@acme.com" and event.outcome == "started"
    again = client.post(action, data={"csrf_token": csrf_token(page.text)}, follow_redirects=True)
    assert "already on" in again.text


def test_another_bill_groups_stopped_reminder_cannot_be_turned_on(app, db, smtp, group):
    other = portal_group(db, name="Other group")
    link = unsubscribe_path(app, remind(app, db, other))
    app.test_client().post(link, data=ONE_CLICK)
    [row] = db.scalars(select(ReminderUnsubscription)).all()
    client = signed_in(app, smtp, group)
    page = client.get(url(group, "/email-reminders"))
    assert BILLING_EMAIL not in page.text.split("Stopped reminders")[1]
    response = client.post(
        url(group, f"/email-reminders/{row.id}/resubscribe"),
        data={"csrf_token": csrf_token(page.text)},
        follow_redirects=True,
    )
    assert "already on" in response.text
    assert len(stopped(db)) == 1


def test_a_viewer_cannot_turn_reminders_back_on(app, db, smtp, group, link):
    """Whom the billing contact's reminders reach is a billing manager's to change."""
    app.test_client().post(link, data=ONE_CLICK)
    [row] = db.scalars(select(ReminderUnsubscription)).all()
    client = signed_in(app, smtp, group)
    page = client.get(url(group, "/email-reminders"))
    set_role(app, db, group, CustomerRole.VIEWER)
    assert "Turn back on" not in client.get(url(group, "/email-reminders")).text
    response = client.post(
        url(group, f"/email-reminders/{row.id}/resubscribe"),
        data={"csrf_token": csrf_token(page.text)},
    )
    assert response.status_code == 403
    assert len(stopped(db)) == 1
    [event] = audited(db, "customer.forbidden")
    assert (event.outcome, event.detail) == ("viewer", "POST customer.email_reminders_resubscribe")


def test_the_preview_shows_the_page_and_never_writes(app, db, group, link, staff_client):  # noqa: F811
    app.test_client().post(link, data=ONE_CLICK)
    [row] = db.scalars(select(ReminderUnsubscription)).all()
    client = staff_client()
    prefix = f"/admin/preview/{group.public_id}"
    page = client.get(f"{prefix}/email-reminders")
    assert page.status_code == 200 and "Turn back on" not in page.text
    # A valid token of the staff session, from a staff page with a form.
    forged = {"csrf_token": csrf_token(client.get(f"/admin/bill-groups/{group.id}").text)}
    assert (
        client.post(f"{prefix}/email-reminders/{row.id}/resubscribe", data=forged).status_code
        == 403
    )
    assert len(stopped(db)) == 1


# --- the deep link ----------------------------------------------------------------------


def test_the_emailed_link_followed_by_sign_in_lands_on_the_invoice(app, db, smtp, group):
    message = remind(app, db, group)
    with app.app_context():
        text = outbox.unseal(message.text_body)
    [link] = re.findall(rf"{BASE}(/p/[\w-]+/invoices/\d+)", text)
    client = app.test_client()
    first = client.get(link)
    assert first.status_code == 302
    assert "/sign-in" in first.headers["Location"] or first.headers["Location"].startswith(
        f"/p/{group.public_id}"
    )
    request_link(client, group.public_id, "ap@acme.com", next_path=link)
    run_worker(app)
    path, _code = link_and_code(smtp.to("ap@acme.com")[-1])
    confirm = client.get(client.get(path).headers["Location"])
    landed = client.post(
        f"/p/{group.public_id}/confirm", data={"csrf_token": csrf_token(confirm.text)}
    )
    assert landed.status_code == 303
    assert landed.headers["Location"] == link
    invoice_page = client.get(link)
    assert invoice_page.status_code == 200 and message.subject.split()[1] in invoice_page.text
