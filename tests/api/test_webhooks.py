"""Webhooks: events queued with the change that caused them, signed, delivered by the
worker to a real HTTP receiver on loopback, retried with backoff while it is down, and
received exactly once by a receiver that deduplicates by event id."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from sqlalchemy import func, select

from api.openapi import document
from portal import webhooks
from portal.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from tests import files
from tests.api.conftest import SUBSCRIPTION, push_bill_group
from tests.clock import Clock
from tests.conftest import run_worker, sign_in
from tests.portal.pages_helpers import form_data
from tests.settings import change_settings

NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)


def endpoint(app, url, events=None):
    from portal import db

    with app.app_context():
        secret, row = webhooks.create_endpoint(
            db.session(), url, set(events or webhooks.EVENT_TYPES), "admin@staff.example.com"
        )
        db.session().commit()
        return secret, row.id


def emit_some(app, count, event_type="contact.updated"):
    from portal import db

    with app.app_context():
        for number in range(count):
            webhooks.emit(db.session(), event_type, None, {"n": number}, actor={"type": "system"})
        db.session().commit()


def deliver(app):
    from portal import worker

    with app.app_context():
        return worker.deliver_webhooks()


# --- signatures -------------------------------------------------------------------------


def test_a_signature_verifies_and_anything_altered_does_not():
    body = b'{"id":"evt_1"}'
    header = webhooks.sign("whsec_abc", 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=")
    assert webhooks.verify("whsec_abc", header, body, now=1_700_000_010)
    assert not webhooks.verify("whsec_abc", header, body + b" ", now=1_700_000_010)
    assert not webhooks.verify("whsec_other", header, body, now=1_700_000_010)
    # Outside the five-minute replay window, a good signature is refused.
    assert not webhooks.verify("whsec_abc", header, body, now=1_700_000_000 + 301)
    forged = header.replace("t=1700000000", "t=1700000300")
    assert not webhooks.verify("whsec_abc", forged, body, now=1_700_000_300)
    assert not webhooks.verify("whsec_abc", "garbage", body)


# --- delivery ---------------------------------------------------------------------------


def test_an_event_is_delivered_signed(app, db, receiver):
    Clock().install(app)
    secret, _ = endpoint(app, receiver.url)
    emit_some(app, 1)
    assert deliver(app) == 1
    [request] = receiver.requests
    assert request["path"] == "/hooks"
    headers = request["headers"]
    assert webhooks.verify(secret, headers["Portal-Signature"], request["body"])
    event = json.loads(request["body"])
    assert headers["Portal-Event-Id"] == event["id"] and event["id"].startswith("evt_")
    assert event["type"] == headers["Portal-Event-Type"] == "contact.updated"
    assert event["data"]["object"] == {"n": 0}
    delivery = db.scalar(select(WebhookDelivery))
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1
    assert deliver(app) == 0 and len(receiver.requests) == 1  # never sent twice


def test_the_secret_is_sealed_at_rest(app, db):
    secret, endpoint_id = endpoint(app, "https://hooks.example.com/x")
    row = db.get(WebhookEndpoint, endpoint_id)
    assert secret.startswith("whsec_") and secret not in row.secret_sealed


def test_no_endpoint_no_event(app, db):
    emit_some(app, 2)
    assert db.scalar(select(func.count()).select_from(WebhookEvent)) == 0


def test_an_endpoint_gets_only_the_events_it_chose(app, db, receiver):
    endpoint(app, receiver.url, {"portal.signed_in"})
    emit_some(app, 2, "contact.updated")
    emit_some(app, 1, "portal.signed_in")
    deliver(app)
    assert [e["type"] for e in receiver.events.values()] == ["portal.signed_in"]


def test_down_then_up_every_event_arrives_exactly_once(app, db, receiver):
    """The receiver goes away mid-run; deliveries back off and retry; when it returns,
    every event arrives, and none is sent again once it has been accepted."""
    clock = Clock(NOW).install(app)
    endpoint(app, receiver.url)
    emit_some(app, 3)
    assert deliver(app) == 3
    receiver.stop()
    emit_some(app, 4)
    assert deliver(app) == 0
    pending = db.scalars(
        select(WebhookDelivery).where(WebhookDelivery.status == DeliveryStatus.PENDING)
    ).all()
    assert len(pending) == 4
    assert {d.next_attempt_at for d in pending} == {NOW + dt.timedelta(seconds=30)}
    assert all(
        "Connection" in (d.last_error or "") or "refused" in (d.last_error or "") for d in pending
    )
    # Still down at the first retry: the backoff doubles.
    clock.advance(seconds=31)
    assert deliver(app) == 0
    db.expire_all()
    assert {
        d.next_attempt_at
        for d in db.scalars(
            select(WebhookDelivery).where(WebhookDelivery.status == DeliveryStatus.PENDING)
        )
    } == {clock.now + dt.timedelta(minutes=1)}
    # Not due yet: nothing is tried.
    receiver.start()
    assert deliver(app) == 0 and receiver.requests[3:] == []
    clock.advance(minutes=1, seconds=1)
    assert deliver(app) == 4
    assert len(receiver.events) == 7
    assert len(receiver.requests) == 7  # each accepted event was sent once
    attempts = db.scalar(select(func.count()).select_from(WebhookAttempt))
    assert attempts == 3 + 4 * 3
    clock.advance(hours=7)
    assert deliver(app) == 0 and len(receiver.requests) == 7


def test_an_error_status_is_retried_and_a_dedupe_by_id_absorbs_a_resend(app, db, receiver):
    clock = Clock(NOW).install(app)
    endpoint(app, receiver.url)
    receiver.status = 500
    emit_some(app, 1)
    assert deliver(app) == 0
    delivery = db.scalar(select(WebhookDelivery))
    assert delivery.last_status_code == 500 and delivery.last_error == "HTTP 500"
    receiver.status = 204
    clock.advance(seconds=31)
    assert deliver(app) == 1
    # Staff press Resend: the same event id again, which the receiver already has.
    with app.app_context():
        from portal import db as portal_db

        session = portal_db.session()
        assert webhooks.resend(session, session.get(WebhookDelivery, delivery.id), "ops@x.test")
        session.commit()
    assert deliver(app) == 1
    triggers = db.scalars(select(WebhookAttempt.trigger).order_by(WebhookAttempt.id)).all()
    assert triggers == ["worker", "worker", "ops@x.test"]
    ids = [json.loads(r["body"])["id"] for r in receiver.requests]
    assert len(ids) == 3 and len(set(ids)) == 1 and len(receiver.events) == 1


def test_after_the_last_attempt_a_delivery_is_failed(app, db, receiver):
    change_settings(app, WEBHOOK_MAX_ATTEMPTS=2)
    clock = Clock(NOW).install(app)
    endpoint(app, receiver.url)
    receiver.status = 503
    emit_some(app, 1)
    deliver(app)
    clock.advance(minutes=5)
    deliver(app)
    clock.advance(hours=10)
    deliver(app)
    delivery = db.scalar(select(WebhookDelivery))
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 2
    assert len(receiver.requests) == 2


def test_two_workers_never_claim_the_same_delivery(app, db, receiver):
    endpoint(app, receiver.url)
    emit_some(app, 6)
    with app.app_context():
        from portal import db as portal_db

        first = webhooks.claim(portal_db.session(), "worker-a", limit=4)
        second = webhooks.claim(portal_db.session(), "worker-b", limit=10)
    assert len(first) == 4 and len(second) == 2
    assert not {d.id for d in first} & {d.id for d in second}


def test_private_addresses_are_refused_outside_local_development(app, db, receiver):
    # Registered while allowed (a literal address is refused at registration otherwise);
    # every delivery checks again.
    endpoint(app, receiver.url)
    change_settings(app, WEBHOOK_ALLOW_PRIVATE_NETWORKS=False)
    emit_some(app, 1)
    assert deliver(app) == 0
    assert receiver.requests == []
    delivery = db.scalar(select(WebhookDelivery))
    assert delivery.last_error == webhooks.REFUSED_ADDRESS
    assert "127.0.0.1" not in delivery.last_error


# Each reaches an address that is not public, though Python calls some of them global.
NOT_PUBLIC = [
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",  # the cloud metadata service
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",  # local-use NAT64
    "2001::1",  # Teredo
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "fec0::1",  # site-local
    "fe80::1",
    "fc00::1",
    "::1",
    "::",
    "ff0e::1",  # global-scope multicast
    "224.0.0.1",
    "127.0.0.1",
    "10.1.2.3",
    "100.64.0.1",
    "169.254.169.254",
    "0.0.0.0",
    "255.255.255.255",
]
PUBLIC = ["93.184.215.14", "2606:4700::1111", "::ffff:93.184.215.14", "2002:5db8:d70e::1"]
PUBLIC += ["64:ff9b::5db8:d70e"]  # NAT64 of a public address, as DNS64 answers


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_addresses_that_lead_inside_are_not_public(address):
    import ipaddress

    assert not webhooks.is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are(address):
    import ipaddress

    assert webhooks.is_public_address(ipaddress.ip_address(address))


def fake_resolver(monkeypatch, address):
    import socket

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    connected = []

    def fake_getaddrinfo(host, port, *args, **kwargs):
        sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
        return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]

    def fake_connect(target, timeout=None, *args):
        connected.append(target)
        raise ConnectionRefusedError("test: not really connecting")

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", fake_connect)
    return connected


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_a_name_resolving_inside_is_refused_without_saying_where(app, monkeypatch, address):
    change_settings(app, WEBHOOK_ALLOW_PRIVATE_NETWORKS=False)
    connected = fake_resolver(monkeypatch, address)
    with app.app_context():
        outcome = webhooks.post("https://hooks.internal.example.com/x", b"{}", {})
    assert connected == []
    assert outcome.error == webhooks.REFUSED_ADDRESS
    assert address not in outcome.error and "internal" not in outcome.error


@pytest.mark.parametrize("address", PUBLIC)
def test_a_name_resolving_to_a_public_address_is_connected_to(app, monkeypatch, address):
    change_settings(app, WEBHOOK_ALLOW_PRIVATE_NETWORKS=False)
    connected = fake_resolver(monkeypatch, address)
    with app.app_context():
        webhooks.post("https://hooks.example.com/x", b"{}", {})
    assert [target[0] for target in connected] == [address]


@pytest.mark.parametrize("address", ["::7f00:1", "2002:7f00:1::1", "64:ff9b::7f00:1", "fec0::1"])
def test_an_endpoint_at_a_private_literal_is_refused_when_registered(app, address):
    change_settings(app, WEBHOOK_ALLOW_PRIVATE_NETWORKS=False)
    with app.app_context(), pytest.raises(webhooks.WebhookURLError, match="private or reserved"):
        webhooks.check_url(f"https://[{address}]/hooks")
    change_settings(app, WEBHOOK_ALLOW_PRIVATE_NETWORKS=True)
    with app.app_context():
        assert webhooks.check_url(f"https://[{address}]/hooks")


def test_a_name_that_does_not_resolve_says_so_without_an_address(app, monkeypatch):
    import socket

    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    change_settings(app, WEBHOOK_ALLOW_PRIVATE_NETWORKS=False)
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with app.app_context():
        outcome = webhooks.post("https://nowhere.example.com/x", b"{}", {})
    assert outcome.error == "cannot resolve nowhere.example.com: Name or service not known"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/",
        "https://",
        "https://user:pw@hooks.example.com/",
        "x" * 2001,
        "https://hooks.example.com/a b",
    ],
)
def test_bad_endpoint_urls_are_refused(app, url):
    with app.app_context(), pytest.raises(webhooks.WebhookURLError):
        webhooks.check_url(url)


def test_a_slow_receiver_times_out(app, db):
    import socket

    change_settings(app, WEBHOOK_TIMEOUT=0.5)
    # The kernel completes the connection from the backlog; nobody ever answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        endpoint(app, f"http://127.0.0.1:{listener.getsockname()[1]}/slow")
        emit_some(app, 1)
        started = time.monotonic()
        assert deliver(app) == 0
        assert time.monotonic() - started < 5
    assert "timed out" in db.scalar(select(WebhookDelivery)).last_error


# --- the events customers cause ----------------------------------------------------------


def test_each_customer_change_announces_itself(app, db, smtp, receiver, api):
    receiver.check_documented = True
    secret, _ = endpoint(app, receiver.url)
    push_bill_group(api)
    rule = api.post(
        "/bill-groups/bg-1/access-rules", {"value": "acme.com", "role": "billing_manager"}
    ).get_json()
    public_id = api.get("/bill-groups/bg-1").get_json()["portal_url"].rsplit("/", 1)[1]
    customer = app.test_client()
    assert sign_in(customer, app, smtp, public_id, "AP@acme.com").status_code == 303

    page = f"/p/{public_id}/billing-details"
    details = {"po_number": "PO-77", "vat_number": "", "registration_number": ""}
    customer.post(page, data=form_data(customer, page, **details))
    page = f"/p/{public_id}/payment-methods/new"
    card = {
        "number": "4242 4242 4242 4242",
        "exp_month": "12",
        "exp_year": "2031",
        "cvc": "123",
        "holder_name": "A P",
        "make_default": "y",
    }
    customer.post(page, data=form_data(customer, page, **card))
    api.delete(f"/bill-groups/bg-1/access-rules/{rule['id']}")
    run_worker(app)

    types = [e["type"] for e in sorted(receiver.events.values(), key=lambda e: e["created_at"])]
    assert set(types) == {
        "access_rule.created",
        "portal.signed_in",
        "billing_details.updated",
        "payment_method.added",
        "access_rule.deleted",
    }
    for request in receiver.requests:
        assert webhooks.verify(secret, request["headers"]["Portal-Signature"], request["body"])
    [signed_in] = receiver.of_type("portal.signed_in")
    assert signed_in["data"]["actor"] == {"type": "customer", "email": "ap@acme.com"}
    assert signed_in["data"]["bill_group"]["external_id"] == "bg-1"
    [details] = receiver.of_type("billing_details.updated")
    assert details["data"]["changed"] == ["po_number"]
    assert details["data"]["object"]["po_number"] == "PO-77"
    [card] = receiver.of_type("payment_method.added")
    assert card["data"]["object"]["last4"] == "4242"
    assert "4242424242424242" not in json.dumps(card)
    [deleted] = receiver.of_type("access_rule.deleted")
    assert deleted["data"]["object"]["value"] == "acme.com"
    assert deleted["data"]["actor"]["type"] == "api"


def test_a_changed_secret_key_fails_the_delivery_instead_of_sending_it_unsigned(app, db, receiver):
    endpoint(app, receiver.url)
    emit_some(app, 1)
    change_settings(app, SECRET_KEY="another-secret-key-" + "y" * 32)
    assert deliver(app) == 0
    delivery = db.scalar(select(WebhookDelivery))
    assert delivery.status == DeliveryStatus.FAILED
    assert "SECRET_KEY changed" in delivery.last_error
    assert receiver.requests == []


def test_a_delivery_being_sent_cannot_be_resent_into_a_second_worker(app, db, receiver):
    endpoint(app, receiver.url)
    emit_some(app, 1)
    with app.app_context():
        from portal import db as portal_db

        session = portal_db.session()
        [claimed] = webhooks.claim(session, "worker-a")
        assert webhooks.resend(session, claimed, "ops@x.test") is False
        session.commit()
        assert webhooks.claim(session, "worker-b") == []


def test_one_delivery_that_raises_does_not_stop_the_others(app, db, receiver, monkeypatch):
    endpoint(app, receiver.url)
    emit_some(app, 3)
    real = webhooks.post
    calls = []

    def flaky(url, body, headers):
        calls.append(url)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(url, body, headers)

    monkeypatch.setattr(webhooks, "post", flaky)
    assert deliver(app) == 2
    broken = db.scalar(
        select(WebhookDelivery).where(WebhookDelivery.status == DeliveryStatus.PENDING)
    )
    assert broken.attempts == 1 and "boom" in broken.last_error
    assert broken.claimed_until is None


def test_the_connection_goes_to_the_address_that_was_checked(app, monkeypatch):
    """A name that resolves to a public address when checked is connected to at that
    address, whatever a second lookup would say (DNS rebinding)."""
    change_settings(app, WEBHOOK_ALLOW_PRIVATE_NETWORKS=False)
    connected = []

    def fake_getaddrinfo(host, port, *args, **kwargs):
        return [(2, 1, 6, "", ("93.184.215.14", port))]

    def fake_connect(address, timeout=None, *args):
        connected.append(address)
        raise ConnectionRefusedError("test: not really connecting")

    import socket

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", fake_connect)
    with app.app_context():
        outcome = webhooks.post("https://hooks.example.com/x", b"{}", {})
    assert connected == [("93.184.215.14", 443)]
    assert "not really connecting" in outcome.error


PAYMENT = {
    "bill_group": "bg-1",
    "amount_minor": 5000,
    "currency": "EUR",
    "status": "succeeded",
    "received_at": "2026-11-20T10:00:00Z",
}
CREDIT_NOTE = {
    "bill_group": "bg-1",
    "number": "CN-1",
    "currency": "EUR",
    "issue_date": "2026-11-15",
    "amount_minor": 2000,
    "reason": "Service credit",
}


def test_every_event_the_portal_sends_is_documented_with_its_payload(app, db, receiver, api):
    """Each event function of portal.events, on real records, delivers a payload and
    headers that the document's webhooks section describes (the receiver checks them)."""
    from portal import db as portal_db
    from portal import events
    from portal.actions import Actor
    from portal.actions.autopay import set_autopay
    from portal.actions.credits import Source, apply_credit
    from portal.models import (
        AccessRule,
        BillGroup,
        Contact,
        CreditNote,
        Payment,
        PaymentMethod,
        PaymentStatus,
    )
    from portal.sync import serialize

    receiver.check_documented = True
    endpoint(app, receiver.url)
    push_bill_group(api)
    api.put(
        "/payment-methods/pm-1",
        {
            "bill_group": "bg-1",
            "type": "card",
            "last4": "4242",
            "gateway": "sandbox",
            "gateway_token": "tok_1",
        },
    )
    api.post("/bill-groups/bg-1/access-rules", {"value": "acme.com"})
    plan = {"entity": "ent-1", "name": "Team", "price_minor": 9900, "currency": "EUR"}
    for url, body in (
        ("/payments/pay-1", PAYMENT),
        ("/credit-notes/cn-1", CREDIT_NOTE),
        ("/plans/plan-1", plan | {"period": "monthly"}),
        ("/plans/plan-2", plan | {"name": "Business", "period": "annual"}),
    ):
        assert api.put(url, body).status_code == 201
    with app.app_context():
        session = portal_db.session()
        group = session.scalar(select(BillGroup))
        payment = session.scalar(select(Payment))
        note = session.scalar(select(CreditNote))
        apply_credit(
            session,
            Actor.customer("ap@acme.com"),
            group,
            source=Source("credit_note", note.id),
            invoice_id=None,
            amount_minor=100,
        )
        apply_credit(
            session,
            Actor.staff("admin@staff.example.com"),
            group,
            source=Source("payment", payment.id),
            invoice_id=None,
            amount_minor=100,
        )
        assert not set_autopay(session, Actor.api_key("billing"), group, True)  # on already
        assert set_autopay(session, Actor.api_key("billing"), group, False)
        # Sent by the pay flow (portal.actions.paying): the payment as the API serialises it.
        webhooks.emit(
            session, "payment.succeeded", group, serialize.payment(payment), actor=events.system()
        )
        webhooks.emit(
            session, "payment.failed", group, serialize.payment(payment), actor=events.system()
        )
        contact = session.scalar(select(Contact))
        method = session.scalar(select(PaymentMethod))
        rule = session.scalar(select(AccessRule))
        staff = events.staff("admin@staff.example.com")
        events.signed_in(session, group, "ap@acme.com")
        events.contact_updated(session, group, contact, events.api_key("billing"), ["city"])
        events.billing_details_updated(session, group, staff, ["po_number"])
        events.payment_method_added(session, group, method, staff)
        events.payment_method_default_changed(session, group, method, staff)
        events.access_rule_created(session, group, rule, staff)
        events.access_rule_updated(session, group, rule, staff, ["role"])
        events.access_rule_deleted(session, group, serialize.access_rule(rule), staff)
        payment = Payment(
            bill_group=group,
            amount_minor=1200,
            currency=group.currency,
            status=PaymentStatus.SUCCEEDED,
            received_at=dt.datetime(2026, 11, 21, 12, tzinfo=dt.UTC),
            reference="sandbox_ch_1",
        )
        session.add(payment)
        customer = events.customer("ap@acme.com")
        events.payment_succeeded(session, group, payment, customer)
        payment.status = PaymentStatus.FAILED
        events.payment_failed(session, group, payment, customer)
        session.commit()
    changeable = {"plan": "plan-1", "allowed_changes": {"plans": ["plan-2"]}}
    assert api.put("/subscriptions/sub-1", SUBSCRIPTION | changeable).status_code == 200
    with app.app_context():
        from portal.actions.subscriptions import request_change
        from portal.models import Plan, Subscription

        session = portal_db.session()
        group = session.scalar(select(BillGroup))
        sub = session.scalar(select(Subscription))
        business = session.scalar(select(Plan).where(Plan.external_id == "plan-2"))
        request_change(
            session, Actor.customer("ap@acme.com"), group, sub.id, "plan", plan_id=business.id
        )
        session.commit()
    with app.test_request_context():
        from portal.actions import disputes
        from portal.models import Invoice

        session = portal_db.session()
        group = session.scalar(select(BillGroup))
        invoice = session.scalar(select(Invoice).where(Invoice.bill_group_id == group.id))
        customer_actor = Actor.customer("ap@acme.com")
        raised = disputes.raise_dispute(
            session,
            customer_actor,
            group,
            invoice.id,
            kind="dispute",
            reason="duplicate",
            message="Billed twice",
            upload=disputes.Upload("a.png", files.png_bytes()),
        )
        disputes.reply(session, customer_actor, group, raised.id, message="See the file")
        disputes.answer(session, Actor.api_key("billing"), raised.id, message="Yes", resolve=True)
        session.commit()
    # A worker pass leases at most 20 deliveries; there are more events than that now.
    while deliver(app):
        pass
    assert set(webhooks.EVENT_TYPES) <= {event["type"] for event in receiver.events.values()}
    assert set(document()["webhooks"]) == set(webhooks.EVENT_TYPES)
