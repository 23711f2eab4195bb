"""The audit trail pages: a bill group's (anyone with "read") and the global one (admins);
real events from the journeys, filters, pagination at a constant query count, CSV export
and who may see what. The trail is append-only: the pages offer nothing that changes it."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from flask import Flask
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from portal.access import add_rule
from portal.models import AuditEvent, BillGroup, StaffRole, StaffUser
from tests.clock import MIDDAY
from tests.conftest import Inbox, csrf_token, sign_in, statements
from tests.factories import make_bill_group
from tests.portal.pages_helpers import csv_rows

NOON = MIDDAY  # what the clock fixture says it is

pytestmark = pytest.mark.usefixtures("clock")


@pytest.fixture
def group(db: Session) -> BillGroup:
    group = make_bill_group(db, name="Acme Europe")
    db.commit()
    return group


def add_events(db: Session, group: BillGroup | None, count: int, **values) -> None:
    """`count` events, one minute apart, oldest first, numbered in `detail`."""
    for number in range(count):
        defaults = {
            "at": NOON - dt.timedelta(minutes=count - number),
            "actor_type": "customer",
            "actor": "ap@acme.com",
            "action": "signin.complete",
            "outcome": "signed_in",
            "bill_group_id": group.id if group else None,
            "ip": "192.0.2.1",
            "detail": f"event {number}",
        }
        db.add(AuditEvent(**(defaults | values)))
    db.commit()


def rows(page_html: str) -> list[dict[str, str]]:
    """The audit table as {column label: cell text} per row, in page order."""
    body = re.search(r"<tbody>(.*?)</tbody>", page_html, re.S)
    if body is None:
        return []
    found = []
    for row in re.findall(r"<tr>(.*?)</tr>", body[1], re.S):
        cells = re.findall(r'<td data-label="([^"]+)"[^>]*>(.*?)</td>', row, re.S)
        found.append(
            {
                label: " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())
                for label, text in cells
            }
        )
    return found


def details(page_html: str) -> list[str]:
    return [row["Detail"] for row in rows(page_html)]


def audit_url(group: BillGroup, query: str = "") -> str:
    return f"/admin/bill-groups/{group.id}/audit{query}"


# --- real events --------------------------------------------------------------------------


def test_a_rule_change_a_sign_in_and_a_preview_appear(
    app: Flask, db: Session, group: BillGroup, staff_client, smtp: Inbox
):
    manager = staff_client(StaffRole.ACCOUNT_MANAGER)
    access = manager.get(f"/admin/bill-groups/{group.id}/access")
    added = manager.post(
        f"/admin/bill-groups/{group.id}/access/emails",
        data={"csrf_token": csrf_token(access.text), "email": "AP@acme.com"},
    )
    assert added.status_code == 303
    customer = app.test_client()
    assert sign_in(customer, app, smtp, group.public_id, "ap@acme.com").status_code == 303
    assert manager.get(f"/admin/preview/{group.public_id}/invoices?status=open").status_code == 200

    page = manager.get(audit_url(group))
    assert page.status_code == 200
    trail = [(row["Action"], row["Outcome"], row["Actor"]) for row in rows(page.text)]
    manager_email = db.scalar(
        select(StaffUser.email).where(StaffUser.role == StaffRole.ACCOUNT_MANAGER)
    )
    # Newest first.
    assert trail[0] == ("preview.view", "viewed", f"Staff {manager_email}")
    assert ("signin.complete", "signed in", "Customer ap@acme.com") in trail
    assert ("access_rule.add", "added", f"Staff {manager_email}") in trail
    assert trail.index(("signin.complete", "signed in", "Customer ap@acme.com")) < trail.index(
        ("access_rule.add", "added", f"Staff {manager_email}")
    )
    assert rows(page.text)[0]["Detail"] == "/invoices?status=open"
    assert rows(page.text)[0]["IP"] == "127.0.0.1"
    assert rows(page.text)[0]["Time (UTC)"] == "2026-11-21 12:00:00"

    # The admin's global page shows the same events, with the bill group named.
    admin = staff_client(StaffRole.ADMIN)
    everything = rows(admin.get("/admin/audit?action=preview.").text)
    assert [(r["Action"], r["Bill group"]) for r in everything] == [("preview.view", "Acme Europe")]
    staff_events = rows(admin.get("/admin/audit?action=staff.").text)
    assert {r["Action"] for r in staff_events} == {"staff.signin"}
    assert {r["Bill group"] for r in staff_events} == {"—"}


def test_a_bill_group_page_shows_only_its_own_events(db, group, staff_client):
    other = make_bill_group(db, name="Acme Asia")
    db.commit()
    add_events(db, group, 2, detail="mine")
    add_events(db, other, 2, detail="theirs")
    add_events(db, None, 2, detail="nobody's")
    page = staff_client(StaffRole.VIEWER).get(audit_url(group)).text
    assert details(page) == ["mine", "mine"]
    assert (
        "Acme Europe" in page
        and "Bill group" not in re.search(r"<thead>.*?</thead>", page, re.S)[0]
    )


def test_an_unknown_bill_group_is_404(staff_client):
    viewer = staff_client(StaffRole.VIEWER)
    assert viewer.get("/admin/bill-groups/999999/audit").status_code == 404
    assert viewer.get("/admin/bill-groups/999999/audit.csv").status_code == 404


# --- filters ------------------------------------------------------------------------------


@pytest.fixture
def mixed(db: Session, group: BillGroup) -> None:
    """A few events of each family, on different days."""
    day = dt.timedelta(days=1)
    events = [
        (NOON - 3 * day, "customer", "ap@acme.com", "signin.complete", "signed_in"),
        (NOON - 3 * day, "anonymous", "mallory@evil.example", "signin.complete", "link_not_usable"),
        (NOON - 2 * day, "staff", "am@staff.example.com", "access_rule.add", "added"),
        (NOON - 2 * day, "customer", "AP@Acme.com", "session.end", "idle"),
        (NOON - 1 * day, "staff", "am@staff.example.com", "preview.view", "viewed"),
        (NOON - 1 * day, "customer", "ap@acme.com", "billing_details.update", "changed"),
        (NOON, "staff", "am@staff.example.com", "portal.disable", "disabled"),
        (NOON, "customer", "a_b%c@acme.com", "contact.billing.update", "changed"),
        (NOON, "customer", "ap@acme.com", "payment_method.add", "changed"),
        (NOON, "system", None, "signinx.other", "odd"),  # not in the signin. family
    ]
    for number, (at, actor_type, actor, action, outcome) in enumerate(events):
        db.add(
            AuditEvent(
                at=at,
                actor_type=actor_type,
                actor=actor,
                action=action,
                outcome=outcome,
                bill_group_id=group.id,
                detail=f"e{number}",
            )
        )
    db.commit()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["e9", "e8", "e7", "e6", "e5", "e4", "e3", "e2", "e1", "e0"]),
        ("?action=signin.", ["e1", "e0"]),
        ("?action=session.", ["e3"]),
        ("?action=access_rule.", ["e2"]),
        ("?action=portal.", ["e6"]),
        ("?action=preview.", ["e4"]),
        ("?action=billing_details.", ["e5"]),
        ("?action=contact.", ["e7"]),
        ("?action=payment_method.", ["e8"]),
        ("?action=staff.", []),
        ("?actor=acme.COM", ["e8", "e7", "e5", "e3", "e0"]),
        ("?actor=+ap%40acme+", ["e8", "e5", "e3", "e0"]),  # trimmed, case-insensitive
        # "%" and "_" are characters to find, not wildcards.
        ("?actor=%25", ["e7"]),
        ("?actor=a%25c", []),
        ("?actor=_b%25", ["e7"]),
        ("?actor=p_acme", []),
        ("?actor=staff", ["e6", "e4", "e2"]),
        ("?date_from=2026-11-20", ["e9", "e8", "e7", "e6", "e5", "e4"]),
        ("?date_to=2026-11-19", ["e3", "e2", "e1", "e0"]),
        ("?date_from=2026-11-19&date_to=2026-11-20", ["e5", "e4", "e3", "e2"]),
        ("?date_from=2026-11-18&date_to=2026-11-18", ["e1", "e0"]),
        ("?action=signin.&actor=mallory&date_to=2026-11-18", ["e1"]),
    ],
)
def test_filters(group, mixed, staff_client, query, expected):
    page = staff_client(StaffRole.VIEWER).get(audit_url(group, query))
    assert page.status_code == 200
    assert details(page.text) == expected


def test_the_calendar_s_first_and_last_days_filter_like_any_other(group, mixed, staff_client):
    """date_to=9999-12-31 asked for the day after it (OverflowError): a 500 page, and a
    CSV cut off after its headers."""
    viewer = staff_client(StaffRole.VIEWER)
    everything = details(viewer.get(audit_url(group)).text)
    assert len(everything) == 10
    for query in ("?date_to=9999-12-31", "?date_from=0001-01-01&date_to=9999-12-31"):
        page = viewer.get(audit_url(group, query))
        assert page.status_code == 200 and details(page.text) == everything
        download = viewer.get(audit_url(group, query.replace("?", ".csv?")))
        assert len(csv_rows(download.text)) == 1 + len(everything)
    assert details(viewer.get(audit_url(group, "?date_from=9999-12-31")).text) == []


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("?action=drop.", "action", "Choose an action from the list."),
        ("?date_from=yesterday", "date_from", "Not a valid date value."),
        (
            "?date_from=2026-11-20&date_to=2026-11-19",
            "date_to",
            "The end date must be on or after the start date.",
        ),
        ("?actor=" + "x" * 255, "actor", "Type at most 254 characters."),
    ],
)
def test_a_bad_filter_is_a_400_with_the_message_by_the_field(
    group, mixed, staff_client, query, field, message
):
    viewer = staff_client(StaffRole.VIEWER)
    page = viewer.get(audit_url(group, query))
    assert page.status_code == 400
    assert details(page.text) == []
    block = re.search(
        rf'<div class="field[^"]*">\s*<label for="{field}">.*?</div>', page.text, re.S
    )
    assert block and message in html.unescape(block[0])
    assert viewer.get(audit_url(group, query.replace("?", ".csv?"))).status_code == 400


def test_the_filter_form_keeps_its_values(group, mixed, staff_client):
    page = staff_client(StaffRole.VIEWER).get(
        audit_url(group, "?action=preview.&actor=am%40staff&date_from=2026-11-19")
    )
    assert '<option selected value="preview.">' in page.text
    assert 'value="am@staff"' in page.text and 'value="2026-11-19"' in page.text


# --- pagination ---------------------------------------------------------------------------


def test_pages_of_fifty_newest_first(group, db, staff_client):
    add_events(db, group, 120)
    viewer = staff_client(StaffRole.VIEWER)
    first = viewer.get(audit_url(group)).text
    assert details(first) == [f"event {n}" for n in range(119, 69, -1)]
    assert "Showing 1–50 of 120 events." in first and "Page 1 of 3" in first
    next_link = html.unescape(re.search(r'<a href="([^"]+)" rel="next">', first)[1])
    assert next_link == audit_url(group, "?page=2")
    third = viewer.get(audit_url(group, "?page=3")).text
    assert details(third) == [f"event {n}" for n in range(19, -1, -1)]
    assert 'rel="next"' not in third and "Showing 101–120 of 120 events." in third
    # Past the end, or nonsense: the last page, or the first.
    assert details(viewer.get(audit_url(group, "?page=999999999999")).text) == details(third)
    assert details(viewer.get(audit_url(group, "?page=²")).text) == details(first)


def test_page_links_keep_the_filter(group, db, staff_client):
    add_events(db, group, 60, action="preview.view")
    add_events(db, group, 5)
    page = staff_client(StaffRole.VIEWER).get(audit_url(group, "?action=preview.")).text
    next_link = html.unescape(re.search(r'<a href="([^"]+)" rel="next">', page)[1])
    assert next_link == audit_url(group, "?page=2&action=preview.")
    csv_link = html.unescape(re.search(r'<a href="([^"]+)" download>', page)[1])
    assert csv_link == f"/admin/bill-groups/{group.id}/audit.csv?action=preview."


@pytest.mark.parametrize("scope", ["bill group", "global"])
def test_a_constant_number_of_queries(app, db, group, staff_client, scope):
    admin = staff_client(StaffRole.ADMIN)
    path = audit_url(group) if scope == "bill group" else "/admin/audit"
    other = make_bill_group(db)
    db.commit()
    add_events(db, group, 3)
    with statements(app) as few:
        assert admin.get(path).status_code == 200
    add_events(db, group, 60)
    add_events(db, other, 60)
    with statements(app) as many:
        assert admin.get(path + "?page=2").status_code == 200
    assert len(many) == len(few) <= 6


# --- CSV ----------------------------------------------------------------------------------


def test_csv_exports_every_filtered_event(group, db, staff_client):
    add_events(db, group, 70, action="preview.view", actor="am@staff.example.com")
    add_events(db, group, 3)
    response = staff_client(StaffRole.VIEWER).get(
        f"/admin/bill-groups/{group.id}/audit.csv?action=preview."
    )
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert (
        response.headers["Content-Disposition"]
        == f'attachment; filename="audit-bill-group-{group.id}.csv"'
    )
    table = csv_rows(response.text)
    assert table[0] == [
        "Time (UTC)",
        "Actor type",
        "Actor",
        "Action",
        "Outcome",
        "Bill group id",
        "Bill group",
        "IP",
        "Detail",
    ]
    assert len(table) == 71  # all of them, not one page
    assert table[1] == [
        "2026-11-21T11:59:00+00:00",
        "customer",
        "am@staff.example.com",
        "preview.view",
        "signed_in",
        str(group.id),
        "Acme Europe",
        "192.0.2.1",
        "event 69",
    ]


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cells_cannot_start_a_formula(group, db, staff_client, start):
    payload = f'{start}HYPERLINK("https://evil.example")'
    add_events(db, group, 1, actor=payload, outcome=payload, detail=payload, ip=payload[:45])
    table = csv_rows(staff_client(StaffRole.VIEWER).get(audit_url(group, ".csv")).text)
    cells = table[1]
    for column in ("Actor", "Outcome", "IP", "Detail"):
        assert cells[table[0].index(column)] == "'" + payload[: 45 if column == "IP" else None]


def test_the_global_csv(group, db, staff_client):
    add_events(db, group, 2)
    add_events(db, None, 1, actor_type="staff", action="staff.signin", detail="staff")
    response = staff_client(StaffRole.ADMIN).get("/admin/audit.csv?action=staff.")
    assert response.headers["Content-Disposition"] == 'attachment; filename="audit.csv"'
    table = csv_rows(response.text)
    assert [row[3] for row in table[1:]] == ["staff.signin"] * (len(table) - 1)
    assert table[-1][5:7] == ["", ""] and "staff" in [row[8] for row in table[1:]]


# --- who may see it -----------------------------------------------------------------------


def test_a_viewer_sees_a_bill_groups_trail_but_not_the_global_one(group, staff_client):
    viewer = staff_client(StaffRole.VIEWER)
    assert viewer.get(audit_url(group)).status_code == 200
    assert viewer.get(audit_url(group, ".csv")).status_code == 200
    assert viewer.get("/admin/audit").status_code == 403
    assert viewer.get("/admin/audit.csv").status_code == 403
    assert 'href="/admin/audit"' not in viewer.get("/admin/").text


@pytest.mark.parametrize(
    ("role", "status"),
    [(StaffRole.ADMIN, 200), (StaffRole.ACCOUNT_MANAGER, 403), (StaffRole.VIEWER, 403)],
)
def test_the_global_trail_is_for_admins_only(staff_client, role, status):
    client = staff_client(role)
    assert client.get("/admin/audit").status_code == status
    assert client.get("/admin/audit.csv").status_code == status
    nav = re.search(
        r'<nav class="portal-nav" aria-label="Staff">.*?</nav>', client.get("/admin/").text, re.S
    )
    assert ('href="/admin/audit"' in nav[0]) is (status == 200)


def test_strangers_and_customers_are_sent_to_staff_sign_in(app, db, group, smtp, client):
    add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    customer = app.test_client()
    assert sign_in(customer, app, smtp, group.public_id, "ap@acme.com").status_code == 303
    for who in (client, customer):
        for path in ("/admin/audit", audit_url(group), audit_url(group, ".csv")):
            response = who.get(path)
            assert response.status_code == 302
            assert response.headers["Location"].startswith("/admin/sign-in?next=")


# --- append-only --------------------------------------------------------------------------


def test_the_pages_offer_no_way_to_change_the_trail(group, db, staff_client):
    add_events(db, group, 3)
    admin = staff_client(StaffRole.ADMIN)
    for path in (audit_url(group), "/admin/audit"):
        page = admin.get(path).text
        forms = re.findall(r'<form method="post" action="([^"]+)"', page)
        assert forms == ["/admin/sign-out"]
        assert not re.search(r"\b(delete|edit|remove)\b", page, re.I)


def test_the_database_refuses_to_change_or_delete_events(group, db):
    add_events(db, group, 1)
    for statement in (update(AuditEvent).values(outcome="nothing"), delete(AuditEvent)):
        with pytest.raises(DatabaseError, match="append-only"):
            db.execute(statement)
        db.rollback()
    assert db.scalar(select(AuditEvent.outcome)) == "signed_in"
