"""Inputs that used to answer 500, and their neighbours: each is a 400, 404 or 422 in
the documented error shape ({"error": {"code", "message", "field"}}), with nothing
written. The `api` client checks every answer against the OpenAPI document too."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from portal.models import AccessRule, AuditEvent
from tests.api.conftest import Api, push_bill_group

# Integers as people and programs mistype them, percent-encoded for a path or query.
ODD_INTEGERS = {
    "2**63": str(2**63),
    "-1": "-1",
    "arabic-indic": "%D9%A1%D9%A2",  # "١٢": str.isdigit() and int() take it as 12
    "superscript": "%C2%B2",  # "²": str.isdigit() is true, int() refuses it
    "plus": "%2B5",
    "space": "%205",
    "decimal": "5.0",
    "1e309": "1e309",
    "5000-digits": "9" * 5000,  # int() refuses more than 4,300 digits
}


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "field"} <= set(body["error"]), body
    assert "Traceback" not in body["error"]["message"]
    return dict(body["error"])


def raw_put(api: Api, url: str, text: str | bytes) -> Any:
    return api.request("PUT", url, data=text, content_type="application/json")


def written(db: Any) -> int:
    return db.scalar(select(func.count()).select_from(AuditEvent)) or 0


# --- ids in paths -------------------------------------------------------------------------


@pytest.fixture
def rule_id(db: Any, api: Api) -> int:
    push_bill_group(api)
    created = api.post("/bill-groups/bg-1/access-rules", {"value": "acme.com"})
    assert created.status_code == 201, created.get_json()
    return int(created.get_json()["id"])


def test_deleting_an_access_rule_beyond_bigint_is_a_404(db, api, rule_id):
    response = api.delete("/bill-groups/bg-1/access-rules/9223372036854775808")
    assert error_of(response, 404)["code"] == "not_found"
    assert db.scalar(select(func.count()).select_from(AccessRule)) == 1


@pytest.mark.parametrize("spelling", [*ODD_INTEGERS.values(), "0", "%EF%BC%91"])
def test_every_odd_spelling_of_a_rule_id_is_a_404(db, api, rule_id, spelling):
    response = api.delete(f"/bill-groups/bg-1/access-rules/{spelling}")
    assert error_of(response, 404)["code"] == "not_found"
    assert db.scalar(select(func.count()).select_from(AccessRule)) == 1


def test_a_rule_id_in_other_digits_is_not_a_second_name_for_the_rule(db, api, rule_id):
    """Werkzeug's <int:> took any Unicode digit: DELETE .../١ deleted rule 1."""
    other_digits = "".join(chr(0x0660 + int(d)) for d in str(rule_id))  # Arabic-Indic
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in str(rule_id))
    for spelling in (other_digits, fullwidth):
        assert api.delete(f"/bill-groups/bg-1/access-rules/{spelling}").status_code == 404
    assert db.scalar(select(func.count()).select_from(AccessRule)) == 1
    assert api.delete(f"/bill-groups/bg-1/access-rules/{rule_id}").status_code == 204
