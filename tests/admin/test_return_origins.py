"""Admins allow the origins a portal session's return_url may use, per seller, through
the real form with CSRF on; nobody else may."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.actions import portal_sessions
from portal.models import ReturnOrigin, StaffRole
from tests.admin.conftest import post_form
from tests.conftest import csrf_token
from tests.factories import make_entity
from tests.portal.pages_helpers import audit_rows

PAGE = "/admin/return-origins"


@pytest.fixture
def entity(db):
    row = make_entity(db, name="Northwind Cloud")
    db.commit()
    return row


def origins(db) -> list[tuple[int, str]]:
    db.expire_all()
    return [(r.entity_id, r.origin) for r in db.scalars(select(ReturnOrigin))]


def test_an_admin_allows_an_origin_and_removes_it(app, db, staff_client, entity):
    admin = staff_client(StaffRole.ADMIN)
    added = post_form(
        admin, PAGE, entity_id=entity.id, origin=" HTTPS://App.Northwind.example:443/ "
    )
    assert added.status_code == 303, added.text
    assert origins(db) == [(entity.id, "https://app.northwind.example")]
    page = admin.get(PAGE)
    assert "https://app.northwind.example" in page.text and "Northwind Cloud" in page.text
    [row] = db.scalars(select(ReturnOrigin)).all()
    removed = post_form(admin, PAGE, f"{PAGE}/{row.id}/remove")
    assert removed.status_code == 303
    assert origins(db) == []
    [add] = audit_rows(db, "return_origin.add")
    [remove] = audit_rows(db, "return_origin.remove")
    assert add.actor_type == remove.actor_type == "staff"
    assert "https://app.northwind.example" in add.detail


@pytest.mark.parametrize(
    ("origin", "message"),
    [
        ("https://app.example.com/account", "Enter just the origin"),
        ("http://app.example.com", "must use https"),
        ("ftp://app.example.com", "must be a web address"),
        ("https://user@app.example.com", "must be a web address"),
        ("https://app.example.com:99999", "port"),
        ("https://app example.com", "spaces"),
        ("https://ünï.example", "xn--"),
        ("", "Enter the origin"),
    ],
)
def test_what_is_not_an_origin_is_refused(
    app, db, staff_client, entity, monkeypatch, origin, message
):
    # Outside local development (the tests are local: there http would be accepted).
    monkeypatch.setattr(portal_sessions, "is_local", lambda app: False)
    admin = staff_client(StaffRole.ADMIN)
    refused = post_form(admin, PAGE, entity_id=entity.id, origin=origin)
    assert refused.status_code == 400
    assert message in refused.text
    assert origins(db) == []


def test_http_is_accepted_in_local_development(app, db, staff_client, entity):
    admin = staff_client(StaffRole.ADMIN)
    added = post_form(admin, PAGE, entity_id=entity.id, origin="http://localhost:3000")
    assert added.status_code == 303
    assert origins(db) == [(entity.id, "http://localhost:3000")]


def test_a_duplicate_is_refused(app, db, staff_client, entity):
    admin = staff_client(StaffRole.ADMIN)
    post_form(admin, PAGE, entity_id=entity.id, origin="https://app.example.com")
    again = post_form(admin, PAGE, entity_id=entity.id, origin="https://APP.example.com:443")
    assert again.status_code == 409
    assert "already allowed" in again.text
    assert len(origins(db)) == 1


@pytest.mark.parametrize("role", [StaffRole.ACCOUNT_MANAGER, StaffRole.VIEWER])
def test_only_admins(app, db, staff_client, entity, role):
    other = staff_client(role)
    assert other.get(PAGE).status_code == 403
    # A forged POST with a valid CSRF token of the member's own session.
    home = other.get("/admin/")
    assert home.status_code == 200
    data = {"csrf_token": csrf_token(home.text), "entity_id": entity.id}
    assert other.post(PAGE, data=data | {"origin": "https://x.example"}).status_code == 403
    assert origins(db) == []
    admin = staff_client(StaffRole.ADMIN)
    post_form(admin, PAGE, entity_id=entity.id, origin="https://x.example")
    [row] = db.scalars(select(ReturnOrigin)).all()
    assert other.post(f"{PAGE}/{row.id}/remove", data=data).status_code == 403
    assert origins(db) == [(entity.id, "https://x.example")]
