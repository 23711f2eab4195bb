"""Every /admin route, with every role, a customer and no session: the allow/deny matrix.

A new route without a permission check fails here, and so does a route whose URL
parameters this file cannot fill in: add a value to `route_values`.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from admin.guard import PUBLIC
from portal import apikeys, webhooks
from portal.access import add_rule
from portal.models import PERMISSIONS, StaffRole, StaffSession, WebhookDelivery
from tests.admin.conftest import make_staff, staff_sign_in
from tests.conftest import sign_in
from tests.factories import make_bill_group, make_invoice
from tests.settings import change_settings

PRINCIPALS = ["anonymous", "customer", *[role.value for role in StaffRole]]


def admin_rules(app):
    return [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/admin")]


def route_values(app, db):
    """Real objects for every URL parameter an /admin route may take."""
    group = make_bill_group(db)
    rule = add_rule(db, group, "acme.com", created_by="test")
    invoice = make_invoice(db, group)
    with app.app_context():  # the clock, URL checks and sealing read the app's config
        _key, key = apikeys.create(db, "Matrix", {"read"}, created_by="test")
        _secret, endpoint = webhooks.create_endpoint(
            db, "https://hooks.example.com/portal", set(webhooks.EVENT_TYPES), "test"
        )
        event = webhooks.emit(db, "contact.updated", group, {}, actor={"type": "staff"})
    db.commit()
    delivery = db.scalar(select(WebhookDelivery).where(WebhookDelivery.event_id == event.id))
    return group, {
        "account_id": group.account_id,
        "bill_group_id": group.id,
        "rule_id": rule.id,
        "public_id": group.public_id,
        "invoice_id": invoice.id,
        "session_id": 1,
        "staff_id": 1,
        "kind": "billing",
        "method_id": 1,
        "filename": "portal.css",
        "key_id": key.id,
        "endpoint_id": endpoint.id,
        "delivery_id": delivery.id,
        # The paying pages of the preview: none of these exists, and a 404 is allowed.
        "key": "no-such-key",
        "attempt_id": 1,
        "payment_id": 1,
        # The remove button of an allowed return origin: none exists, a 404 is allowed.
        "origin_id": 1,
        # Subscription pages: none of these exists, and a 404 is allowed.
        "subscription_id": 1,
        "request_id": 1,
        # A stopped reminder to turn back on (preview: refused whatever it is).
        "unsubscription_id": 1,
        # An invoice-copy recipient's remove button (preview: refused like every POST).
        "recipient_id": 1,
        # Disputes and their files: none exists, and a 404 is allowed.
        "dispute_id": 1,
        "attachment_id": 1,
    }


def test_every_admin_route_declares_a_permission(app):
    rules = admin_rules(app)
    assert len(rules) >= 5
    missing = [
        rule.rule
        for rule in rules
        if getattr(app.view_functions[rule.endpoint], "staff_permission", None) is None
    ]
    assert missing == [], f"/admin routes without staff_required or public: {missing}"


def test_the_allow_deny_matrix(app, db, smtp):
    group, values = route_values(app, db)
    clients = {"anonymous": app.test_client()}
    customer = app.test_client()
    sign_in(customer, app, smtp, group.public_id, "ap@acme.com")
    clients["customer"] = customer
    for role in StaffRole:
        user = make_staff(db, role)
        client = app.test_client()
        assert staff_sign_in(client, user.email).status_code == 303
        clients[role.value] = client
    app.config["WTF_CSRF_ENABLED"] = False  # authorisation, not CSRF, is on trial here

    failures = []
    # Signing out last, or it would end the sessions the other checks use.
    for rule in sorted(admin_rules(app), key=lambda r: r.endpoint == "admin.sign_out"):
        view = app.view_functions[rule.endpoint]
        unknown = set(rule.arguments) - set(values)
        assert not unknown, f"{rule.rule}: add values for {unknown} to route_values"
        url = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: str(values[m.group(1)]), rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for who in PRINCIPALS:
                status, location = _call(clients[who], method, url)
                expected = _expected(view, method, who)
                ok = {
                    "allowed": status not in (401, 403)
                    and "/admin/sign-in" not in location
                    and status < 500,
                    "forbidden": status == 403,
                    "sign-in": status in (302, 303) and "/admin/sign-in" in location,
                    "public": status < 500,
                }[expected]
                if not ok:
                    failures.append(
                        f"{method} {rule.rule} as {who}: {status} {location!r}, expected {expected}"
                    )
    assert failures == [], "\n".join(failures)


def _call(client, method, url):
    response = client.open(url, method=method, data={})
    return response.status_code, response.headers.get("Location", "")


def _expected(view, method: str, who: str) -> str:
    permission = view.staff_permission
    # The preview is read-only for everyone, signed in or not: a POST there is a 403
    # before anything else is looked at.
    if getattr(view, "preview_read_only", False) and method != "GET":
        return "forbidden"
    if permission == PUBLIC:
        return "public"
    if who in ("anonymous", "customer"):
        return "sign-in"
    return "allowed" if permission in PERMISSIONS[StaffRole(who)] else "forbidden"


@pytest.mark.parametrize("role", list(StaffRole))
def test_a_staff_session_is_not_a_customer_session(app, db, smtp, role):
    group = make_bill_group(db)
    add_rule(db, group, "staff.example.com", created_by="test")
    db.commit()
    user = make_staff(db, role)
    client = app.test_client()
    staff_sign_in(client, user.email)
    response = client.get(f"/p/{group.public_id}/overview")
    assert response.status_code == 302
    assert f"/p/{group.public_id}?next=" in response.headers["Location"]


@pytest.mark.parametrize("second_factor", [True, False])
def test_a_pending_sign_in_reaches_only_its_second_step(app, db, smtp, second_factor):
    """Password only, second step not done: every /admin route answers as to a
    stranger, but the one second step (the code page, or enrolment for a user whose
    second factor an admin reset), the sign-in page and sign-out."""
    _group, values = route_values(app, db)
    user = make_staff(db, StaffRole.ADMIN, "pending@staff.example.com")
    if second_factor:
        from portal import crypto, staffauth

        with app.app_context():
            user.totp_secret = crypto.seal(staffauth.TOTP_PURPOSE, staffauth.new_totp_secret())
        user.totp_enabled_at = user.created_at
    else:
        user.must_enrol = True
    db.commit()
    change_settings(app, SECRET_ENDPOINT_LIMIT="10000 per minute")
    step = "admin.second_factor" if second_factor else "admin.enrol"
    client = app.test_client()
    expected_location = "/admin/sign-in/code" if second_factor else "/admin/enrol"
    assert staff_sign_in(client, user.email).headers["Location"] == expected_location
    app.config["WTF_CSRF_ENABLED"] = False

    failures = []
    for rule in sorted(admin_rules(app), key=lambda r: r.endpoint == "admin.sign_out"):
        url = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: str(values[m.group(1)]), rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            status, location = _call(client, method, url)
            if rule.endpoint == step or (rule.endpoint == "admin.enrol_qr" and not second_factor):
                ok = status in (200, 400)  # the step itself: a form, or its refusal
            elif rule.endpoint == "admin.sign_in":
                # Not signed in: the form again (a POST without fields is refused).
                ok = status in (200, 400)
            elif rule.endpoint == "admin.sign_out":
                ok = status == 303
            elif rule.endpoint == "admin.enrol_qr":
                ok = status == 404  # no enrolment under way, no seed to draw
            elif method != "GET" and getattr(
                app.view_functions[rule.endpoint], "preview_read_only", False
            ):
                ok = status == 403  # refused before anything else is looked at
            else:
                ok = status in (302, 303) and location.startswith("/admin/sign-in")
            if not ok:
                failures.append(f"{method} {rule.rule}: {status} {location!r}")
    assert failures == [], "\n".join(failures)
    assert db.scalars(select(StaffSession)).all() == []


def test_the_matrix_covers_the_second_factor_routes(app):
    endpoints = {rule.endpoint for rule in admin_rules(app)}
    assert {"admin.enrol", "admin.enrol_qr", "admin.second_factor"} <= endpoints
    assert "admin.reset_second_factor" in endpoints


def test_only_admins_may_change_where_customers_send_money(app):
    """Bank details: an account manager (or a phished account manager session) must not
    be able to redirect invoice payments; the form names its own permission."""
    assert app.view_functions["admin.entity_bank_details"].staff_permission == (
        "manage_bank_details"
    )
    assert [role for role in StaffRole if "manage_bank_details" in PERMISSIONS[role]] == [
        StaffRole.ADMIN
    ]
