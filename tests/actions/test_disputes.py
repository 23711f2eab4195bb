"""The dispute actions: raise (each refusal writes nothing), reply, answer and resolve
(the badge, the events, the emails), as whom; and twenty concurrent raises that make one."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from portal import db as portal_db
from portal.actions import Actor, Conflict, Forbidden, Invalid, NotFound
from portal.actions.disputes import Upload, answer, raise_dispute, reply
from portal.disputes import MESSAGE_MAX
from portal.models import (
    AuditEvent,
    BillGroup,
    Dispute,
    DisputeAttachment,
    DisputeKind,
    DisputeMessage,
    DisputeState,
    InvoiceStatus,
    OutboxMessage,
    WebhookEvent,
)
from portal.webhooks import EVENT_TYPES, create_endpoint
from tests import files
from tests.factories import make_bill_group, make_contact, make_invoice

CUSTOMER = Actor.customer("ap@acme.com")
BILLING = Actor.api_key("billing", "pk_ab12")
STAFF = Actor.staff("ops@staff.example.com")


@pytest.fixture
def group(app, db) -> BillGroup:
    found = make_bill_group(db)
    make_contact(db, found, email="billing@acme.com")
    with app.app_context():
        create_endpoint(db, "https://hooks.example.com/x", set(EVENT_TYPES), created_by="t")
    db.commit()
    return found


@pytest.fixture
def invoice(db, group):
    found = make_invoice(db, group, number="INV-7")
    db.commit()
    return found


def counts(db) -> tuple[int, int, int, int, int]:
    db.expire_all()
    return tuple(  # type: ignore[return-value]
        db.scalar(select(func.count()).select_from(model))
        for model in (Dispute, DisputeMessage, DisputeAttachment, WebhookEvent, OutboxMessage)
    )


def events(db) -> list[str]:
    return list(db.scalars(select(WebhookEvent.type).order_by(WebhookEvent.id)))


def test_raise_answer_resolve(app, db, group, invoice):
    with app.test_request_context():
        dispute = raise_dispute(
            db,
            CUSTOMER,
            group,
            invoice.id,
            kind="dispute",
            reason="wrong_amount",
            message="We ordered 5 seats,\r\nnot 50.",
            upload=Upload("order.pdf", files.pdf_bytes()),
        )
        db.commit()
        assert dispute.state == DisputeState.OPEN
        assert invoice.open_dispute_kind == DisputeKind.DISPUTE
        (first,) = dispute.messages
        assert first.body == "We ordered 5 seats,\nnot 50."
        assert first.attachment.content_type == "application/pdf"
        assert first.attachment.filename == "order.pdf"
        assert events(db) == ["dispute.opened"]
        payload = json.loads(db.scalar(select(WebhookEvent.payload)))
        assert payload["data"]["object"]["reason"] == "wrong_amount"
        assert payload["data"]["object"]["messages"][0]["attachment"]["filename"] == "order.pdf"

        answer(db, STAFF, dispute.id, message="Checking with sales.", resolve=False)
        db.commit()
        assert dispute.state == DisputeState.OPEN
        reply(db, CUSTOMER, group, dispute.id, message="Any news?")
        db.commit()
        answer(db, BILLING, dispute.id, message="Credited 45 seats.", resolve=True)
        db.commit()
    db.refresh(invoice)
    assert invoice.open_dispute_kind is None
    assert dispute.state == DisputeState.RESOLVED and dispute.resolved_by == "api:billing"
    assert [m.author_type for m in dispute.messages] == ["customer", "staff", "customer", "api"]
    assert events(db) == [
        "dispute.opened",
        "dispute.answered",
        "dispute.replied",
        "dispute.answered",
        "dispute.resolved",
    ]
    # Each answer to whoever raised it and to the billing contact.
    mails = db.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    assert [m.to_address for m in mails] == ["ap@acme.com", "billing@acme.com"] * 2
    assert [m.kind for m in mails] == ["dispute_answered"] * 4
    outcomes = db.scalars(select(AuditEvent.outcome).where(AuditEvent.action == "dispute")).all()
    assert outcomes == ["opened", "answered", "replied", "resolved"]
    with app.test_request_context():
        with pytest.raises(Conflict):
            reply(db, CUSTOMER, group, dispute.id, message="One more thing")
        db.rollback()
        with pytest.raises(Conflict):
            answer(db, STAFF, dispute.id, message="Again", resolve=True)
        db.rollback()
        # Resolved: a new one may be raised.
        again = raise_dispute(
            db, CUSTOMER, group, invoice.id, kind="question", reason="other", message="Why?"
        )
        assert again.reason is None  # a question has no reason


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"kind": "complaint"}, "kind"),
        ({"kind": "dispute", "reason": None}, "reason"),
        ({"kind": "dispute", "reason": "because"}, "reason"),
        ({"message": ""}, "message"),
        ({"message": "   \n "}, "message"),
        ({"message": "x" * (MESSAGE_MAX + 1)}, "message"),
        ({"message": "x" * 100_000}, "message"),
        ({"message": "bell \x07"}, "message"),
        ({"message": "nul \x00"}, "message"),
        ({"message": "lone \ud800 surrogate"}, "message"),
        ({"message": "zero\u200bwidth"}, "message"),
        ({"upload": Upload("a.pdf", b"")}, "attachment"),
        ({"upload": Upload("a.pdf", files.HTML)}, "attachment"),
        ({"upload": Upload("a.svg", files.SVG)}, "attachment"),
        ({"upload": Upload("a.pdf", files.POLYGLOT)}, "attachment"),
        ({"upload": Upload("a.png", files.png_then_garbage())}, "attachment"),
    ],
)
def test_refusals_write_nothing(app, db, group, invoice, fields, error):
    before = counts(db)
    asked = {"kind": "dispute", "reason": "duplicate", "message": "Billed twice"} | fields
    with app.test_request_context(), pytest.raises(Invalid) as refused:
        raise_dispute(db, CUSTOMER, group, invoice.id, **asked)
    assert refused.value.field == error
    db.rollback()
    assert counts(db) == before


def test_another_groups_invoice_or_a_draft_is_not_found(app, db, group, invoice):
    other = make_bill_group(db, name="Other")
    theirs = make_invoice(db, other, number="THEIRS-1")
    draft = make_invoice(db, group, number="DRAFT-1", status=InvoiceStatus.DRAFT)
    db.commit()
    before = counts(db)
    with app.test_request_context():
        for invoice_id in (theirs.id, draft.id, 2**62):
            with pytest.raises(NotFound):
                raise_dispute(
                    db, CUSTOMER, group, invoice_id, kind="question", message="Hi", reason=None
                )
    db.rollback()
    assert counts(db) == before


def test_who_may_do_what(app, db, group, invoice):
    with app.test_request_context():
        for actor in (STAFF, BILLING):
            with pytest.raises(Forbidden):
                raise_dispute(
                    db, actor, group, invoice.id, kind="question", message="x", reason=None
                )
        dispute = raise_dispute(
            db, CUSTOMER, group, invoice.id, kind="question", message="x", reason=None
        )
        with pytest.raises(Forbidden):
            answer(db, CUSTOMER, dispute.id, message="self-answer", resolve=True)
        with pytest.raises(Forbidden):
            reply(db, STAFF, group, dispute.id, message="not here")
        other = make_bill_group(db, name="Other")
        with pytest.raises(NotFound):
            reply(db, CUSTOMER, other, dispute.id, message="forged")
        with pytest.raises(Conflict):
            raise_dispute(
                db, CUSTOMER, group, invoice.id, kind="dispute", reason="other", message="y"
            )


def test_an_image_is_redrawn_and_kept_as_what_it_is(app, db, group, invoice):
    with app.test_request_context():
        dispute = raise_dispute(
            db,
            CUSTOMER,
            group,
            invoice.id,
            kind="question",
            reason=None,
            message="Screenshot attached",
            upload=Upload("C:\\Users\\me\\shot.pdf", files.png_with_html_after()),
        )
    kept = dispute.messages[0].attachment
    assert kept.content_type == "image/png" and kept.filename == "shot.png"
    assert b"<html" not in kept.data and b"script" not in kept.data


def test_twenty_concurrent_raises_make_one(app, db, group, invoice):
    with app.app_context():
        engine = portal_db.engine()
    factory = sessionmaker(engine, expire_on_commit=False)
    barrier = threading.Barrier(20)
    outcomes: list[object] = [None] * 20

    def attempt(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            with app.test_request_context(), factory() as session:
                found = session.get(BillGroup, group.id)
                try:
                    raise_dispute(
                        session,
                        CUSTOMER,
                        found,
                        invoice.id,
                        kind="dispute",
                        reason="duplicate",
                        message="Billed twice",
                    )
                    session.commit()
                    outcomes[index] = "raised"
                except Conflict:
                    session.rollback()
                    outcomes[index] = "conflict"
        except Exception as exc:  # reported by the assertions below
            outcomes[index] = exc

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(map(repr, outcomes)) == ["'conflict'"] * 19 + ["'raised'"], outcomes
    dispute_count, messages, _files, webhook_events, _mails = counts(db)
    assert (dispute_count, messages, webhook_events) == (1, 1, 1)
