"""Admins manage API keys and webhook endpoints, through the real forms with CSRF on."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from sqlalchemy import func, select

from portal import webhooks
from portal.db import Base
from portal.models import (
    ApiKey,
    DeliveryStatus,
    StaffRole,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from portal.signin import sha256
from tests.admin.conftest import make_staff, post_form, staff_sign_in
from tests.clock import Clock
from tests.conftest import csrf_token
from tests.portal.pages_helpers import audit_rows

ADMIN = "integrations-admin@staff.example.com"
KEY_RE = re.compile(r'value="(bp_[A-Za-z0-9_-]{43})"')
SECRET_RE = re.compile(r'value="(whsec_[A-Za-z0-9_-]+)"')
NOW = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def admin(app, db):
    make_staff(db, StaffRole.ADMIN, ADMIN)
    client = app.test_client()
    assert staff_sign_in(client, ADMIN).status_code == 303
    return client


def create_key(client, name: str = "Billing system", scopes=("read", "write")) -> str:
    response = post_form(client, "/admin/api-keys", name=name, scopes=list(scopes))
    assert response.status_code == 200, response.text
    return KEY_RE.search(response.text).group(1)


def create_endpoint(client, url="https://billing.example.com/hooks", events=None) -> str:
    events = list(webhooks.EVENT_TYPES) if events is None else events
    response = post_form(client, "/admin/webhooks", url=url, description="Billing", events=events)
    assert response.status_code == 200, response.text
    return SECRET_RE.search(response.text).group(1)


def stored_anywhere(db, text: str) -> list[str]:
    """The tables with a row that contains `text` in any column."""
    found = []
    for table in Base.metadata.sorted_tables:
        for row in db.execute(select(table)):
            if any(text in str(value) for value in row):
                found.append(table.name)
    return found


def queue_event(app, db, event_type: str = "contact.updated"):
    with app.app_context():
        event = webhooks.emit(db, event_type, None, {"n": 1}, actor={"type": "staff"})
    db.commit()
    assert event is not None
    return event


def endpoint_row(app, db, url: str) -> WebhookEndpoint:
    with app.app_context():
        _secret, endpoint = webhooks.create_endpoint(db, url, set(webhooks.EVENT_TYPES), "test")
    db.commit()
    return endpoint


def delivery_of(db, endpoint: WebhookEndpoint) -> WebhookDelivery:
    db.expire_all()
    return db.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id)
        .order_by(WebhookDelivery.id.desc())
    ).first()


# --- API keys -----------------------------------------------------------------------


def test_a_new_key_is_shown_once_and_only_its_hash_is_stored(admin, db):
    response = post_form(admin, "/admin/api-keys", name="Billing system", scopes=["read", "write"])
    assert response.status_code == 200  # the key is in this response, not a redirect's flash
    key = KEY_RE.search(response.text).group(1)
    assert response.text.count(key) == 1
    assert "only time the key is shown" in response.text
    assert "Authorization: Bearer &lt;key&gt;" in response.text
    assert 'data-copy-target="new-api-key"' in response.text
    assert '<script src="/static/copy.js" defer></script>' in response.text
    assert response.headers["Cache-Control"] == "no-store"

    row = db.scalar(select(ApiKey))
    assert row.key_hash == sha256(key)
    assert (row.name, row.scopes, row.created_by) == ("Billing system", "read write", ADMIN)
    assert key.startswith(row.hint) and len(row.hint) < len(key)
    assert stored_anywhere(db, key) == []

    listing = admin.get("/admin/api-keys")
    assert key not in listing.text
    assert f"<code>{row.hint}…</code>" in listing.text
    assert "Never" in listing.text and "Active" in listing.text

    (event,) = audit_rows(db, "api_key.create")
    assert event.actor_type == "staff" and event.actor == ADMIN
    assert json.loads(event.detail)["api_key_id"] == row.id


def test_a_key_made_here_works_against_the_api_until_it_is_revoked(admin, db):
    key = create_key(admin)
    bearer = {"Authorization": f"Bearer {key}"}
    assert admin.get("/api/v1/accounts", headers=bearer).status_code == 200
    row = db.scalar(select(ApiKey))
    db.refresh(row)
    assert row.last_used_at is not None
    assert "Never" not in admin.get("/admin/api-keys").text

    revoke = f"/admin/api-keys/{row.id}/revoke"
    response = post_form(admin, "/admin/api-keys", revoke)
    assert response.status_code == 303 and response.headers["Location"] == "/admin/api-keys"
    listing = admin.get("/admin/api-keys")
    assert "Revoked Billing system" in listing.text and f"by {ADMIN}" in listing.text
    assert admin.get("/api/v1/accounts", headers=bearer).status_code == 401

    again = post_form(admin, "/admin/api-keys", revoke)
    assert again.status_code == 303
    assert "was already revoked" in admin.get("/admin/api-keys").text
    (event,) = audit_rows(db, "api_key.revoke")
    assert event.actor == ADMIN and json.loads(event.detail)["api_key_id"] == row.id
    assert key not in event.detail


def test_a_read_only_key_cannot_write(admin):
    key = create_key(admin, "Reporting", scopes=["read"])
    bearer = {"Authorization": f"Bearer {key}"}
    assert admin.get("/api/v1/accounts", headers=bearer).status_code == 200
    response = admin.put("/api/v1/accounts/acc-1", json={"name": "Acme"}, headers=bearer)
    assert response.status_code == 403
    assert "write scope" in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "", "scopes": ["read"]}, "Enter a name"),
        ({"name": "No scopes"}, "Choose at least one scope"),
        ({"name": "Odd scope", "scopes": ["admin"]}, "not a valid choice"),
        ({"name": "x" * 101, "scopes": ["read"]}, "at most 100 characters"),
    ],
)
def test_a_bad_key_form_is_refused_next_to_the_field(admin, db, data, message):
    response = post_form(admin, "/admin/api-keys", **data)
    assert response.status_code == 400
    assert message in response.text
    assert 'class="error-message"' in response.text
    assert db.scalar(select(func.count(ApiKey.id))) == 0
    assert audit_rows(db, "api_key.create") == []


def test_a_post_without_the_csrf_token_is_refused(admin, db):
    response = admin.post("/admin/api-keys", data={"name": "Sneaky", "scopes": ["read"]})
    assert response.status_code == 400
    assert db.scalar(select(func.count(ApiKey.id))) == 0


@pytest.mark.parametrize("role", [StaffRole.ACCOUNT_MANAGER, StaffRole.VIEWER])
def test_only_admins_reach_these_pages(app, db, staff_client, role):
    endpoint = endpoint_row(app, db, "https://billing.example.com/hooks")
    client = staff_client(role)
    for path in ("/admin/api-keys", "/admin/webhooks", f"/admin/webhooks/{endpoint.id}"):
        assert client.get(path).status_code == 403, path
    token = csrf_token(client.get("/admin/").text)
    response = client.post(
        "/admin/api-keys", data={"csrf_token": token, "name": "x", "scopes": "read"}
    )
    assert response.status_code == 403
    assert db.scalar(select(func.count(ApiKey.id))) == 0
    home = client.get("/admin/").text
    assert 'href="/admin/api-keys"' not in home and 'href="/admin/webhooks"' not in home


def test_admins_see_the_navigation_entries(admin):
    home = admin.get("/admin/").text
    assert '<a href="/admin/api-keys">API keys</a>' in home
    assert '<a href="/admin/webhooks">Webhooks</a>' in home


# --- webhook endpoints --------------------------------------------------------------


def test_the_create_form_ticks_every_event_by_default(admin):
    page = admin.get("/admin/webhooks").text
    for event in webhooks.EVENT_TYPES:
        checkbox = r'<input checked id="events-\d+" name="events" type="checkbox" value="%s">'
        assert re.search(checkbox % re.escape(event), page), event


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://billing.example.com/hooks", "The URL must start with https://."),
        ("https://", "The URL must name a host"),
        ("https://user:secret@billing.example.com/hooks", "Put no user name or password"),
        ("https://billing.example.com:99999/hooks", "That is not a valid URL."),
        ("https://[::1/hooks", "That is not a valid URL."),
        ("", "Enter the URL"),
    ],
)
def test_a_bad_endpoint_url_is_refused_and_nothing_is_stored(admin, db, url, message):
    response = post_form(admin, "/admin/webhooks", url=url, events=["contact.updated"])
    assert response.status_code == 400
    assert re.search(
        r'<p class="error-message" id="url-error">' + re.escape(message), response.text
    )
    assert db.scalar(select(func.count(WebhookEndpoint.id))) == 0
    assert audit_rows(db, "webhook_endpoint.create") == []


def test_an_endpoint_needs_at_least_one_event(admin, db):
    response = post_form(admin, "/admin/webhooks", url="https://billing.example.com/hooks")
    assert response.status_code == 400
    assert "Choose at least one event." in response.text
    assert db.scalar(select(func.count(WebhookEndpoint.id))) == 0


def test_the_signing_secret_is_shown_once_and_stored_sealed(app, admin, db):
    response = post_form(
        admin,
        "/admin/webhooks",
        url="https://billing.example.com/hooks",
        description="Production billing",
        events=["contact.updated", "payment_method.added"],
    )
    assert response.status_code == 200
    secret = SECRET_RE.search(response.text).group(1)
    assert response.text.count(secret) == 1
    assert "Portal-Signature: t=&lt;unix seconds&gt;,v1=&lt;hex&gt;" in response.text
    assert "Portal-Event-Id" in response.text and "5 minutes" in response.text
    assert 'data-copy-target="new-webhook-secret"' in response.text

    endpoint = db.scalar(select(WebhookEndpoint))
    assert endpoint.events == "contact.updated payment_method.added"
    assert endpoint.description == "Production billing" and endpoint.created_by == ADMIN
    assert stored_anywhere(db, secret) == []
    with app.app_context():
        assert webhooks.endpoint_secret(endpoint) == secret

    listing = admin.get("/admin/webhooks").text
    assert "https://billing.example.com/hooks" in listing and secret not in listing
    assert secret not in admin.get(f"/admin/webhooks/{endpoint.id}").text
    (event,) = audit_rows(db, "webhook_endpoint.create")
    assert event.actor == ADMIN and json.loads(event.detail)["endpoint_id"] == endpoint.id


def test_the_list_counts_pending_and_failed_deliveries(app, admin, db):
    endpoint = endpoint_row(app, db, "https://billing.example.com/hooks")
    for _ in range(3):
        queue_event(app, db)
    failed = delivery_of(db, endpoint)
    failed.status = DeliveryStatus.FAILED
    db.commit()
    page = admin.get("/admin/webhooks").text
    assert '<td data-label="Pending" class="num">2</td>' in page
    assert '<td data-label="Failed" class="num">1</td>' in page


def test_an_endpoint_is_updated_with_the_same_checks(app, admin, db):
    endpoint = endpoint_row(app, db, "https://billing.example.com/hooks")
    page = f"/admin/webhooks/{endpoint.id}"
    bad = post_form(
        admin, page, url="https://user:pw@billing.example.com/", events=["contact.updated"]
    )
    assert bad.status_code == 400 and "Put no user name or password" in bad.text
    db.refresh(endpoint)
    assert endpoint.url == "https://billing.example.com/hooks"

    response = post_form(
        admin,
        page,
        url="https://billing.example.com/v2/hooks",
        description="",
        events=["contact.updated"],
    )  # is_active unticked: disable
    assert response.status_code == 303 and response.headers["Location"] == page
    db.refresh(endpoint)
    assert (endpoint.url, endpoint.events, endpoint.is_active) == (
        "https://billing.example.com/v2/hooks",
        "contact.updated",
        False,
    )
    assert "Saved the endpoint." in admin.get(page).text
    (event,) = audit_rows(db, "webhook_endpoint.update")
    changes = json.loads(event.detail)["changes"]
    assert changes["url"] == [
        "https://billing.example.com/hooks",
        "https://billing.example.com/v2/hooks",
    ]
    assert changes["is_active"] == [True, False]
    assert set(changes) == {"url", "events", "is_active"}  # the description was and is empty
    assert event.actor == ADMIN


def test_deleting_an_endpoint_takes_its_deliveries_with_it(app, admin, db):
    endpoint = endpoint_row(app, db, "https://billing.example.com/hooks")
    other = endpoint_row(app, db, "https://other.example.com/hooks")
    queue_event(app, db)
    gone, kept = endpoint.id, other.id
    page = f"/admin/webhooks/{gone}"
    response = post_form(admin, page, f"{page}/delete")
    assert response.status_code == 303 and response.headers["Location"] == "/admin/webhooks"
    db.expire_all()
    assert db.get(WebhookEndpoint, gone) is None
    assert db.scalars(select(WebhookDelivery.endpoint_id)).all() == [kept]
    assert admin.get(page).status_code == 404
    (event,) = audit_rows(db, "webhook_endpoint.delete")
    assert json.loads(event.detail)["endpoint_id"] == gone and event.actor == ADMIN


# --- the delivery log and resend ----------------------------------------------------


def test_the_delivery_log_is_newest_first_with_attempts_and_pages(app, admin, db):
    endpoint = endpoint_row(app, db, "https://billing.example.com/hooks")
    events = [queue_event(app, db) for _ in range(51)]
    oldest = db.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id)
        .order_by(WebhookDelivery.id)
    )
    db.add(
        WebhookAttempt(
            delivery_id=oldest.id, at=NOW, status_code=500, error="HTTP 500", duration_ms=123
        )
    )
    oldest.attempts, oldest.last_status_code = 1, 500
    db.commit()

    first = admin.get(f"/admin/webhooks/{endpoint.id}").text
    assert first.count("Resend<span") == 50
    assert first.index(events[-1].public_id) < first.index(events[-2].public_id)
    assert events[0].public_id not in first
    assert "Page 1 of 2" in first

    second = admin.get(f"/admin/webhooks/{endpoint.id}?page=2").text
    assert second.count("Resend<span") == 1
    assert events[0].public_id in second
    assert "HTTP 500 · 123 ms" in second and "<details" in second


def _resend(admin, endpoint, delivery):
    page = f"/admin/webhooks/{endpoint.id}"
    return post_form(admin, page, f"{page}/deliveries/{delivery.id}/resend")


@pytest.mark.parametrize("before", [DeliveryStatus.DELIVERED, DeliveryStatus.FAILED])
def test_resend_queues_the_delivery_again_now(app, admin, db, before):
    Clock(NOW).install(app)
    endpoint = endpoint_row(app, db, "https://billing.example.com/hooks")
    event = queue_event(app, db)
    delivery = delivery_of(db, endpoint)
    delivery.status, delivery.attempts = before, 3
    delivery.next_attempt_at = NOW - dt.timedelta(days=1)
    delivery.claimed_until = NOW + dt.timedelta(minutes=5)
    db.commit()

    response = _resend(admin, endpoint, delivery)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/admin/webhooks/{endpoint.id}"
    assert (
        "queued; the worker sends it within seconds" in admin.get(response.headers["Location"]).text
    )
    db.expire_all()
    delivery = db.get(WebhookDelivery, delivery.id)
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.next_attempt_at == NOW and delivery.claimed_until is None
    with app.app_context():
        assert [d.id for d in webhooks.claim(db, "test-worker")] == [delivery.id]
    (row,) = audit_rows(db, "webhook_delivery.resend")
    detail = json.loads(row.detail)
    assert (detail["delivery_id"], detail["event_id"]) == (delivery.id, event.public_id)
    assert row.actor == ADMIN


def test_resend_is_404_for_another_endpoints_delivery(app, admin, db):
    mine = endpoint_row(app, db, "https://billing.example.com/hooks")
    theirs = endpoint_row(app, db, "https://other.example.com/hooks")
    queue_event(app, db)
    delivery = delivery_of(db, theirs)
    delivery.status = DeliveryStatus.FAILED
    db.commit()
    assert _resend(admin, mine, delivery).status_code == 404
    db.expire_all()
    assert db.get(WebhookDelivery, delivery.id).status == DeliveryStatus.FAILED
    assert audit_rows(db, "webhook_delivery.resend") == []


def test_resend_to_a_disabled_endpoint_is_refused(app, admin, db):
    endpoint = endpoint_row(app, db, "https://billing.example.com/hooks")
    queue_event(app, db)
    delivery = delivery_of(db, endpoint)
    delivery.status = DeliveryStatus.FAILED
    endpoint.is_active = False
    db.commit()
    response = _resend(admin, endpoint, delivery)
    assert response.status_code == 303
    assert "Not queued: this endpoint is disabled" in admin.get(response.headers["Location"]).text
    db.expire_all()
    assert db.get(WebhookDelivery, delivery.id).status == DeliveryStatus.FAILED
    assert audit_rows(db, "webhook_delivery.resend") == []
