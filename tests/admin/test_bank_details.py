"""The staff form for a seller's bank details: who may use it, CSRF, what it stores and
how it refuses bad input (status 400, the message at the field, nothing saved)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from emails.outbox import unseal
from portal.models import AuditEvent, Entity, OutboxMessage, StaffRole
from tests.admin.conftest import make_staff, post_form
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


def notices(db) -> list[OutboxMessage]:
    return list(
        db.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.kind == "bank_details_changed")
            .order_by(OutboxMessage.to_address)
        )
    )


def test_admins_set_the_bank_details(db, staff_client, group):
    role = StaffRole.ADMIN
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


@pytest.mark.parametrize("role", [StaffRole.VIEWER, StaffRole.ACCOUNT_MANAGER])
def test_only_admins_may_open_or_post_the_form(db, staff_client, group, role):
    """Where customers send money is not an account manager's to change: one phished
    account manager session would otherwise redirect every open invoice's payment."""
    viewer = staff_client(role)
    assert viewer.get(page(group)).status_code == 403
    assert "Change the bank details" not in viewer.get(f"/admin/bill-groups/{group.id}").text
    token = csrf_token(viewer.get(f"/admin/bill-groups/{group.id}").text)
    response = viewer.post(page(group), data={"csrf_token": token, **GOOD})
    assert response.status_code == 403
    db.expire_all()
    assert db.get(Entity, group.entity_id).bank_iban is None and audits(db) == []
    assert notices(db) == []


def read(app, message: OutboxMessage) -> str:
    with app.app_context():  # the sealing key
        return unseal(message.text_body)


def test_every_active_admin_is_told_who_changed_them_and_the_accounts_last_four(
    app, db, staff_client, group
):
    other = make_staff(db, StaffRole.ADMIN, "other-admin@staff.example.com")
    gone = make_staff(db, StaffRole.ADMIN, "gone-admin@staff.example.com")
    gone.is_active = False
    make_staff(db, StaffRole.ACCOUNT_MANAGER, "manager@staff.example.com")
    db.commit()
    client = staff_client()
    assert post_form(client, page(group), **GOOD).status_code == 303
    first = notices(db)
    assert sorted(m.to_address for m in first) == sorted(["admin-3@staff.example.com", other.email])
    assert all(m.reply_to is None for m in first)  # staff mail, not the seller's
    text = read(app, first[0])
    assert "admin-3@staff.example.com changed the bank details" in text
    assert "Account before: none" in text and "Account now: ending 3000" in text
    assert "IBAN" in text

    moved = GOOD | {"iban": "GB82 WEST 1234 5698 7654 32", "bic": "NWBKGB2LXXX"}
    assert post_form(client, page(group), **moved).status_code == 303
    second = [m for m in notices(db) if m.id not in {n.id for n in first}]
    assert len(second) == 2
    text = read(app, second[0])
    assert "Account before: ending 3000" in text and "Account now: ending 5432" in text

    # Nothing changed: nothing to tell.
    assert post_form(client, page(group), **moved).status_code == 303
    assert len(notices(db)) == 4


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
