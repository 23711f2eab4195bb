"""The bill-group switcher: one sign-in reaches the seller's other bill groups that admit
the same address, by moving the session row, never further (another seller, a group that
does not admit the address, a staff preview), and never for longer."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from portal import switcher
from portal.access import add_rule, may_access
from portal.models import AccessRule, AuditEvent, CustomerSession, SsoMode, SsoProvider
from portal.signin import sha256 as sid_hash
from tests.conftest import csrf_token
from tests.factories import TODAY, make_bill_group, make_entity, make_invoice
from tests.portal.session_helpers import (
    ADDRESS,
    portal,
    rows,
    session_id,
    signed_in,
)
from tests.portal.signin_helpers import clone, race

pytestmark = pytest.mark.usefixtures("clock")

SWITCH_FORM = re.compile(r'action="/p/([\w-]+)/switch"')


@pytest.fixture
def seller(db):
    """One seller with three bill groups (A and B admit acme.com, C does not), and
    another seller's group D that admits acme.com too."""
    entity = make_entity(db, name="Northwind")
    a = portal(db, entity=entity, name="Northwind EUR", currency="EUR")
    b = portal(db, entity=entity, name="Northwind USD", currency="USD")
    c = portal(db, "other.com", entity=entity, name="Northwind GBP", currency="GBP")
    d = portal(db, name="Elsewhere EUR", currency="EUR")
    return a, b, c, d


def the_session(db, app, client) -> CustomerSession:
    [row] = rows(db, CustomerSession, CustomerSession.sid_hash == sid_hash(session_id(app, client)))
    return row


def switch_audit(db) -> list[tuple[str, int | None]]:
    found = rows(db, AuditEvent, AuditEvent.action == "session.switch")
    return [(e.outcome, e.bill_group_id) for e in found]


def post_switch(client, target, page_html: str, next_path: str = ""):
    return client.post(
        f"/p/{target.public_id}/switch",
        data={"csrf_token": csrf_token(page_html), "next": next_path},
    )


def test_the_header_lists_the_sellers_other_groups_that_admit_the_address(app, db, smtp, seller):
    a, b, c, d = seller
    client = signed_in(app, smtp, a.public_id)
    page = client.get(f"/p/{a.public_id}/overview")
    assert page.status_code == 200
    assert SWITCH_FORM.findall(page.text) == [b.public_id]
    assert "Northwind USD (USD)" in page.text
    assert d.public_id not in page.text and c.public_id not in page.text


def test_switching_moves_the_session_without_an_email_and_keeps_its_expiry(app, db, smtp, seller):
    a, b, _c, _d = seller
    client = signed_in(app, smtp, a.public_id)
    smtp.clear()
    before = the_session(db, app, client)
    page = client.get(f"/p/{a.public_id}/invoices")

    response = post_switch(client, b, page.text, f"/p/{b.public_id}/invoices")

    assert response.status_code == 303
    assert response.headers["Location"] == f"/p/{b.public_id}/invoices"
    after = the_session(db, app, client)
    assert (after.id, after.bill_group_id) == (before.id, b.id)
    assert after.expires_at == before.expires_at
    assert smtp.messages == []
    assert switch_audit(db) == [("switched_out", a.id), ("switched_in", b.id)]
    # Now B's pages, and A's only by switching back.
    assert client.get(f"/p/{b.public_id}/overview").status_code == 200
    back = client.get(f"/p/{a.public_id}/overview")
    assert back.status_code == 302
    assert back.headers["Location"].startswith(f"/p/{a.public_id}/switch")


def test_the_header_switch_lands_on_the_same_section(app, db, smtp, seller):
    a, b, _c, _d = seller
    client = signed_in(app, smtp, a.public_id)
    page = client.get(f"/p/{a.public_id}/subscriptions")
    assert f'name="next" value="/p/{b.public_id}/subscriptions"' in page.text


def test_a_deep_link_to_another_group_offers_one_click_then_lands_there(app, db, smtp, seller):
    a, b, _c, _d = seller
    invoice = make_invoice(db, b)
    db.commit()
    client = signed_in(app, smtp, a.public_id)
    deep = f"/p/{b.public_id}/invoices/{invoice.id}"

    first = client.get(deep)
    assert first.status_code == 302
    confirm = client.get(first.headers["Location"])
    assert confirm.status_code == 200
    assert "Switch to Northwind USD" in confirm.text
    assert the_session(db, app, client).bill_group_id == a.id  # a GET moves nothing

    done = post_switch(client, b, confirm.text, deep)
    assert done.headers["Location"] == deep
    assert client.get(deep).status_code == 200


def test_the_portal_link_of_another_admitting_group_offers_the_switch(app, db, smtp, seller):
    a, b, _c, _d = seller
    client = signed_in(app, smtp, a.public_id)
    start = client.get(f"/p/{b.public_id}")
    assert start.status_code == 303
    assert start.headers["Location"].startswith(f"/p/{b.public_id}/switch")


def test_a_group_that_does_not_admit_the_address_shows_its_sign_in_page(app, db, smtp, seller):
    a, _b, c, d = seller
    client = signed_in(app, smtp, a.public_id)
    for other in (c, d):
        confirm = client.get(f"/p/{other.public_id}/switch")
        assert confirm.status_code == 303
        assert confirm.headers["Location"] == f"/p/{other.public_id}"
        assert client.get(f"/p/{other.public_id}").status_code == 200  # the email form
    # Not signed in at all: the same sign-in page, whether or not the group admits.
    stranger = app.test_client()
    for other in (a, c):
        response = stranger.get(f"/p/{other.public_id}/switch")
        assert response.status_code == 303
        assert response.headers["Location"].startswith(f"/p/{other.public_id}")


def test_another_sellers_group_cannot_be_switched_to_and_nothing_is_written(app, db, smtp, seller):
    a, _b, _c, d = seller
    client = signed_in(app, smtp, a.public_id)
    page = client.get(f"/p/{a.public_id}/overview")
    before = the_session(db, app, client)
    audits = len(rows(db, AuditEvent))

    response = post_switch(client, d, page.text)

    assert response.status_code == 404
    assert the_session(db, app, client).bill_group_id == a.id
    assert len(rows(db, AuditEvent)) == audits
    assert before.bill_group_id == a.id


def test_a_forged_switch_to_a_group_that_does_not_admit_is_refused_and_audited(
    app, db, smtp, seller
):
    a, _b, c, _d = seller
    client = signed_in(app, smtp, a.public_id)
    page = client.get(f"/p/{a.public_id}/overview")

    response = post_switch(client, c, page.text)

    assert response.status_code == 403
    assert the_session(db, app, client).bill_group_id == a.id
    assert switch_audit(db) == [("not_admitted", c.id)]
    assert client.get(f"/p/{a.public_id}/overview").status_code == 200  # still signed in


def test_a_rule_revoked_between_listing_and_switching_refuses_and_unlists(app, db, smtp, seller):
    a, b, _c, _d = seller
    client = signed_in(app, smtp, a.public_id)
    page = client.get(f"/p/{a.public_id}/overview")
    assert SWITCH_FORM.findall(page.text) == [b.public_id]
    rule = db.scalar(select(AccessRule).where(AccessRule.bill_group_id == b.id))
    db.delete(rule)  # as staff removing it would (the action's own tests cover that)
    db.commit()

    response = post_switch(client, b, page.text)

    assert response.status_code == 403
    assert the_session(db, app, client).bill_group_id == a.id
    assert switch_audit(db) == [("not_admitted", b.id)]
    assert SWITCH_FORM.findall(client.get(f"/p/{a.public_id}/overview").text) == []


def test_a_group_that_is_unavailable_today_is_not_offered(app, db, smtp, seller):
    a, b, _c, _d = seller
    client = signed_in(app, smtp, a.public_id)
    page = client.get(f"/p/{a.public_id}/overview")
    b.portal_enabled = False
    db.commit()
    assert SWITCH_FORM.findall(client.get(f"/p/{a.public_id}/overview").text) == []
    assert post_switch(client, b, page.text).status_code == 404  # the one "not available"
    assert the_session(db, app, client).bill_group_id == a.id


def test_staff_cannot_switch_and_the_preview_lists_nothing(app, db, smtp, seller, staff_client):
    a, b, _c, _d = seller
    staff = staff_client()
    preview = staff.get(f"/admin/preview/{a.public_id}/overview")
    assert preview.status_code == 200
    assert SWITCH_FORM.findall(preview.text) == []
    assert staff.get(f"/admin/preview/{a.public_id}/switch").status_code == 404

    response = post_switch(staff, b, preview.text)

    assert response.status_code == 403
    assert rows(db, CustomerSession) == []


def test_a_switch_without_its_csrf_token_is_refused(app, db, smtp, seller):
    a, b, _c, _d = seller
    client = signed_in(app, smtp, a.public_id)
    response = client.post(f"/p/{b.public_id}/switch", data={"next": ""})
    assert response.status_code == 400
    assert the_session(db, app, client).bill_group_id == a.id


@pytest.mark.parametrize(
    "next_path",
    [
        "//evil.example/",
        "https://evil.example/",
        "/p/{a}/invoices",
        "/p/{b}/../{a}/x",
        "/p/{b}/\x01",
    ],
)
def test_next_is_a_path_of_the_target_group_only(app, db, smtp, seller, next_path):
    a, b, _c, _d = seller
    client = signed_in(app, smtp, a.public_id)
    page = client.get(f"/p/{a.public_id}/overview")
    forged = next_path.format(a=a.public_id, b=b.public_id)
    response = post_switch(client, b, page.text, forged)
    if response.status_code == 400:  # control characters: the request is refused whole
        assert the_session(db, app, client).bill_group_id == a.id
        return
    assert response.headers["Location"] == f"/p/{b.public_id}/overview"


def test_a_session_of_one_group_reads_nothing_of_another_without_switching(app, db, smtp, seller):
    a, b, _c, _d = seller
    theirs = make_invoice(db, b)
    ours = make_invoice(db, a)
    db.commit()
    client = signed_in(app, smtp, a.public_id)
    for path in (f"/invoices/{theirs.id}.pdf", "/invoices.csv", "/devices", "/overview"):
        response = client.get(f"/p/{b.public_id}{path}")
        assert response.status_code == 302, path
        assert "/switch" in response.headers["Location"]
        assert response.mimetype == "text/html"
    # Nor A's invoice through B's pages once switched: every query is scoped to the group.
    post_switch(client, b, client.get(f"/p/{a.public_id}/overview").text)
    assert client.get(f"/p/{b.public_id}/invoices/{ours.id}.pdf").status_code == 404


def test_after_a_switch_the_targets_rules_are_checked_on_every_request(app, db, smtp, seller):
    a, b, _c, _d = seller
    client = signed_in(app, smtp, a.public_id)
    post_switch(client, b, client.get(f"/p/{a.public_id}/overview").text)
    rule = db.scalar(select(AccessRule).where(AccessRule.bill_group_id == b.id))
    db.delete(rule)  # as staff removing it would (the action's own tests cover that)
    db.commit()
    assert client.get(f"/p/{b.public_id}/overview").status_code == 302
    assert the_session(db, app, client).revoked_reason == "access_revoked"


def test_twenty_concurrent_switches_move_the_session_once(app, db, smtp, seller):
    a, b, _c, _d = seller
    client = signed_in(app, smtp, a.public_id)
    token = csrf_token(client.get(f"/p/{a.public_id}/overview").text)
    browsers = [clone(app, client) for _ in range(20)]

    responses = race(
        browsers,
        lambda browser: browser.post(
            f"/p/{b.public_id}/switch", data={"csrf_token": token, "next": ""}
        ),
    )

    assert [r.status_code for r in responses] == [303] * 20
    assert {r.headers["Location"] for r in responses} == {f"/p/{b.public_id}/overview"}
    row = the_session(db, app, client)
    assert (row.bill_group_id, row.revoked_at) == (b.id, None)
    assert switch_audit(db) == [("switched_out", a.id), ("switched_in", b.id)]


def test_the_address_is_the_one_signed_in(app, db, smtp, seller):
    """A session of another address at the same seller lists only its own groups."""
    a, b, c, _d = seller
    client = signed_in(app, smtp, c.public_id, "x@other.com")
    assert SWITCH_FORM.findall(client.get(f"/p/{c.public_id}/overview").text) == []
    assert ADDRESS not in client.get(f"/p/{c.public_id}/overview").text
    page = client.get(f"/p/{c.public_id}/overview")
    assert post_switch(client, a, page.text).status_code == 403


@pytest.mark.parametrize("mode", [SsoMode.REQUIRED, SsoMode.OFFERED])
def test_a_group_that_requires_company_sign_in_is_never_switched_into(app, db, smtp, seller, mode):
    """An emailed link proved the address; a group whose rule requires the company's own
    sign-in wants that proof instead, so it is neither listed nor reachable by switch.
    Offered (beside the emailed link) changes nothing."""
    a, b, _c, _d = seller
    rule = db.scalar(select(AccessRule).where(AccessRule.bill_group_id == b.id))
    db.add(
        SsoProvider(
            rule_id=rule.id,
            company_name="Acme",
            issuer="https://login.acme.example",
            client_id="portal",
            client_secret_sealed="x",
            mode=mode,
            updated_by="test",
        )
    )
    db.commit()
    client = signed_in(app, smtp, a.public_id)
    page = client.get(f"/p/{a.public_id}/overview")
    listed = SWITCH_FORM.findall(page.text)

    response = post_switch(client, b, page.text)

    if mode is SsoMode.REQUIRED:
        assert listed == []
        assert response.status_code == 403
        assert switch_audit(db) == [("sso_required", b.id)]
        assert the_session(db, app, client).bill_group_id == a.id
    else:
        assert listed == [b.public_id]
        assert response.status_code == 303
        assert the_session(db, app, client).bill_group_id == b.id


@pytest.mark.parametrize(
    "address",
    [
        "ap@acme.com",
        "other@acme.com",
        "ap@sub.acme.com",
        "ap@deep.sub.acme.com",
        "ap@evilacme.com",
        "ap@acme.com.evil.net",
        "ap@com",
        "ap+tag@acme.com",
    ],
)
def test_the_switcher_query_admits_exactly_what_the_rules_admit(app, db, address):
    """The statement on the rules' value index is portal.access.rule_admits in SQL."""
    entity = make_entity(db)
    rules = [
        ("acme.com", False),
        ("acme.com", True),
        ("ap@acme.com", False),
        ("sub.acme.com", False),
        ("sub.acme.com", True),
        ("evilacme.com", False),
        ("ap@sub.acme.com", False),
    ]
    groups = []
    for value, subdomains in rules:
        group = make_bill_group(db, entity=entity)
        add_rule(db, group, value, include_subdomains=subdomains, created_by="test")
        groups.append(group)
    db.commit()
    with app.app_context():
        found = {r.id for r in switcher.reachable(db, entity.id, address, TODAY)}
    expected = {g.id for g in groups if may_access(g, address, TODAY) is not None}
    assert found == expected


def test_after_staff_sign_everyone_out_a_session_elsewhere_cannot_switch_back_in(
    app, db, smtp, seller, staff_client, clock
):
    """Staff are told everyone "must sign in again to see this bill group": a session
    that was at another bill group at that moment does not walk back in by a switch."""
    a, b, _c, _d = seller
    client = signed_in(app, smtp, a.public_id)
    page = client.get(f"/p/{a.public_id}/overview")
    assert post_switch(client, b, page.text).status_code == 303
    assert the_session(db, app, client).bill_group_id == b.id
    clock.advance(minutes=1)

    staff = staff_client()
    access = staff.get(f"/admin/bill-groups/{a.id}/access")
    ended = staff.post(
        f"/admin/bill-groups/{a.id}/access/sessions/revoke-all",
        data={"csrf_token": csrf_token(access.text)},
    )
    assert ended.status_code in (302, 303)

    page = client.get(f"/p/{b.public_id}/overview")
    assert page.status_code == 200  # still signed in where it is
    refused = post_switch(client, a, page.text)
    assert refused.status_code == 303
    assert refused.headers["Location"].split("?")[0] == f"/p/{a.public_id}"  # its sign-in
    assert the_session(db, app, client).bill_group_id == b.id
    assert ("signed_out_by_staff", a.id) in switch_audit(db)

    # A new sign-in (a new session) may switch again.
    clock.advance(minutes=1)
    fresh = signed_in(app, smtp, b.public_id)
    page = fresh.get(f"/p/{b.public_id}/overview")
    assert post_switch(fresh, a, page.text).status_code == 303
    assert the_session(db, app, fresh).bill_group_id == a.id
