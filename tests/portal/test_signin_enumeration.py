"""Sign-in pages: tenant isolation and the one 404, no account enumeration, CSRF."""

from __future__ import annotations

import datetime as dt

import pytest

from portal.models import (
    AuditEvent,
    CustomerSession,
    SignInChallenge,
)
from tests.conftest import (
    csrf_token,
    request_link,
    run_worker,
)
from tests.factories import make_invoice
from tests.portal.session_helpers import (
    ADDRESS,
    audit_since,
    cookie_names,
    cookie_shapes,
    count,
    emailed,
    journey,
    last_audit_id,
    masked,
    person,
    portal,
    rows,
    sent_to_sign_in,
)

# --- 5. tenant isolation and the one 404 -------------------------------------------------


def test_a_session_for_one_bill_group_sees_nothing_of_another(app, client, db, smtp):
    mine = portal(db, name="Alpha Widgets Ltd")
    theirs = portal(db, name="Bravo Secret Holdings")
    my_invoices = [make_invoice(db, mine).number for _ in range(2)]
    their_invoices = [make_invoice(db, theirs).number for _ in range(2)]
    db.commit()
    journey(client, app, smtp, mine.public_id)

    overview = client.get(f"/p/{mine.public_id}/overview")
    assert overview.status_code == 200
    assert all(number in overview.text for number in my_invoices)
    assert not any(number in overview.text for number in their_invoices)
    assert theirs.name not in overview.text

    response = client.get(f"/p/{theirs.public_id}/overview")
    assert sent_to_sign_in(response, theirs.public_id)
    assert not any(number in response.text for number in their_invoices)
    assert theirs.name not in response.text and ADDRESS not in response.text
    # Their sign-in page is a sign-in form, not their data or my session.
    page = client.get(response.headers["Location"])
    assert page.status_code == 200 and 'name="email"' in page.text
    assert not any(number in page.text for number in their_invoices + my_invoices)
    # And my session still works for me.
    assert client.get(f"/p/{mine.public_id}/overview").status_code == 200


def test_unknown_disabled_and_inactive_portals_are_the_same_404(app, client, db, clock):
    today = clock.today()
    disabled = portal(db, portal_enabled=False)
    ended = portal(db, contract_end=today - dt.timedelta(days=1))
    not_started = portal(db, contract_start=today + dt.timedelta(days=1), contract_end=None)
    live = portal(db)
    ids = {
        "unknown": "A" * 22,
        "too short": "abc",
        "disabled": disabled.public_id,
        "ended": ended.public_id,
        "not started": not_started.public_id,
    }
    assert client.get(f"/p/{live.public_id}").status_code == 200

    for suffix in ("", "/overview", "/link-invalid"):
        responses = {name: client.get(f"/p/{pid}{suffix}") for name, pid in ids.items()}
        bodies = {name: r.data for name, r in responses.items()}
        assert {r.status_code for r in responses.values()} == {404}, suffix
        assert len(set(bodies.values())) == 1, suffix
        assert b"This portal is not available" in bodies["unknown"]
        assert all(not cookie_names(r) for r in responses.values()), suffix
    for name in ("disabled", "ended", "not started"):
        group = {"disabled": disabled, "ended": ended, "not started": not_started}[name]
        assert group.name.encode() not in bodies[name]


# --- 6. enumeration -----------------------------------------------------------------------


def test_admitted_and_unknown_addresses_get_the_same_response(app, db, smtp):
    group = portal(db)
    pid = group.public_id
    known_address, unknown_address = "ap@acme.com", "ap@other.com"
    results = {}
    for address in (known_address, unknown_address):
        browser = person(app, "203.0.113.7")
        page = browser.get(f"/p/{pid}")
        mark = last_audit_id(db)
        response = browser.post(
            f"/p/{pid}/sign-in", data={"csrf_token": csrf_token(page.text), "email": address}
        )
        results[address] = (response, audit_since(db, mark))
    (known, known_audit), (unknown, unknown_audit) = results.values()

    assert known.status_code == unknown.status_code == 200
    assert masked(known.text, known_address) == masked(unknown.text, unknown_address)
    assert cookie_shapes(known) == cookie_shapes(unknown)
    assert sorted(known.headers.keys()) == sorted(unknown.headers.keys())

    def shape(events):
        return [
            (e.action, e.outcome, e.actor_type, e.bill_group_id, e.ip, e.detail) for e in events
        ]

    assert shape(known_audit) == shape(unknown_audit)
    assert shape(known_audit) == [
        ("signin.request", "queued", "anonymous", group.id, "203.0.113.7", None)
    ]
    assert [e.actor for e in known_audit + unknown_audit] == [known_address, unknown_address]
    challenges = rows(db, SignInChallenge)
    assert [(c.email, c.token_hash, c.evaluated_at) for c in challenges] == [
        (known_address, None, None),
        (unknown_address, None, None),
    ]
    assert smtp.messages == []

    # The difference shows only after the worker has decided, off the request path.
    mark = last_audit_id(db)
    assert run_worker(app) == (2, 1)
    assert [m["To"] for m in smtp.messages] == [known_address]
    decided = {(e.actor, e.outcome) for e in audit_since(db, mark)}
    assert decided == {(known_address, "sent"), (unknown_address, "not_admitted")}


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("a,b@acme.com", "Add addresses one at a time"),
        ("ap@acme.com, boss@acme.com", "Add addresses one at a time"),
        ("Bob <bob@acme.com>", "without a name, quotes or brackets"),
        ("ap@acme.com\r\nBcc: victim@acme.com", "invisible or control characters"),
        ("ap@acme.com\nbcc:victim@acme.com", "invisible or control characters"),
    ],
    ids=["comma", "comma-space", "display-name", "crlf", "lf"],
)
def test_a_malformed_address_gets_a_400_and_nothing_happens(
    app, client, db, smtp, address, message
):
    group = portal(db)
    response = request_link(client, group.public_id, address)

    assert response.status_code == 400
    assert message in response.text
    assert "Traceback" not in response.text
    assert count(db, SignInChallenge) == 0
    assert count(db, AuditEvent) == 0
    assert run_worker(app) == (0, 0)
    assert smtp.messages == []


# --- 7. CSRF ----------------------------------------------------------------------------


def test_posts_without_a_csrf_token_are_refused_and_change_nothing(app, client, db, smtp):
    group = portal(db)
    pid = group.public_id

    def state():
        db.expire_all()
        return (
            [(c.id, c.spent_at, c.retired_at, c.code_attempts) for c in rows(db, SignInChallenge)],
            [(s.id, s.revoked_at) for s in rows(db, CustomerSession)],
            count(db, AuditEvent),
        )

    client.get(f"/p/{pid}")
    refused = client.post(f"/p/{pid}/sign-in", data={"email": ADDRESS})
    assert refused.status_code == 400
    assert state() == ([], [], 0)

    _, path, code = emailed(client, app, smtp, pid)
    before = state()
    assert len(before[0]) == 1 and before[1] == []

    assert client.post(f"/p/{pid}/code", data={"code": code}).status_code == 400
    assert state() == before
    assert client.get(path).status_code == 303  # to the confirm page
    assert client.post(f"/p/{pid}/confirm", data={}).status_code == 400
    assert state() == before
    other_browser = app.test_client()
    other_browser.get(path)
    assert other_browser.post(f"/p/{pid}/resend", data={}).status_code == 400
    assert state() == before
    assert run_worker(app) == (0, 0)
    assert len(smtp.messages) == 1

    # With the token the same confirm works; then a sign-out without one does nothing.
    confirm = client.get(f"/p/{pid}/confirm")
    client.post(f"/p/{pid}/confirm", data={"csrf_token": csrf_token(confirm.text)})
    assert client.get(f"/p/{pid}/overview").status_code == 200
    signed_in_state = state()
    assert len(signed_in_state[1]) == 1
    assert client.post(f"/p/{pid}/sign-out", data={}).status_code == 400
    assert client.post(f"/p/{pid}/sign-out", data={"csrf_token": "forged"}).status_code == 400
    assert state() == signed_in_state
    assert client.get(f"/p/{pid}/overview").status_code == 200
