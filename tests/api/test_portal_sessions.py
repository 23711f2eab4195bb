"""Portal sessions made through the API (POST /api/v1/portal-sessions), followed in a
browser-less client: made only for admitted addresses, landing on a checked page of that
bill group, one use in five minutes even under a race of 20, never a way to the preview
or the staff side, and recorded with the key that made them."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import apikeys, logredact
from portal.access import add_rule
from portal.actions import Actor
from portal.actions.rules import remove_rule
from portal.models import (
    ApiKey,
    AuditEvent,
    BillGroup,
    CustomerSession,
    PortalSessionToken,
    ReturnOrigin,
)
from tests.api.conftest import Api, make_key
from tests.conftest import csrf_token
from tests.factories import make_bill_group, make_invoice
from tests.portal.signin_helpers import (
    CONCURRENT,
    clone,
    engine_of,
    race,
    scan_database,
    sessions_count,
)
from tests.settings import change_settings

pytestmark = pytest.mark.usefixtures("clock")

ADDRESS = "ap@acme.com"
APP = "https://app.northwind.example"
BASE = "https://portal.example.test"


@pytest.fixture
def group(db: Session) -> BillGroup:
    group = make_bill_group(db, external_id="bg-acme")
    add_rule(db, group, "acme.com", created_by="test")
    make_invoice(db, group, external_id="INV-1", number="2026-0001")
    db.add(ReturnOrigin(entity_id=group.entity_id, origin=APP, created_by="test"))
    db.commit()
    return group


@pytest.fixture
def seller(app: Flask) -> Api:
    """The seller's app: a key with only the sessions scope, on a client of its own."""
    return Api(app.test_client(), make_key(app, {"sessions"}, "northwind app"))


def make(seller: Api, **fields: object):
    return seller.post("/portal-sessions", {"bill_group": "bg-acme", "email": ADDRESS, **fields})


def made(seller: Api, **fields: object) -> str:
    response = make(seller, **fields)
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["url"])


def open_link(browser: FlaskClient, url: str):
    """GET the link; returns the confirm page it leads to (or the redirect if none)."""
    opened = browser.get(urlsplit(url).path)
    assert opened.status_code == 303
    if not opened.headers["Location"].endswith("/session"):
        return opened
    page = browser.get(opened.headers["Location"])
    assert page.status_code == 200
    return page


def follow(browser: FlaskClient, url: str):
    """Open the link and press Continue: the POST's response."""
    page = open_link(browser, url)
    pid = urlsplit(url).path.split("/")[2]
    return browser.post(f"/p/{pid}/session", data={"csrf_token": csrf_token(page.text)})


def rows(app: Flask, model, *where):  # type: ignore[no-untyped-def]
    with engine_of(app).connect() as connection:
        return list(connection.execute(select(model).where(*where)))


def audits(app: Flask, action: str) -> list:
    return rows(app, AuditEvent, AuditEvent.action == action)


# --- the happy path -------------------------------------------------------------------


def test_a_session_lands_signed_in_on_the_invoice_with_a_back_link(
    app, client, db, group, seller, clock
):
    response = make(seller, path="/invoices/INV-1", return_url=f"{APP}/account?tab=billing")
    assert response.status_code == 201
    body = response.get_json()
    assert body["url"].startswith(f"{BASE}/p/{group.public_id}/session/")
    assert body["expires_at"] == "2026-11-21T12:05:00Z"
    token = body["url"].rsplit("/", 1)[1]

    confirm = open_link(client, body["url"])
    assert "Continue" in confirm.text and ADDRESS in confirm.text
    signed_in = client.post(
        f"/p/{group.public_id}/session", data={"csrf_token": csrf_token(confirm.text)}
    )
    [invoice] = group.invoices
    assert signed_in.status_code == 303
    assert signed_in.headers["Location"] == f"/p/{group.public_id}/invoices/{invoice.id}"
    page = client.get(signed_in.headers["Location"])
    assert page.status_code == 200
    assert "2026-0001" in page.text
    assert f'href="{APP}/account?tab=billing">Back to {group.entity.name}</a>' in page.text
    assert sessions_count(app, group.public_id) == 1

    # Recorded: which key made it, and that its opening signed in.
    [created] = audits(app, "portal_session.create")
    assert created.actor_type == "api" and created.actor.startswith("key northwind app (bp_")
    assert json.loads(created.detail)["return_origin"] == APP
    [complete] = audits(app, "signin.complete")
    assert complete.outcome == "signed_in" and complete.actor == ADDRESS
    assert "made by key northwind app (bp_" in complete.detail
    # The token is nowhere at rest: only its hash.
    assert scan_database(app, {"token": token}) == set()


def test_the_url_is_built_from_the_base_url_never_the_host(app, group, seller):
    response = seller.post(
        "/portal-sessions",
        {"bill_group": "bg-acme", "email": ADDRESS},
        headers={"X-Forwarded-Host": "evil.example", "Host": "portal.example.test"},
    )
    assert response.get_json()["url"].startswith(f"{BASE}/p/")


def test_no_back_link_without_a_return_url_and_the_overview_by_default(app, client, group, seller):
    signed_in = follow(client, made(seller))
    assert signed_in.headers["Location"] == f"/p/{group.public_id}/overview"
    page = client.get(signed_in.headers["Location"])
    assert page.status_code == 200 and "Back to" not in page.text


def test_the_session_id_is_new_and_an_earlier_session_ends(app, client, db, group, seller):
    follow(client, made(seller))
    first = client.get_cookie("session").value
    follow(client, made(seller))
    assert client.get_cookie("session").value != first
    ended = rows(app, CustomerSession, CustomerSession.revoked_reason == "replaced")
    assert len(ended) == 1
    assert client.get(f"/p/{group.public_id}/overview").status_code == 200


def test_head_and_get_spend_nothing(app, client, group, seller):
    url = made(seller)
    path = urlsplit(url).path
    assert client.head(path).status_code == 200
    scanner = FlaskClient(app)  # a link scanner: fetches, follows, never posts
    for _ in range(3):
        assert open_link(scanner, url).status_code == 200
    [row] = rows(app, PortalSessionToken)
    assert row.spent_at is None
    assert follow(client, url).status_code == 303
    assert sessions_count(app, group.public_id) == 1


# --- one use, five minutes ---------------------------------------------------------------


def test_a_link_works_once(app, client, group, seller):
    url = made(seller)
    assert follow(client, url).headers["Location"].endswith("/overview")
    other = app.test_client()
    refused = open_link(other, url)
    assert refused.headers["Location"] == f"/p/{group.public_id}/link-invalid?kind=session"
    told = other.get(refused.headers["Location"]).text
    assert "own app work once and expire after 5 minutes" in told
    assert "Ask for a new sign-in link" not in told
    assert sessions_count(app, group.public_id) == 1


def test_a_link_expires_after_five_minutes(app, client, group, seller, clock):
    url = made(seller)
    late = app.test_client()
    page = open_link(late, url)
    clock.advance(minutes=5)
    assert open_link(client, url).headers["Location"].endswith("/link-invalid?kind=session")
    posted = late.post(f"/p/{group.public_id}/session", data={"csrf_token": csrf_token(page.text)})
    assert posted.headers["Location"].endswith("/link-invalid?kind=session")
    assert sessions_count(app, group.public_id) == 0
    clock.advance(seconds=-1)
    assert follow(app.test_client(), url).headers["Location"].endswith("/overview")


def test_twenty_concurrent_opens_make_one_session(app, client, group, seller):
    # Twenty browsers from one test address: more than its per-client limit of 30
    # secret-checking requests a minute (the limit itself is tested with the sign-in's).
    change_settings(app, SECRET_ENDPOINT_LIMIT="100 per minute")
    url = made(seller)
    browsers = [app.test_client() for _ in range(CONCURRENT)]
    jobs = [(browser, csrf_token(open_link(browser, url).text)) for browser in browsers]

    responses = race(
        jobs,
        lambda job: job[0].post(f"/p/{group.public_id}/session", data={"csrf_token": job[1]}),
    )

    locations = [r.headers["Location"] for r in responses]
    assert [r.status_code for r in responses] == [303] * CONCURRENT
    assert locations.count(f"/p/{group.public_id}/overview") == 1
    assert locations.count(f"/p/{group.public_id}/link-invalid?kind=session") == CONCURRENT - 1
    assert sessions_count(app, group.public_id) == 1
    winner = browsers[locations.index(f"/p/{group.public_id}/overview")]
    assert winner.get(f"/p/{group.public_id}/overview").status_code == 200


def test_a_forged_post_without_csrf_or_without_opening_spends_nothing(app, client, group, seller):
    url = made(seller)
    page = open_link(client, url)
    assert client.post(f"/p/{group.public_id}/session").status_code == 400  # no CSRF token
    stranger = app.test_client()
    csrf = csrf_token(stranger.get(f"/p/{group.public_id}").text)
    forged = stranger.post(f"/p/{group.public_id}/session", data={"csrf_token": csrf})
    assert forged.headers["Location"].endswith("/link-invalid?kind=session")
    [row] = rows(app, PortalSessionToken)
    assert row.spent_at is None
    assert (
        clone(app, client)
        .post(f"/p/{group.public_id}/session", data={"csrf_token": csrf_token(page.text)})
        .headers["Location"]
        .endswith("/overview")
    )


# --- who may get one --------------------------------------------------------------------


def test_an_address_no_rule_admits_gets_422_with_the_reason(app, group, seller):
    response = make(seller, email="ap@evilacme.com")
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["field"] == "email" and error["code"] == "not_admitted"
    assert error["message"] == "No access rule of this bill group admits ap@evilacme.com."
    assert rows(app, PortalSessionToken) == []


def test_a_switched_off_portal_gets_422_with_the_reason(app, db, group, seller):
    group.portal_enabled = False
    db.commit()
    response = make(seller)
    assert response.status_code == 422
    assert (
        response.get_json()["error"]["message"] == "The portal of this bill group is switched off."
    )


def test_an_unknown_bill_group_is_422(app, group, seller):
    response = seller.post("/portal-sessions", {"bill_group": "nope", "email": ADDRESS})
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "bill_group"


def test_a_key_without_the_sessions_scope_is_403(app, group):
    sync = Api(app.test_client(), make_key(app, {"read", "write"}))
    assert make(sync).status_code == 403


def test_a_revoked_key_makes_nothing_and_its_links_stop_working(app, client, db, group, seller):
    url = made(seller)
    page = open_link(client, url)
    key = db.scalar(select(ApiKey).where(ApiKey.name == "northwind app"))
    with app.app_context():
        apikeys.revoke(db, key, "test")
        db.commit()
    assert make(seller).status_code == 401
    posted = client.post(
        f"/p/{group.public_id}/session", data={"csrf_token": csrf_token(page.text)}
    )
    assert posted.headers["Location"].endswith("/link-invalid?kind=session")
    assert sessions_count(app, group.public_id) == 0
    assert [a.outcome for a in audits(app, "signin.complete")] == ["key_revoked"]


def test_access_revoked_between_making_and_opening_refuses(app, client, db, group, seller):
    url = made(seller)
    page = open_link(client, url)
    [rule] = group.access_rules
    with app.app_context():
        remove_rule(db, Actor.staff("am@seller.example.com"), group, rule.id)
        db.commit()
    posted = client.post(
        f"/p/{group.public_id}/session", data={"csrf_token": csrf_token(page.text)}
    )
    assert posted.headers["Location"].endswith("/link-invalid?kind=session")
    assert sessions_count(app, group.public_id) == 0
    assert [a.outcome for a in audits(app, "signin.complete")] == ["access_revoked"]


def test_the_session_is_rechecked_on_every_request(app, client, db, group, seller):
    follow(client, made(seller))
    assert client.get(f"/p/{group.public_id}/overview").status_code == 200
    [rule] = group.access_rules
    with app.app_context():
        remove_rule(db, Actor.staff("am@seller.example.com"), group, rule.id)
        db.commit()
    after = client.get(f"/p/{group.public_id}/overview")
    assert after.status_code == 302 and "/sign-in" not in after.headers["Location"]
    assert after.headers["Location"].startswith(f"/p/{group.public_id}?next=")


def test_the_budget_per_key(app, group, seller):
    change_settings(app, API_PORTAL_SESSION_LIMIT_PER_KEY="2 per minute")
    assert make(seller).status_code == 201
    assert make(seller).status_code == 201
    over = make(seller)
    assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
    other = Api(app.test_client(), make_key(app, {"sessions"}, "other app"))
    assert make(other).status_code == 201


# --- where it may land, and where it may return -------------------------------------------


@pytest.fixture
def other_invoice(db: Session) -> str:
    other = make_bill_group(db, external_id="bg-other")
    make_invoice(db, other, external_id="INV-OTHER", number="9999-0001")
    db.commit()
    return "INV-OTHER"


@pytest.mark.parametrize(
    "path",
    [
        "/invoices/INV-OTHER",
        "/invoices/9999-0001",
        "https://evil.example/p/x/overview",
        "//evil.example/overview",
        "/\\evil.example",
        "overview",
        "/../admin",
        "/%2e%2e/%2e%2e/admin",
        "/admin",
        "/confirm",
        "/sign-out",
        "/session",
        "/verify/x",
        "/overview#top",
        "/over view",
        "/overview\r\nSet-Cookie: x=1",
        "/" + "a" * 401,
        "/nowhere",
    ],
)
def test_a_deep_link_outside_this_portal_is_refused(app, group, seller, other_invoice, path):
    response = make(seller, path=path)
    assert response.status_code in (400, 422), path
    error = response.get_json()["error"]
    assert error["field"] == "path"
    assert rows(app, PortalSessionToken) == []


def test_the_preview_and_staff_side_are_not_reachable(app, client, group, seller):
    for path in (f"/admin/preview/{group.public_id}/overview", "/admin/accounts"):
        assert make(seller, path=path).status_code == 422
    follow(client, made(seller))
    assert client.get("/admin/accounts").status_code in (302, 303)
    preview = client.get(f"/admin/preview/{group.public_id}/overview")
    assert preview.status_code in (302, 303)
    assert "/admin/sign-in" in preview.headers["Location"]


@pytest.mark.parametrize(
    "path", ["/invoices", "/payment-methods", "/subscriptions", "/invoices/INV-1"]
)
def test_deep_links_that_are_portal_pages(app, client, group, seller, path):
    landed = follow(client, made(seller, path=path))
    assert landed.headers["Location"].startswith(f"/p/{group.public_id}/")
    assert client.get(landed.headers["Location"]).status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/account",
        "https://app.northwind.example:8443/account",
        "http://app.northwind.example/account",
        "https://app.northwind.example@evil.example/",
        "https://evil.example\\@app.northwind.example/",
        "javascript:alert(1)",
        "//app.northwind.example/account",
        "https://app.northwind.example.evil.example/",
        "https://app.northwind.example/" + "a" * 2000,
        "https://app.northwind.example/\x00",
    ],
)
def test_a_return_url_of_an_origin_not_allowed_is_refused(app, group, seller, url):
    response = make(seller, return_url=url)
    assert response.status_code in (400, 422), url
    assert response.get_json()["error"]["field"] == "return_url"
    assert rows(app, PortalSessionToken) == []


def test_the_same_origin_with_its_default_port_is_allowed(app, group, seller):
    assert make(seller, return_url=f"{APP}:443/x").status_code == 201


def test_an_origin_withdrawn_after_making_loses_its_back_link(app, client, db, group, seller):
    url = made(seller, return_url=f"{APP}/account")
    db.execute(ReturnOrigin.__table__.delete())
    db.commit()
    landed = follow(client, url)
    assert "Back to" not in client.get(landed.headers["Location"]).text


# --- edge inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "status"),
    [
        ("a" * 10_000 + "@acme.com", 422),
        ("ap\x07@acme.com", 400),
        ("ap\u202e@acme.com", 422),
        ("用户@acme.com", 422),
        ("ap@acme.com, cfo@acme.com", 422),
        ("AP@ACME.COM ", 201),
        ("ap＠acme.com", 422),
        ("", 422),
    ],
)
def test_edge_addresses(app, group, seller, email, status):
    response = make(seller, email=email)
    assert response.status_code == status, response.get_json()
    if status != 201:
        assert response.get_json()["error"]["field"] == "email"


def test_a_lone_surrogate_is_refused(app, group, seller):
    raw = '{"bill_group": "bg-acme", "email": "ap\\ud800@acme.com"}'
    response = seller.client.post(
        "/api/v1/portal-sessions",
        data=raw,
        content_type="application/json",
        headers={"Authorization": f"Bearer {seller.key}"},
    )
    assert response.status_code == 400
    assert rows(app, PortalSessionToken) == []


def test_a_huge_body_and_unknown_fields_are_refused(app, group, seller):
    assert make(seller, password="x").status_code == 422
    big = seller.client.post(
        "/api/v1/portal-sessions",
        data=json.dumps({"bill_group": "bg-acme", "email": ADDRESS, "path": "/" + "a" * 2_000_000}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {seller.key}"},
    )
    assert big.status_code == 413


@pytest.mark.parametrize("token", ["x", "a" * 43, "a" * 5000, "%00", "..%2f..%2fadmin"])
def test_forged_tokens_lead_to_the_neutral_page(app, client, group, seller, token):
    response = client.get(f"/p/{group.public_id}/session/{token}")
    assert response.status_code in (303, 404)
    assert sessions_count(app, group.public_id) == 0


def test_a_link_of_another_bill_group_does_not_open_this_one(app, client, db, group, seller):
    other = make_bill_group(db, external_id="bg-two")
    add_rule(db, other, "acme.com", created_by="test")
    db.commit()
    url = made(seller)
    token = url.rsplit("/", 1)[1]
    assert (
        client.get(f"/p/{other.public_id}/session/{token}")
        .headers["Location"]
        .endswith("/link-invalid?kind=session")
    )


def test_the_token_is_redacted_from_request_logs():
    line = '"GET /p/abc123def456/session/Zm9vYmFy_-x?x=1 HTTP/1.1" 303'
    assert logredact.redact(line) == '"GET /p/abc123def456/session/[redacted]?x=1 HTTP/1.1" 303'


def test_an_encoded_spelling_of_the_link_opens_it_and_is_still_redacted(app, client, group, seller):
    """The server routes on the percent-decoded path, so /sess%69on/<token> and
    %2Fsession%2F<token> open the link; the access log writes the raw request line, so
    each spelling must be redacted too (a log reader must never get a live token)."""
    url = made(seller)
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    public_id, token = path.split("/")[2], path.rsplit("/", 1)[1]
    for spelled in (
        f"/p/{public_id}/sess%69on/{token}",
        f"/p/{public_id}%2Fsession%2F{token}",
        f"/p/{public_id}%2fSession%2f{token}%2Fmore",
        f"/p/{public_id}/%73ession/{token}",
    ):
        line = f'"GET {spelled} HTTP/1.1" 303'
        assert token not in logredact.redact(line), spelled
        assert "[redacted] HTTP/1.1" in logredact.redact(line)
        if "Session" not in spelled and "more" not in spelled:
            opened = client.get(spelled)
            assert opened.headers["Location"].endswith(f"/p/{public_id}/session"), spelled
    callback = '"GET /sso/callbac%6b?code=C0DE&state=ST4TE HTTP/1.1" 303'
    assert "C0DE" not in logredact.redact(callback)
    assert "ST4TE" not in logredact.redact(callback)
    # Nothing else is touched.
    for kept in ("GET /p/x/session HTTP/1.1", "GET /p/x/sessions/1 HTTP/1.1"):
        assert logredact.redact(kept) == kept


def test_expiry_is_five_minutes_from_making(app, group, seller, clock):
    made(seller)
    [row] = rows(app, PortalSessionToken)
    assert row.expires_at - row.created_at == dt.timedelta(minutes=5)


def test_a_portal_session_has_the_admitting_rules_role_at_each_request(
    app, client, db, group, seller
):
    """The seller's app makes the session; the role is the rule's (acme.com: a domain, so
    a viewer), read again on every request, as for every other way in."""
    signed_in = follow(client, made(seller))
    assert signed_in.status_code == 303
    overview = client.get(f"/p/{group.public_id}/overview").text
    assert '<span class="role-tag">Viewer</span>' in overview
    posted = client.post(
        f"/p/{group.public_id}/autopay", data={"csrf_token": csrf_token(overview), "enabled": "on"}
    )
    assert posted.status_code == 403
    (rule,) = group.access_rules
    staff = Api(app.test_client(), make_key(app))
    changed = staff.put(
        f"/bill-groups/bg-acme/access-rules/{rule.id}/role", {"role": "billing_manager"}
    )
    assert changed.status_code == 200
    again = client.get(f"/p/{group.public_id}/overview").text
    assert '<span class="role-tag">Billing manager</span>' in again
