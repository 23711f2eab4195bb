"""Questions and disputes over the API: the feed (by state, bill group, invoice) with
each thread's messages, one dispute, a file of its thread, and the answer that may
resolve it (once). Every response is checked against the OpenAPI document."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal import db as portal_db
from portal.actions import Actor
from portal.actions.disputes import Upload, raise_dispute
from portal.models import BillGroup, Invoice, OutboxMessage
from tests import files
from tests.api.conftest import push_bill_group


@pytest.fixture
def raised(app, api):
    push_bill_group(api)
    with app.test_request_context():
        session = portal_db.session()
        group = session.scalar(select(BillGroup))
        invoice = session.scalar(select(Invoice))
        found = raise_dispute(
            session,
            Actor.customer("ap@acme.com"),
            group,
            invoice.id,
            kind="dispute",
            reason="wrong_amount",
            message="Twelve seats?\nWe have ten.",
            upload=Upload("seats.png", files.png_bytes()),
        )
        session.commit()
        return found.id


def test_list_read_and_answer(app, api, raised, db):
    listed = api.get("/disputes?state=open&bill_group=bg-1&invoice=inv-1").get_json()
    (dispute,) = listed["data"]
    assert dispute["id"] == raised and dispute["invoice"] == "inv-1"
    assert dispute["kind"] == "dispute" and dispute["reason"] == "wrong_amount"
    (message,) = dispute["messages"]
    assert message["body"] == "Twelve seats?\nWe have ten." and message["author_type"] == "customer"
    assert api.get("/disputes?invoice=no-such").get_json()["data"] == []
    assert api.get("/disputes?state=resolved").get_json()["data"] == []
    assert api.get("/disputes?state=closed").status_code == 400

    one = api.get(f"/disputes/{raised}").get_json()
    assert one == dispute
    attachment = message["attachment"]
    served = api.get(f"/disputes/{raised}/attachments/{attachment['id']}")
    assert served.status_code == 200 and served.mimetype == "image/png"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert api.get(f"/disputes/{raised + 1}/attachments/{attachment['id']}").status_code == 404

    kept_open = api.post(f"/disputes/{raised}/answer", {"message": "Looking into it."})
    assert kept_open.status_code == 200 and kept_open.get_json()["state"] == "open"
    done = api.post(f"/disputes/{raised}/answer", {"message": "Credited 2 seats.", "resolve": True})
    assert done.status_code == 200
    body = done.get_json()
    assert body["state"] == "resolved" and body["resolved_by"] == "api:billing system"
    assert [m["author_type"] for m in body["messages"]] == ["customer", "api", "api"]
    again = api.post(f"/disputes/{raised}/answer", {"message": "Again", "resolve": True})
    assert again.status_code == 409
    db.expire_all()
    assert db.scalar(select(Invoice)).open_dispute_kind is None
    mails = db.scalars(select(OutboxMessage)).all()
    assert [m.to_address for m in mails].count("ap@acme.com") == 2  # both answers


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"message": ""},
        {"message": "x" * 5001},
        {"message": "bell \u0007"},
        {"message": "ok", "resolve": "yes"},
        {"message": "ok", "extra": 1},
    ],
)
def test_a_bad_answer_is_a_422_or_400_and_writes_nothing(api, raised, body, db):
    refused = api.post(f"/disputes/{raised}/answer", body)
    assert refused.status_code in (400, 422), refused.get_json()
    assert len(api.get(f"/disputes/{raised}").get_json()["messages"]) == 1


def test_unknown_dispute_and_read_only_key(api, raised, read_only_api):
    assert api.get("/disputes/999999").status_code == 404
    assert api.post("/disputes/999999/answer", {"message": "Hi"}).status_code == 404
    assert read_only_api.post(f"/disputes/{raised}/answer", {"message": "Hi"}).status_code == 403
    assert read_only_api.get(f"/disputes/{raised}").status_code == 200
