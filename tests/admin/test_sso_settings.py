"""The staff page for a domain rule's company sign-in: admins only, CSRF, the issuer
checked by fetching its discovery document, the client secret sealed and never shown."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.access import add_rule
from portal.actions import Actor, Invalid
from portal.actions import sso as sso_actions
from portal.models import AuditEvent, SsoMode, SsoProvider, StaffRole
from tests.admin.conftest import post_form
from tests.conftest import free_port
from tests.factories import make_bill_group

SECRET = "very-secret-client-secret"


@pytest.fixture
def rule(db):
    group = make_bill_group(db)
    rule = add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    return rule


def page_of(rule) -> str:
    return f"/admin/bill-groups/{rule.bill_group_id}/access/rules/{rule.id}/sso"


def form(issuer: str, secret: str = SECRET, mode: str = "offered") -> dict[str, str]:
    return {
        "company_name": "Acme",
        "issuer": issuer,
        "client_id": "portal",
        "client_secret": secret,
        "mode": mode,
    }


def test_an_admin_sets_it_up_and_the_secret_is_never_shown(db, staff_client, rule, oidc_mock):
    admin = staff_client(StaffRole.ADMIN)
    saved = post_form(admin, page_of(rule), **form(oidc_mock.url))
    assert saved.status_code == 303, saved.text
    provider = db.scalars(select(SsoProvider)).one()
    assert (provider.issuer, provider.mode) == (oidc_mock.url, SsoMode.OFFERED)
    page = admin.get(page_of(rule))
    assert SECRET not in page.text and provider.client_secret_sealed not in page.text
    assert "https://portal.example.test/sso/callback" in page.text
    access = admin.get(f"/admin/bill-groups/{rule.bill_group_id}/access")
    assert "Acme sign-in, offered" in access.text
    # Changing the mode with the secret left empty keeps the stored one.
    sealed = provider.client_secret_sealed
    assert post_form(admin, page_of(rule), **form(oidc_mock.url, "", "required")).status_code == 303
    db.expire_all()
    provider = db.scalars(select(SsoProvider)).one()
    assert provider.mode is SsoMode.REQUIRED and provider.client_secret_sealed == sealed
    details = [
        e.detail
        for e in db.scalars(select(AuditEvent).where(AuditEvent.action == "access_rule.sso"))
    ]
    assert len(details) == 2 and all(SECRET not in d for d in details)
    # Removing it.
    removed = post_form(admin, page_of(rule), page_of(rule) + "/delete")
    assert removed.status_code == 303
    assert db.scalars(select(SsoProvider)).all() == []


@pytest.mark.parametrize("role", [StaffRole.ACCOUNT_MANAGER, StaffRole.VIEWER])
def test_only_admins(db, staff_client, rule, oidc_mock, role):
    client = staff_client(role)
    assert client.get(page_of(rule)).status_code == 403
    # A forged POST with this staff member's own valid CSRF token.
    access = f"/admin/bill-groups/{rule.bill_group_id}/access"
    forged = post_form(client, access, page_of(rule), **form(oidc_mock.url))
    assert forged.status_code == 403
    assert db.scalars(select(SsoProvider)).all() == []


def test_a_post_without_csrf_is_refused(db, staff_client, rule, oidc_mock):
    admin = staff_client(StaffRole.ADMIN)
    assert admin.post(page_of(rule), data=form(oidc_mock.url)).status_code == 400
    assert db.scalars(select(SsoProvider)).all() == []


def test_a_provider_that_does_not_answer_is_refused_with_a_clear_message(db, staff_client, rule):
    admin = staff_client(StaffRole.ADMIN)
    dead = f"http://127.0.0.1:{free_port()}"
    refused = post_form(admin, page_of(rule), **form(dead))
    assert refused.status_code == 400
    assert "Could not read the provider&#39;s settings" in refused.text
    assert db.scalars(select(SsoProvider)).all() == []


def test_an_address_rule_has_no_company_sign_in(db, staff_client):
    group = make_bill_group(db)
    rule = add_rule(db, group, "cfo@acme-holdings.com", created_by="test")
    db.commit()
    assert staff_client(StaffRole.ADMIN).get(page_of(rule)).status_code == 404


@pytest.mark.parametrize(
    ("issuer", "field"),
    [
        ("http://login.acme.com", "issuer"),  # http outside local development
        ("login.acme.com", "issuer"),
        ("https://login.acme.com/?a=b", "issuer"),
        ("javascript:alert(1)", "issuer"),
    ],
)
def test_the_issuer_must_be_https_outside_local_development(app, db, rule, issuer, field):
    with app.test_request_context(), pytest.raises(Invalid) as refused:
        sso_actions.set_sso(
            db,
            Actor.staff("a@b.test"),
            rule.bill_group,
            rule.id,
            sso_actions.SsoSettings("Acme", issuer, "portal", SECRET, SsoMode.OFFERED),
            allow_http=False,
        )
    assert refused.value.field == field


def test_a_new_provider_needs_a_secret(app, db, rule, oidc_mock):
    with app.test_request_context(), pytest.raises(Invalid) as refused:
        sso_actions.set_sso(
            db,
            Actor.staff("a@b.test"),
            rule.bill_group,
            rule.id,
            sso_actions.SsoSettings("Acme", oidc_mock.url, "portal", "", SsoMode.OFFERED),
            allow_http=True,
        )
    assert refused.value.field == "client_secret"
