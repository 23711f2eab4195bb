"""The staff form for a seller's bank details: who may use it, CSRF, what it stores and
how it refuses bad input (status 400, the message at the field, nothing saved)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.models import AuditEvent, Entity, StaffRole
from tests.admin.conftest import post_form
from tests.conftest import csrf_token
from tests.factories import make_bill_group
from tests.portal.pages_helpers import field_errors

GOOD = {
    "account_holder": "Harbour Analytics GmbH",
    "bank_name": "Commerzbank",
    "iban": "DE89 3704 0044 0532 0130 00",
    "bic": "COBADEFFXXX",
    "account_number": "",
    "routing_number": "",
    "reference_format": "group_and_invoice",
}


@pytest.fixture
def group(db):
    group = make_bill_group(db)
    db.commit()
    return group


def page(group) -> str:
    return f"/admin/bill-groups/{group.id}/bank-details"


def audits(db) -> list[AuditEvent]:
    return list(db.scalars(select(AuditEvent).where(AuditEvent.action == "entity.bank_details")))


@pytest.mark.parametrize("role", [StaffRole.ADMIN, StaffRole.ACCOUNT_MANAGER])
def test_staff_who_manage_accounts_set_the_bank_details(db, staff_client, group, role):
    client = staff_client(role)
    form = client.get(page(group))
    assert form.status_code == 200 and 'name="iban"' in form.text
    assert "Change the bank details" in client.get(f"/admin/bill-groups/{group.id}").text
    response = post_form(client, page(group), **GOOD)
    assert response.status_code == 303, response.text
    db.expire_all()
    entity = db.get(Entity, group.entity_id)
    assert (entity.bank_iban, entity.bank_bic, entity.bank_reference_format) == (
        "DE89370400440532013000",
        "COBADEFFXXX",
        "group_and_invoice",
    )
    (row,) = audits(db)
    assert row.actor.startswith(role.value) and "bank_iban" in row.detail
    # The form shows the IBAN in groups of four, as staff typed it.
    assert 'value="DE89 3704 0044 0532 0130 00"' in client.get(page(group)).text
    assert (
        "Bank transfer: to Harbour Analytics GmbH"
        in client.get(f"/admin/bill-groups/{group.id}").text
    )


def test_a_viewer_may_not_open_or_post_the_form(db, staff_client, group):
    viewer = staff_client(StaffRole.VIEWER)
    assert viewer.get(page(group)).status_code == 403
    assert "Change the bank details" not in viewer.get(f"/admin/bill-groups/{group.id}").text
    token = csrf_token(viewer.get(f"/admin/bill-groups/{group.id}").text)
    response = viewer.post(page(group), data={"csrf_token": token, **GOOD})
    assert response.status_code == 403
    db.expire_all()
    assert db.get(Entity, group.entity_id).bank_iban is None and audits(db) == []


def test_a_post_without_its_csrf_token_is_refused(db, staff_client, group):
    admin = staff_client()
    for data in (GOOD, GOOD | {"csrf_token": "forged"}):
        response = admin.post(page(group), data=data)
        assert response.status_code == 400
        assert "This form has expired" in response.text
    db.expire_all()
    assert db.get(Entity, group.entity_id).bank_iban is None and audits(db) == []


def test_signed_out_the_form_is_not_there(client, group):
    response = client.get(page(group))
    assert response.status_code in (302, 303) and "/admin/sign-in" in response.location


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"iban": "DE89 3704 0044 0532 0130 01"}, "iban", "check digits do not match"),
        ({"bic": "BNPAFRPPXXX"}, "bic", "bank in FR"),
        ({"account_holder": "Harbour\x07GmbH"}, "account_holder", "not allowed"),
        ({"iban": "DE89" * 50_000}, "iban", "at most"),
        ({"account_number": "12345678"}, "account_number", "not both"),
        ({"reference_format": "other"}, "reference_format", "Choose how"),
    ],
)
def test_bad_details_are_refused_at_their_field(db, staff_client, group, overrides, field, message):
    client = staff_client()
    response = post_form(client, page(group), **(GOOD | overrides))
    assert response.status_code == 400
    assert any(message in error for error in field_errors(response.text, field)), response.text
    assert "Traceback" not in response.text
    db.expire_all()
    assert db.get(Entity, group.entity_id).bank_iban is None and audits(db) == []


def test_an_unknown_bill_group_is_404(staff_client):
    assert staff_client().get("/admin/bill-groups/999999/bank-details").status_code == 404
