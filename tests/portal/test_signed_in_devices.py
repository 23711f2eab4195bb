"""Signed-in devices: a customer sees their own live sessions with the seller (across its
bill groups) and signs out one or all others; never anyone else's."""

from __future__ import annotations

import datetime as dt
import re
import secrets

import pytest

from portal import device_labels
from portal.clock import now as clock_now
from portal.models import AuditEvent, CustomerSession
from tests.conftest import csrf_token
from tests.factories import make_entity
from tests.portal.session_helpers import journey, portal, rows
from tests.portal.signin_helpers import race
from tests.settings import change_settings

pytestmark = pytest.mark.usefixtures("clock")

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
ROW_BUTTON = re.compile(r'action="/p/[\w-]+/devices/(\d+)/sign-out"')


def browser(app, smtp, public_id, user_agent, address="ap@acme.com", ip="203.0.113.7"):
    client = app.test_client()
    client.environ_base.update(HTTP_USER_AGENT=user_agent, REMOTE_ADDR=ip)
    journey(client, app, smtp, public_id, address)
    return client


def device_row(app, db, group, user_agent, email="ap@acme.com") -> CustomerSession:
    """Another live session, written directly (a fourth emailed link for one address in
    15 minutes would be over its sign-in budget)."""
    with app.app_context():
        now = clock_now()
    row = CustomerSession(
        sid_hash=secrets.token_hex(32),
        bill_group_id=group.id,
        email=email,
        created_at=now,
        last_seen_at=now,
        expires_at=now + dt.timedelta(hours=12),
        ip="198.51.100.20",
        user_agent=user_agent,
    )
    db.add(row)
    db.commit()
    return row


@pytest.fixture
def seller(db):
    entity = make_entity(db, name="Northwind")
    a = portal(db, entity=entity, name="Northwind EUR", currency="EUR")
    b = portal(db, entity=entity, name="Northwind USD", currency="USD")
    other_seller = portal(db, name="Elsewhere", currency="EUR")
    return a, b, other_seller


def live(db) -> list[CustomerSession]:
    return [r for r in rows(db, CustomerSession) if r.revoked_at is None]


def test_the_page_lists_the_addresss_sessions_across_the_sellers_groups(app, db, smtp, seller):
    a, b, other_seller = seller
    me = browser(app, smtp, a.public_id, FIREFOX)
    browser(app, smtp, b.public_id, IPHONE, ip="10.1.2.3")
    browser(app, smtp, a.public_id, CHROME_MAC, address="someone@acme.com")
    browser(app, smtp, other_seller.public_id, CHROME_MAC)

    page = me.get(f"/p/{a.public_id}/devices")

    assert page.status_code == 200
    text = page.text
    assert "Firefox on Windows" in text and "This device" in text
    assert "Safari on iOS" in text and "Private network" in text
    assert "Network 203.0.113.x" in text
    assert "Northwind USD (USD)" in text
    assert "Chrome on macOS" not in text  # another address, and another seller
    mine = [r.id for r in live(db) if r.bill_group_id == b.id]
    assert [int(i) for i in ROW_BUTTON.findall(text)] == mine


def test_signing_out_another_device_ends_it_and_is_audited(app, db, smtp, seller):
    a, b, _other = seller
    me = browser(app, smtp, a.public_id, FIREFOX)
    phone = browser(app, smtp, b.public_id, IPHONE)
    page = me.get(f"/p/{a.public_id}/devices")
    [phone_id] = ROW_BUTTON.findall(page.text)

    response = me.post(
        f"/p/{a.public_id}/devices/{phone_id}/sign-out", data={"csrf_token": csrf_token(page.text)}
    )

    assert response.status_code == 303
    assert "Signed out Safari on iOS." in me.get(response.headers["Location"]).text
    assert phone.get(f"/p/{b.public_id}/overview").status_code == 302
    assert me.get(f"/p/{a.public_id}/overview").status_code == 200
    [ended] = [r for r in rows(db, CustomerSession) if r.id == int(phone_id)]
    assert ended.revoked_reason == "signed_out_by_customer"
    revoked = rows(db, AuditEvent, AuditEvent.action == "session.revoke")
    assert [(e.actor_type, e.actor, e.bill_group_id) for e in revoked] == [
        ("customer", "ap@acme.com", b.id)
    ]


def test_sign_out_all_other_devices(app, db, smtp, seller):
    a, b, _other = seller
    me = browser(app, smtp, a.public_id, FIREFOX)
    phone = browser(app, smtp, b.public_id, IPHONE)
    for group in (a, b):
        device_row(app, db, group, CHROME_MAC)
    page = me.get(f"/p/{a.public_id}/devices")

    response = me.post(
        f"/p/{a.public_id}/devices/sign-out-others", data={"csrf_token": csrf_token(page.text)}
    )

    assert response.status_code == 303
    assert len(live(db)) == 1
    assert phone.get(f"/p/{b.public_id}/overview").status_code == 302
    assert me.get(f"/p/{a.public_id}/devices").text.count("This device") == 1
    assert len(rows(db, AuditEvent, AuditEvent.action == "session.revoke")) == 3


@pytest.mark.parametrize(
    "whose", ["another address", "another seller", "this one", "lapsed", "huge", "none"]
)
def test_a_forged_session_id_is_not_found_and_nothing_is_written(app, db, smtp, seller, whose):
    a, _b, other_seller = seller
    me = browser(app, smtp, a.public_id, FIREFOX)
    browser(app, smtp, a.public_id, CHROME_MAC, address="someone@acme.com")
    browser(app, smtp, other_seller.public_id, CHROME_MAC)
    by_owner = {(r.email, r.bill_group_id): r.id for r in live(db)}
    lapsed = device_row(app, db, a, IPHONE)
    lapsed.last_seen_at -= dt.timedelta(hours=1)  # idle past its 30 minutes
    db.commit()
    target = {
        "lapsed": lapsed.id,
        "another address": by_owner[("someone@acme.com", a.id)],
        "another seller": by_owner[("ap@acme.com", other_seller.id)],
        "this one": by_owner[("ap@acme.com", a.id)],
        "huge": 2**70,
        "none": 999_999,
    }[whose]
    page = me.get(f"/p/{a.public_id}/devices")
    audits = len(rows(db, AuditEvent))

    response = me.post(
        f"/p/{a.public_id}/devices/{target}/sign-out", data={"csrf_token": csrf_token(page.text)}
    )

    assert response.status_code == 404
    assert len(live(db)) == 4
    assert len(rows(db, AuditEvent)) == audits
    assert "Safari on iOS" not in page.text  # the lapsed one is not listed either


def test_without_csrf_nothing_is_signed_out(app, db, smtp, seller):
    a, _b, _other = seller
    me = browser(app, smtp, a.public_id, FIREFOX)
    browser(app, smtp, a.public_id, IPHONE)
    assert me.post(f"/p/{a.public_id}/devices/sign-out-others").status_code == 400
    assert len(live(db)) == 2


def test_twenty_concurrent_sign_outs_end_the_device_once(app, db, smtp, seller):
    a, _b, _other = seller
    me = browser(app, smtp, a.public_id, FIREFOX)
    browser(app, smtp, a.public_id, IPHONE)
    page = me.get(f"/p/{a.public_id}/devices")
    [phone_id] = ROW_BUTTON.findall(page.text)
    token = csrf_token(page.text)

    responses = race(
        list(range(20)),
        lambda _i: me.post(
            f"/p/{a.public_id}/devices/{phone_id}/sign-out", data={"csrf_token": token}
        ),
    )

    assert sorted({r.status_code for r in responses}) in ([303], [303, 404])
    assert len(rows(db, AuditEvent, AuditEvent.action == "session.revoke")) == 1
    assert len(live(db)) == 1


def test_the_preview_explains_and_cannot_sign_anyone_out(app, db, smtp, seller, staff_client):
    a, _b, _other = seller
    browser(app, smtp, a.public_id, IPHONE)
    staff = staff_client()
    page = staff.get(f"/admin/preview/{a.public_id}/devices")
    assert page.status_code == 200
    token = csrf_token(staff.get(f"/admin/bill-groups/{a.id}/access").text)
    assert "A preview is not a customer session" in page.text
    assert "Safari on iOS" not in page.text
    [row] = live(db)
    response = staff.post(
        f"/admin/preview/{a.public_id}/devices/{row.id}/sign-out",
        data={"csrf_token": token},
    )
    assert response.status_code == 403
    assert len(live(db)) == 1


@pytest.mark.parametrize(
    ("agent", "label"),
    [
        (FIREFOX, "Firefox on Windows"),
        (IPHONE, "Safari on iOS"),
        (CHROME_MAC, "Chrome on macOS"),
        ("curl/8.5.0", "curl"),
        ("", "Unknown browser"),
        (None, "Unknown browser"),
        ("\x00\ud800" * 400, "Unknown browser"),
    ],
)
def test_browser_labels(agent, label):
    assert device_labels.browser(agent) == label


@pytest.mark.parametrize(
    ("ip", "label"),
    [
        ("127.0.0.1", "This computer"),
        ("::1", "This computer"),
        ("10.0.0.8", "Private network"),
        ("192.168.1.20", "Private network"),
        ("fe80::1", "Private network"),
        ("203.0.113.9", "Network 203.0.113.x"),
        ("::ffff:198.51.100.4", "Network 198.51.100.x"),
        ("2001:db8:1:2:3:4:5:6", "Network 2001:db8:1:2::/64"),
        (None, "Unknown network"),
        ("not an address", "Unknown network"),
    ],
)
def test_place_labels_without_a_database(app, ip, label):
    with app.app_context():
        assert device_labels.place(ip) == label


def test_place_from_a_configured_database(app, monkeypatch):
    class Reader:
        def get(self, ip):
            return {"city": {"names": {"en": "Lyon"}}, "country": {"names": {"en": "France"}}}

    monkeypatch.setattr(device_labels, "_reader", lambda path: Reader())
    change_settings(app, GEOIP_DATABASE="/srv/geo/city.mmdb")
    with app.app_context():
        assert device_labels.place("203.0.113.9") == "Lyon, France (network 203.0.113.x)"
        assert device_labels.place("10.0.0.1") == "Private network"


def test_an_unreadable_database_shows_networks(app, tmp_path):
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"not a database")
    change_settings(app, GEOIP_DATABASE=str(broken))
    with app.app_context():
        assert device_labels.place("203.0.113.9") == "Network 203.0.113.x"
