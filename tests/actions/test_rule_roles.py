"""A rule's customer role, through the action and through each face that sets it (the
staff access page and the API): the kind's default, a chosen role, a change (audited,
announced by webhook), and a forged role refused with nothing written."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from portal import webhooks
from portal.access import ROLE_CHOICES, AccessError
from portal.actions import Actor
from portal.actions.rules import NoSuchRule, add_rule, change_role
from portal.models import AccessRule, AuditEvent, CustomerRole, StaffRole, WebhookEvent
from tests.admin.test_access_settings import _client, counts, page_url, post
from tests.factories import make_bill_group

STAFF = Actor.staff("manager@staff.example.com")
FORGED = ["admin", "owner", "Viewer", "billing manager", "", " ", "1", "viewer\x00", "\ud800"]


@pytest.fixture
def group(db):
    group = make_bill_group(db, external_id="bg-roles")
    db.commit()
    return group


@pytest.fixture
def manager(app, db):
    return _client(app, db, StaffRole.ACCOUNT_MANAGER, "manager@staff.example.com")


@pytest.fixture
def api(app, client):
    from tests.api.conftest import Api, make_key

    return Api(client, make_key(app))


@pytest.fixture
def hooked(app, db):
    """A webhook endpoint that takes every access rule event, so events are stored."""
    with app.app_context():
        webhooks.create_endpoint(
            db,
            "https://hooks.example.com/portal",
            {"access_rule.created", "access_rule.updated", "access_rule.deleted"},
            "admin@staff.example.com",
        )
        db.commit()


def roles(db) -> list[tuple[str, str]]:
    db.expire_all()
    return [
        (rule.value, rule.role.value)
        for rule in db.scalars(select(AccessRule).order_by(AccessRule.id))
    ]


def role_trail(db) -> list[tuple[str, str, str | None]]:
    db.expire_all()
    rows = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "access_rule.role").order_by(AuditEvent.id)
    )
    return [(row.actor, row.outcome, row.detail) for row in rows]


def events(db, kind: str) -> list[WebhookEvent]:
    db.expire_all()
    return list(
        db.scalars(select(WebhookEvent).where(WebhookEvent.type == kind).order_by(WebhookEvent.id))
    )


# --- the action ----------------------------------------------------------------------------


def test_a_domain_defaults_to_viewer_and_an_address_to_billing_manager(app, db, group):
    with app.app_context():
        add_rule(db, STAFF, group, "acme.com")
        add_rule(db, STAFF, group, "cfo@acme-holdings.com")
        db.commit()
    assert roles(db) == [("acme.com", "viewer"), ("cfo@acme-holdings.com", "billing_manager")]


def test_a_chosen_role_overrides_the_default(app, db, group):
    with app.app_context():
        add_rule(db, STAFF, group, "acme.com", role="billing_manager")
        add_rule(db, STAFF, group, "cfo@acme-holdings.com", role=CustomerRole.VIEWER)
        db.commit()
    assert roles(db) == [("acme.com", "billing_manager"), ("cfo@acme-holdings.com", "viewer")]


@pytest.mark.parametrize("forged", FORGED)
def test_a_forged_role_is_refused_on_its_field_and_nothing_is_written(app, db, group, forged):
    before = counts(db)
    with app.app_context(), pytest.raises(AccessError) as refused:
        add_rule(db, STAFF, group, "acme.com", role=forged)
    assert (refused.value.field, refused.value.message) == ("role", ROLE_CHOICES)
    assert counts(db) == before


def test_a_change_is_audited_with_before_and_after_and_announced(app, db, group, hooked):
    with app.app_context():
        rule = add_rule(db, STAFF, group, "acme.com").rule
        db.commit()
        changed = change_role(db, STAFF, group, rule.id, "billing_manager")
        db.commit()
    assert changed.changed and changed.before == CustomerRole.VIEWER
    assert roles(db) == [("acme.com", "billing_manager")]
    assert role_trail(db) == [
        ("manager@staff.example.com", "changed", "acme.com: viewer -> billing_manager")
    ]
    (event,) = events(db, "access_rule.updated")
    payload = json.loads(event.payload)
    assert payload["data"]["object"]["role"] == "billing_manager"
    assert payload["data"]["changed"] == ["role"]
    (created,) = events(db, "access_rule.created")
    assert json.loads(created.payload)["data"]["object"]["role"] == "viewer"


def test_choosing_the_role_a_rule_has_is_no_change(app, db, group, hooked):
    with app.app_context():
        rule = add_rule(db, STAFF, group, "cfo@acme-holdings.com").rule
        db.commit()
        changed = change_role(db, STAFF, group, rule.id, "billing_manager")
        db.commit()
    assert not changed.changed
    assert role_trail(db) == [] and events(db, "access_rule.updated") == []


def test_another_bill_groups_rule_is_no_such_rule(app, db, group):
    other = make_bill_group(db, external_id="bg-other")
    db.commit()
    with app.app_context():
        rule = add_rule(db, STAFF, other, "acme.com").rule
        db.commit()
        with pytest.raises(NoSuchRule):
            change_role(db, STAFF, group, rule.id, "billing_manager")
        with pytest.raises(NoSuchRule):
            change_role(db, STAFF, group, 2**62, "billing_manager")
    assert roles(db) == [("acme.com", "viewer")] and role_trail(db) == []


@pytest.mark.parametrize("forged", FORGED)
def test_a_forged_role_change_is_refused_before_anything(app, db, group, forged):
    with app.app_context():
        rule = add_rule(db, STAFF, group, "acme.com").rule
        db.commit()
        before = counts(db)
        with pytest.raises(AccessError):
            change_role(db, STAFF, group, rule.id, forged)
    db.rollback()
    assert counts(db) == before and roles(db) == [("acme.com", "viewer")]


# --- the staff page -----------------------------------------------------------------------


def rule_id(db) -> int:
    db.expire_all()
    return int(db.scalar(select(AccessRule.id).order_by(AccessRule.id.desc())))


def test_staff_choose_the_role_when_adding(db, group, manager):
    page = manager.get(page_url(group)).text
    assert '<option selected value="viewer">' in page  # the domain form's default
    assert '<option selected value="billing_manager">' in page  # the address form's
    assert (
        post(
            manager, group, "/domains", {"domain": "acme.com", "role": "billing_manager"}
        ).status_code
        == 303
    )
    assert (
        post(manager, group, "/emails", {"email": "cfo@other.com", "role": "viewer"}).status_code
        == 303
    )
    assert roles(db) == [("acme.com", "billing_manager"), ("cfo@other.com", "viewer")]
    shown = manager.get(page_url(group)).text
    assert "they can now sign in. Customer role: viewer." in shown
    assert 'id="role-' in shown and "Change role" in shown


@pytest.mark.parametrize("form", ["/domains", "/emails"])
@pytest.mark.parametrize("forged", ["admin", "owner", "BILLING_MANAGER", ""])
def test_a_forged_role_on_the_staff_form_is_a_400_with_the_message(
    db, group, manager, form, forged
):
    before = counts(db)
    data = {"domain": "acme.com"} if form == "/domains" else {"email": "cfo@other.com"}
    response = post(manager, group, form, data | {"role": forged})
    assert response.status_code == 400
    assert ROLE_CHOICES in response.text
    assert counts(db) == before


def test_staff_change_a_rules_role_and_it_is_audited(db, group, manager):
    assert post(manager, group, "/domains", {"domain": "acme.com"}).status_code == 303
    response = post(manager, group, f"/rules/{rule_id(db)}/role", {"role": "billing_manager"})
    assert response.status_code == 303
    assert roles(db) == [("acme.com", "billing_manager")]
    assert role_trail(db) == [
        ("manager@staff.example.com", "changed", "acme.com: viewer -> billing_manager")
    ]
    assert "acme.com now admits billing managers" in manager.get(page_url(group)).text


@pytest.mark.parametrize("forged", ["admin", "owner", "", "viewer; DROP TABLE"])
def test_a_forged_role_change_on_the_staff_page_is_a_400_and_nothing_is_written(
    db, group, manager, forged
):
    assert post(manager, group, "/domains", {"domain": "acme.com"}).status_code == 303
    before = counts(db)
    response = post(manager, group, f"/rules/{rule_id(db)}/role", {"role": forged})
    assert response.status_code == 400
    assert ROLE_CHOICES in response.text
    assert counts(db) == before and roles(db) == [("acme.com", "viewer")]


def test_changing_the_role_of_a_rule_of_another_bill_group_is_a_404(db, group, manager):
    other = make_bill_group(db, external_id="bg-else")
    db.commit()
    assert post(manager, other, "/domains", {"domain": "acme.com"}).status_code == 303
    response = post(manager, group, f"/rules/{rule_id(db)}/role", {"role": "billing_manager"})
    assert response.status_code == 404
    assert roles(db) == [("acme.com", "viewer")]


def test_a_staff_viewer_cannot_change_a_role(app, db, group, manager):
    assert post(manager, group, "/domains", {"domain": "acme.com"}).status_code == 303
    staff_viewer = _client(app, db, StaffRole.VIEWER, "viewer@staff.example.com")
    assert "Change role" not in staff_viewer.get(page_url(group)).text
    response = post(staff_viewer, group, f"/rules/{rule_id(db)}/role", {"role": "billing_manager"})
    assert response.status_code == 403
    assert roles(db) == [("acme.com", "viewer")] and role_trail(db) == []


# --- the API --------------------------------------------------------------------------------


def rules_path(group: Any) -> str:
    return f"/bill-groups/{group.external_id}/access-rules"


def test_the_api_takes_returns_and_changes_the_role(db, group, api, hooked):
    created = api.post(rules_path(group), {"value": "acme.com"})
    assert (created.status_code, created.get_json()["role"]) == (201, "viewer")
    chosen = api.post(rules_path(group), {"value": "cfo@other.com", "role": "viewer"})
    assert chosen.get_json()["role"] == "viewer"
    listed = api.get(rules_path(group)).get_json()["data"]
    assert [(r["value"], r["role"]) for r in listed] == [
        ("acme.com", "viewer"),
        ("cfo@other.com", "viewer"),
    ]
    rule = created.get_json()["id"]
    changed = api.put(f"{rules_path(group)}/{rule}/role", {"role": "billing_manager"})
    assert changed.status_code == 200
    assert changed.get_json()["role"] == "billing_manager"
    assert role_trail(db)[0][1:] == ("changed", "acme.com: viewer -> billing_manager")
    assert len(events(db, "access_rule.updated")) == 1


@pytest.mark.parametrize("forged", ["admin", "owner", "", 1, None, ["viewer"], True])
def test_a_bad_role_in_the_api_is_a_422_in_the_standard_shape(db, group, api, forged):
    before = counts(db)
    response = api.post(rules_path(group), {"value": "acme.com", "role": forged})
    if forged is None:  # null is "the default"
        assert response.status_code == 201
        return
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["field"] == "role" and error["message"]
    assert counts(db) == before


@pytest.mark.parametrize("forged", ["admin", None, 7, {}])
def test_a_bad_role_change_in_the_api_is_a_422_and_nothing_is_written(db, group, api, forged):
    rule = api.post(rules_path(group), {"value": "acme.com"}).get_json()["id"]
    before = counts(db)
    response = api.put(f"{rules_path(group)}/{rule}/role", {"role": forged})
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "role"
    assert counts(db) == before and roles(db) == [("acme.com", "viewer")]


def test_changing_an_unknown_rule_over_the_api_is_a_404(db, group, api):
    for rule in ("999", "9223372036854775807", "9223372036854775808"):
        response = api.put(f"{rules_path(group)}/{rule}/role", {"role": "viewer"})
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == 0
