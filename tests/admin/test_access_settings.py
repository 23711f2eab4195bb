"""The bill group's portal access settings: rules, the checker, customer sessions."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from portal.access import ONE_AT_A_TIME, add_rule
from portal.models import AccessRule, AuditEvent, CustomerSession, StaffRole
from tests.admin.conftest import make_staff, post_form, staff_sign_in
from tests.conftest import sign_in
from tests.factories import TODAY, make_bill_group
from tests.settings import change_settings

MANAGER = "manager@staff.example.com"
VIEWER = "viewer@staff.example.com"


@pytest.fixture
def group(db):
    group = make_bill_group(db)
    db.commit()
    return group


def _client(app, db, role: StaffRole, email: str):
    make_staff(db, role, email)
    client = app.test_client()
    assert staff_sign_in(client, email).status_code == 303
    return client


@pytest.fixture
def manager(app, db):
    return _client(app, db, StaffRole.ACCOUNT_MANAGER, MANAGER)


@pytest.fixture
def viewer(app, db):
    return _client(app, db, StaffRole.VIEWER, VIEWER)


def page_url(group) -> str:
    return f"/admin/bill-groups/{group.id}/access"


def post(client, group, path: str, data: dict | None = None):
    """POST one of the page's forms, with the CSRF token from the page."""
    return post_form(client, page_url(group), page_url(group) + path, **(data or {}))


def rules(db, group) -> list[tuple[str, str, bool]]:
    db.expire_all()
    rows = db.scalars(
        select(AccessRule).where(AccessRule.bill_group_id == group.id).order_by(AccessRule.id)
    )
    return [(r.kind.value, r.value, r.include_subdomains) for r in rows]


def audit_rows(db, action_prefix: str = "") -> list[AuditEvent]:
    db.expire_all()
    return list(
        db.scalars(
            select(AuditEvent)
            .where(AuditEvent.action.startswith(action_prefix))
            .order_by(AuditEvent.id)
        )
    )


def counts(db) -> tuple[int, int, int]:
    """Everything a change could write: rules, audit rows, ended sessions."""
    db.expire_all()
    return (
        db.scalar(select(func.count()).select_from(AccessRule)),
        db.scalar(select(func.count()).select_from(AuditEvent)),
        db.scalar(
            select(func.count())
            .select_from(CustomerSession)
            .where(CustomerSession.revoked_at.is_not(None))
        ),
    )


def signed_out(client, group) -> bool:
    response = client.get(f"/p/{group.public_id}/overview")
    return response.status_code == 302 and (
        f"/p/{group.public_id}?next=" in response.headers["Location"]
    )


# --- adding rules -------------------------------------------------------------------


def test_add_a_domain(manager, db, group):
    response = post(manager, group, "/domains", {"domain": "Acme.COM"})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"{page_url(group)}#domains")
    assert rules(db, group) == [("domain", "acme.com", False)]
    rule = db.scalar(select(AccessRule))
    assert rule.created_by == MANAGER

    page = manager.get(page_url(group)).text
    assert "Added acme.com" in page
    assert MANAGER in page  # who added it
    added = rule.created_at
    stamp = added.isoformat(timespec="seconds")
    assert f'<time datetime="{stamp}">{added.day} {added:%b %Y, %H:%M} UTC' in page

    [event] = audit_rows(db, "access_rule.")
    assert (event.action, event.outcome) == ("access_rule.add", "added")
    assert (event.actor_type, event.actor) == ("staff", MANAGER)
    assert (event.bill_group_id, event.detail) == (group.id, "acme.com")


def test_add_an_address(manager, db, group):
    response = post(manager, group, "/emails", {"email": " CFO@Acme-Holdings.com "})
    assert response.status_code == 303
    assert response.headers["Location"].endswith("#emails")
    assert rules(db, group) == [("email", "cfo@acme-holdings.com", False)]
    assert "Added cfo@acme-holdings.com" in manager.get(page_url(group)).text
    [event] = audit_rows(db, "access_rule.")
    assert (event.action, event.actor_type, event.actor, event.detail) == (
        "access_rule.add",
        "staff",
        MANAGER,
        "cfo@acme-holdings.com",
    )


def test_an_address_its_domain_covers_is_refused_in_plain_words(manager, db, group):
    assert post(manager, group, "/domains", {"domain": "acme.com"}).status_code == 303
    before = counts(db)
    response = post(manager, group, "/emails", {"email": "ap@acme.com"})
    assert response.status_code == 400
    assert "acme.com already has access, so ap@acme.com needs no rule of its own." in response.text
    assert 'id="email-error"' in response.text  # next to the field
    assert counts(db) == before


@pytest.mark.parametrize("path, field", [("/emails", "email"), ("/domains", "domain")])
def test_a_list_gets_the_one_at_a_time_message(manager, db, group, path, field):
    response = post(manager, group, path, {field: "ap@acme.com, cfo@acme.com"})
    assert response.status_code == 400
    assert ONE_AT_A_TIME in response.text
    assert rules(db, group) == []


def test_a_public_mail_provider_is_refused(app, manager, db, group):
    response = post(manager, group, "/domains", {"domain": "gmail.com"})
    assert response.status_code == 400
    assert "gmail.com is a public email provider" in response.text

    change_settings(app, PUBLIC_MAIL_PROVIDERS_EXTRA=("staffmail-example.com",))
    response = post(manager, group, "/domains", {"domain": "staffmail-example.com"})
    assert response.status_code == 400
    assert "staffmail-example.com is a public email provider" in response.text
    assert rules(db, group) == []


@pytest.mark.parametrize("domain", ["mailinator.com", "yopmail.com", "temp-mail.org"])
def test_a_disposable_inbox_is_refused_and_one_address_there_is_not(manager, db, group, domain):
    response = post(manager, group, "/domains", {"domain": domain})
    assert response.status_code == 400
    assert f"{domain} is a disposable email service" in response.text
    assert f"Add individual addresses at {domain} instead" in response.text
    assert rules(db, group) == []
    response = post(manager, group, "/emails", {"email": f"jo@{domain}"})
    assert response.status_code == 303
    assert rules(db, group) == [("email", f"jo@{domain}", False)]


def test_an_address_in_the_domain_form_and_a_domain_in_the_address_form(manager, db, group):
    response = post(manager, group, "/domains", {"domain": "ap@acme.com"})
    assert response.status_code == 400
    assert "ap@acme.com is an email address. Add it under Individual email addresses" in (
        response.text
    )
    assert "enter just the domain, acme.com." in response.text

    response = post(manager, group, "/emails", {"email": "acme.com"})
    assert response.status_code == 400
    assert "acme.com is a domain, not an email address." in response.text
    assert rules(db, group) == []


def test_empty_fields_say_what_to_enter(manager, group):
    response = post(manager, group, "/domains", {"domain": "  "})
    assert response.status_code == 400
    assert "Enter a domain like company.com." in response.text
    response = post(manager, group, "/emails", {})
    assert "Enter an email address like name@company.com." in response.text


def test_a_domain_that_covers_addresses_offers_to_fold_them_in(manager, db, group):
    for address in ("ap@acme.com", "cfo@acme.com", "cfo@acme-holdings.com"):
        assert post(manager, group, "/emails", {"email": address}).status_code == 303
    before = counts(db)

    response = post(manager, group, "/domains", {"domain": "acme.com"})
    assert response.status_code == 400
    assert "acme.com would make these address rules redundant: ap@acme.com, cfo@acme.com." in (
        response.text
    )
    assert 'name="fold_in" value="1"' in response.text
    assert "Add the domain and remove those addresses" in response.text
    assert counts(db) == before

    response = post(manager, group, "/domains", {"domain": "acme.com", "fold_in": "1"})
    assert response.status_code == 303
    assert rules(db, group) == [
        ("email", "cfo@acme-holdings.com", False),
        ("domain", "acme.com", False),
    ]
    page = manager.get(page_url(group)).text
    assert "Removed the address rules it covers: ap@acme.com, cfo@acme.com." in page
    events = audit_rows(db, "access_rule.")[3:]
    assert [(e.action, e.outcome, e.detail) for e in events] == [
        ("access_rule.add", "added", "acme.com"),
        ("access_rule.remove", "folded_in", "ap@acme.com"),
        ("access_rule.remove", "folded_in", "cfo@acme.com"),
    ]
    assert {(e.actor_type, e.actor, e.bill_group_id) for e in events} == {
        ("staff", MANAGER, group.id)
    }


def test_a_domain_with_its_subdomains_says_so(manager, db, group):
    data = {"domain": "acme.com", "include_subdomains": "y"}
    assert post(manager, group, "/domains", data).status_code == 303
    assert rules(db, group) == [("domain", "acme.com", True)]
    assert "acme.com and its subdomains" in manager.get(page_url(group)).text
    [event] = audit_rows(db, "access_rule.")
    assert event.detail == "acme.com and its subdomains"


def test_an_internationalised_domain_is_shown_in_its_own_script(manager, db, group):
    assert post(manager, group, "/domains", {"domain": "BÜCHER.example.de"}).status_code == 303
    assert rules(db, group) == [("domain", "xn--bcher-kva.example.de", False)]
    assert "bücher.example.de" in manager.get(page_url(group)).text


# --- removing rules -----------------------------------------------------------------


def test_remove_a_rule(manager, db, group):
    rule = add_rule(db, group, "acme.com", created_by="someone@staff.example.com")
    db.commit()
    response = post(manager, group, f"/rules/{rule.id}/delete")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("#domains")
    assert rules(db, group) == []
    assert "Removed acme.com." in manager.get(page_url(group)).text
    [event] = audit_rows(db, "access_rule.")
    assert (event.action, event.outcome, event.actor_type, event.actor, event.detail) == (
        "access_rule.remove",
        "removed",
        "staff",
        MANAGER,
        "acme.com",
    )


def test_another_bill_groups_rule_is_not_found(manager, db, group):
    other = make_bill_group(db)
    rule = add_rule(db, other, "acme.com", created_by="test")
    db.commit()
    before = counts(db)
    assert post(manager, group, f"/rules/{rule.id}/delete").status_code == 404
    assert post(manager, group, "/rules/999999/delete").status_code == 404
    assert rules(db, other) == [("domain", "acme.com", False)]
    assert counts(db) == before


def test_an_unknown_bill_group_is_not_found(manager):
    assert manager.get("/admin/bill-groups/999999/access").status_code == 404


def test_removing_the_rule_signs_the_customer_out_at_their_next_request(
    app, manager, db, group, smtp
):
    rule = add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    customer = app.test_client()
    sign_in(customer, app, smtp, group.public_id, "ap@acme.com")
    assert customer.get(f"/p/{group.public_id}/overview").status_code == 200

    assert post(manager, group, f"/rules/{rule.id}/delete").status_code == 303
    assert signed_out(customer, group)


# --- the access checker -------------------------------------------------------------


def check(client, group, address: str):
    return client.get(page_url(group), query_string={"address": address})


def test_the_checker_names_the_admitting_rule(manager, db, group):
    add_rule(db, group, "acme.com", created_by="someone@staff.example.com")
    db.commit()
    before = counts(db)
    response = check(manager, group, "  AP@Acme.COM ")
    assert response.status_code == 200
    assert "Checked as <code>ap@acme.com</code>" in response.text
    assert "Yes: ap@acme.com would get in today." in response.text
    assert "The rule that lets it in: acme.com (domain), added by someone@staff.example.com" in (
        response.text
    )
    assert counts(db) == before  # computed, nothing written


def test_the_checker_explains_an_invalid_address(manager, db, group):
    before = counts(db)
    response = check(manager, group, "ap@@acme.com")
    assert response.status_code == 200
    assert "Enter an email address like name@company.com, with one @ sign." in response.text
    assert 'id="address-error"' in response.text
    assert "would get in" not in response.text
    assert counts(db) == before


def test_the_checker_says_when_no_rule_matches(manager, db, group):
    add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    for address in ("ap@sub.acme.com", "ap@evilacme.com", "ap@acme.com.evil.net"):
        response = check(manager, group, address)
        assert f"No: {address} would not get in today." in response.text
        assert "No rule matches this address." in response.text


def test_the_checker_says_when_the_portal_is_off_or_the_contract_is_over(manager, db, group):
    add_rule(db, group, "acme.com", created_by="test")
    group.portal_enabled = False
    db.commit()
    response = check(manager, group, "ap@acme.com")
    assert "No: ap@acme.com would not get in today." in response.text
    assert "The portal is turned off for this bill group." in response.text
    assert "No rule matches" not in response.text
    assert "acme.com would let it in" in response.text

    group.portal_enabled = True
    group.contract_end = TODAY - dt.timedelta(days=1)
    db.commit()
    response = check(manager, group, "ap@acme.com")
    assert "The contract is not active today." in response.text
    assert "The portal is turned off" not in response.text


# --- customer sessions --------------------------------------------------------------


def test_the_active_sessions_are_listed_and_one_can_be_signed_out(app, manager, db, group, smtp):
    add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    ap, cfo = app.test_client(), app.test_client()
    sign_in(ap, app, smtp, group.public_id, "ap@acme.com")
    sign_in(cfo, app, smtp, group.public_id, "cfo@acme.com")

    page = manager.get(page_url(group)).text
    assert "ap@acme.com" in page and "cfo@acme.com" in page
    assert "Sign out everyone" in page

    row = db.scalar(select(CustomerSession).where(CustomerSession.email == "ap@acme.com"))
    response = post(manager, group, f"/sessions/{row.id}/revoke")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("#sessions")
    db.refresh(row)
    assert row.revoked_reason == "revoked_by_staff"
    assert signed_out(ap, group)
    assert cfo.get(f"/p/{group.public_id}/overview").status_code == 200

    page = manager.get(page_url(group)).text
    assert "Signed out ap@acme.com." in page
    assert "ap@acme.com</th>" not in page  # no longer listed
    staff_event = audit_rows(db, "session.revoke")[-1]
    assert (staff_event.actor_type, staff_event.actor, staff_event.detail) == (
        "staff",
        MANAGER,
        "ap@acme.com",
    )
    assert staff_event.bill_group_id == group.id
    ended = [e for e in audit_rows(db, "session.end") if e.outcome == "revoked_by_staff"]
    assert [e.actor for e in ended] == ["ap@acme.com"]


def test_sign_out_everyone(app, manager, db, group, smtp):
    add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    customers = [app.test_client(), app.test_client()]
    for client, address in zip(customers, ("ap@acme.com", "cfo@acme.com"), strict=True):
        sign_in(client, app, smtp, group.public_id, address)

    response = post(manager, group, "/sessions/revoke-all")
    assert response.status_code == 303
    assert all(signed_out(client, group) for client in customers)
    page = manager.get(page_url(group)).text
    assert "Signed out everyone" in page
    assert "No customers are signed in to this bill group." in page
    [event] = audit_rows(db, "session.revoke_all")
    assert (event.actor_type, event.actor, event.bill_group_id) == ("staff", MANAGER, group.id)
    assert event.detail == "2 sessions ended"


def test_another_bill_groups_session_is_not_found(app, manager, db, group, smtp):
    other = make_bill_group(db)
    add_rule(db, other, "acme.com", created_by="test")
    db.commit()
    customer = app.test_client()
    sign_in(customer, app, smtp, other.public_id, "ap@acme.com")
    row = db.scalar(select(CustomerSession))
    before = counts(db)
    assert post(manager, group, f"/sessions/{row.id}/revoke").status_code == 404
    assert counts(db) == before
    assert customer.get(f"/p/{other.public_id}/overview").status_code == 200


# --- who may do what ----------------------------------------------------------------


def _signed_in_customer(app, db, group, smtp) -> tuple[object, list[str]]:
    """A customer signed in through a domain rule, and every POST path of the page."""
    rule = add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    customer = app.test_client()
    sign_in(customer, app, smtp, group.public_id, "ap@acme.com")
    row = db.scalar(select(CustomerSession))
    return customer, [
        "/domains",
        "/emails",
        f"/rules/{rule.id}/delete",
        f"/sessions/{row.id}/revoke",
        "/sessions/revoke-all",
    ]


def test_a_viewer_sees_the_lists_but_cannot_change_anything(app, viewer, db, group, smtp):
    customer, paths = _signed_in_customer(app, db, group, smtp)
    add_rule(db, group, "cfo@acme-holdings.com", created_by="test")
    db.commit()

    page = viewer.get(page_url(group))
    assert page.status_code == 200
    for text in ("acme.com", "cfo@acme-holdings.com", "ap@acme.com", "Would this address get in?"):
        assert text in page.text
    assert f'action="{page_url(group)}/' not in page.text  # no change forms at all
    assert "Remove" not in page.text and "Sign out everyone" not in page.text
    assert "Yes: ap@acme.com would get in today." in check(viewer, group, "ap@acme.com").text

    before = counts(db)
    data = {"domain": "example.com", "email": "x@example.com"}
    for path in paths:
        assert post(viewer, group, path, data).status_code == 403, path
    assert counts(db) == before
    assert customer.get(f"/p/{group.public_id}/overview").status_code == 200


def test_posts_without_a_csrf_token_are_refused_and_change_nothing(app, manager, db, group, smtp):
    customer, paths = _signed_in_customer(app, db, group, smtp)
    before = counts(db)
    data = {"domain": "example.com", "email": "x@example.com", "fold_in": "1"}
    for path in paths:
        response = manager.post(page_url(group) + path, data=data)
        assert response.status_code == 400, path
    assert counts(db) == before
    assert rules(db, group) == [("domain", "acme.com", False)]
    assert customer.get(f"/p/{group.public_id}/overview").status_code == 200


def test_staff_must_be_signed_in(app, group):
    response = app.test_client().get(page_url(group))
    assert response.status_code == 302
    assert "/admin/sign-in" in response.headers["Location"]


def test_the_checker_lists_the_sellers_other_bill_groups_the_address_reaches(manager, db, group):
    add_rule(db, group, "acme.com", created_by="test")
    usd = make_bill_group(db, entity=group.entity, name="Same seller USD", currency="USD")
    add_rule(db, usd, "ap@acme.com", created_by="test")
    off = make_bill_group(
        db, entity=group.entity, name="Same seller GBP", currency="GBP", portal_enabled=False
    )
    add_rule(db, off, "acme.com", created_by="test")
    deep = make_bill_group(db, entity=group.entity, name="Same seller CHF", currency="CHF")
    add_rule(db, deep, "acme.com", include_subdomains=True, created_by="test")
    other = make_bill_group(db, name="Another seller", currency="EUR")
    add_rule(db, other, "acme.com", created_by="test")
    nobody = make_bill_group(db, entity=group.entity, name="Same seller JPY", currency="JPY")
    add_rule(db, nobody, "other.com", created_by="test")
    db.commit()
    before = counts(db)

    text = check(manager, group, "ap@acme.com").text

    assert f"Other bill groups of {group.entity.name} whose rules admit ap@acme.com:" in text
    for shown in (usd, off, deep):
        assert f"/admin/bill-groups/{shown.id}/access?address=ap@acme.com#checker" in text
    assert "Same seller GBP (GBP)</a>: customers cannot sign in there today" in text
    assert "Another seller" not in text and "Same seller JPY" not in text
    # A subdomain's address reaches only the group whose rule includes subdomains.
    text = check(manager, group, "ap@eu.acme.com").text
    assert "Same seller CHF (CHF)" in text and "Same seller USD" not in text
    assert counts(db) == before
