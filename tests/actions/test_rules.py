"""Each access rule, driven through every face that can trigger it (the staff page's
forms and the API), with the same outcome: the same message, nothing written on a
refusal, the same audit rows on success."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from portal.access import ONE_AT_A_TIME
from portal.models import AccessRule, AuditEvent
from tests.admin.test_access_settings import counts, post
from tests.factories import make_bill_group


@pytest.fixture
def group(db):
    group = make_bill_group(db, external_id="bg-rules")
    db.commit()
    return group


@pytest.fixture
def manager(app, db):
    from portal.models import StaffRole
    from tests.admin.test_access_settings import _client

    return _client(app, db, StaffRole.ACCOUNT_MANAGER, "manager@staff.example.com")


@pytest.fixture
def api(app, client):
    from tests.api.conftest import Api, make_key

    return Api(client, make_key(app))


def staff_add(manager: Any, group: Any, value: str, fold_in: bool = False) -> tuple[int, str]:
    """(status, page text) of the staff form the value belongs in."""
    if "@" in value and not value.startswith("@"):
        response = post(manager, group, "/emails", {"email": value})
    else:
        data = {"domain": value} | ({"fold_in": "y"} if fold_in else {})
        response = post(manager, group, "/domains", data)
    return response.status_code, response.text


def api_add(api: Any, group: Any, value: str, fold_in: bool = False) -> tuple[int, Any]:
    response = api.post(
        f"/bill-groups/{group.external_id}/access-rules", {"value": value, "fold_in": fold_in}
    )
    return response.status_code, response.get_json()


def trail(db) -> list[tuple[str, str, str | None]]:
    db.expire_all()
    rows = db.scalars(
        select(AuditEvent)
        .where(AuditEvent.action.startswith("access_rule."))
        .order_by(AuditEvent.id)
    )
    return [(row.action, row.outcome, row.detail) for row in rows]


def values(db) -> list[str]:
    db.expire_all()
    return list(db.scalars(select(AccessRule.value).order_by(AccessRule.id)))


REFUSALS = [
    # (rule, setup, value, message, API status, API code)
    ("a list", [], "ap@acme.com, cfo@acme.com", ONE_AT_A_TIME, 422, "invalid"),
    ("duplicate", ["acme.com"], "ACME.com", "acme.com already has access.", 409, "duplicate_rule"),
    (
        "covered address",
        ["acme.com"],
        "ap@acme.com",
        "acme.com already has access, so ap@acme.com needs no rule of its own.",
        409,
        "duplicate_rule",
    ),
    (
        "overlapping domain",
        ["ap@acme.com", "cfo@acme.com"],
        "acme.com",
        "acme.com would make these address rules redundant: ap@acme.com, cfo@acme.com. "
        "Remove them first, or add the domain and fold them in.",
        409,
        "overlapping_rules",
    ),
    (
        "public provider",
        [],
        "gmail.com",
        "gmail.com is a public email provider: a rule for it would let anyone with an "
        "address there sign in. Add individual addresses at gmail.com instead, one at a time.",
        422,
        "invalid",
    ),
]


@pytest.mark.parametrize(
    ("setup", "value", "message", "status", "code"),
    [r[1:] for r in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
def test_a_refused_rule_is_refused_alike_by_every_face(
    app, db, group, manager, api, setup, value, message, status, code
):
    for existing in setup:
        assert api_add(api, group, existing)[0] == 201
    before = (values(db), counts(db))
    staff_status, page = staff_add(manager, group, value)
    assert staff_status == 400
    assert message.replace("'", "&#39;") in page
    assert (values(db), counts(db)) == before
    api_status, answer = api_add(api, group, value)
    assert (api_status, answer["error"]["message"], answer["error"]["code"]) == (
        status,
        message,
        code,
    )
    assert answer["error"]["field"] == "value"
    assert (values(db), counts(db)) == before


@pytest.mark.parametrize("face", ["staff", "api"])
def test_fold_in_folds_and_reports_the_same_through_each_face(db, group, manager, api, face):
    for existing in ("ap@acme.com", "cfo@acme.com", "ap@other.com"):
        assert api_add(api, group, existing)[0] == 201
    before = trail(db)
    if face == "staff":
        status, page = staff_add(manager, group, "acme.com", fold_in=True)
        assert status == 303
        shown = manager.get(f"/admin/bill-groups/{group.id}/access").text
        assert (
            "Added acme.com: everyone with an address there can now sign in. Removed the "
            "address rules it covers: ap@acme.com, cfo@acme.com."
        ) in shown
    else:
        status, body = api_add(api, group, "acme.com", fold_in=True)
        assert (status, body["value"]) == (201, "acme.com")
    assert values(db) == ["ap@other.com", "acme.com"]
    assert trail(db)[len(before) :] == [
        ("access_rule.add", "added", "acme.com"),
        ("access_rule.remove", "folded_in", "ap@acme.com"),
        ("access_rule.remove", "folded_in", "cfo@acme.com"),
    ]


@pytest.mark.parametrize("face", ["staff", "api"])
def test_removing_a_rule_is_audited_the_same_through_each_face(db, group, manager, api, face):
    assert api_add(api, group, "acme.com")[0] == 201
    rule_id = db.scalar(select(AccessRule.id))
    if face == "staff":
        response = post(manager, group, f"/rules/{rule_id}/delete")
        assert response.status_code == 303
    else:
        response = api.delete(f"/bill-groups/{group.external_id}/access-rules/{rule_id}")
        assert response.status_code == 204
    assert values(db) == []
    assert trail(db)[-1] == ("access_rule.remove", "removed", "acme.com")


def test_the_audit_names_each_actor_as_before(db, group, manager, api):
    assert staff_add(manager, group, "acme.com")[0] == 303
    assert api_add(api, group, "cfo@other.com")[0] == 201
    db.expire_all()
    rows = db.scalars(select(AuditEvent).where(AuditEvent.action == "access_rule.add"))
    actors = [(row.actor_type, row.actor) for row in rows]
    assert actors[0] == ("staff", "manager@staff.example.com")
    assert actors[1][0] == "api" and actors[1][1].startswith("key billing system (")
    created_by = list(db.scalars(select(AccessRule.created_by).order_by(AccessRule.id)))
    assert created_by == ["manager@staff.example.com", "api:billing system"]
