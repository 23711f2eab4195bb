"""portal.actions.signin.complete_sign_in, called directly: what a completed sign-in
writes, and that a refused one writes nothing. The pages' wiring (cookies, redirects,
races) is covered through the real forms in tests/portal/test_signin_*.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import clock, db, sessions, signin, webhooks
from portal.actions.signin import SignInRefused, complete_sign_in, record_refusal
from portal.models import (
    AccessRule,
    AuditEvent,
    BillGroup,
    CustomerSession,
    RuleKind,
    SignInChallenge,
    WebhookEvent,
)
from tests.factories import make_bill_group

ADDRESS = "ap@acme.com"
NONCE = "browser-nonce"


@pytest.fixture
def database(app: Flask) -> Iterator[Session]:
    """The request's session, as a face would hand it to the action."""
    with app.test_request_context("/", environ_base={"REMOTE_ADDR": "192.0.2.7"}):
        yield db.session()


def _group(database: Session) -> BillGroup:
    group = make_bill_group(database)
    group.access_rules.append(
        AccessRule(kind=RuleKind.DOMAIN, value="acme.com", created_by="ops@staff.example.com")
    )
    database.commit()
    return group


def _challenge(database: Session, group: BillGroup, email: str = ADDRESS, **kw: object) -> int:
    now = clock.now()
    challenge = SignInChallenge(
        bill_group_id=group.id,
        email=email,
        nonce_hash=signin.sha256(NONCE),
        token_hash=signin.sha256(signin.new_nonce()),  # issued by the worker
        created_at=now,
        expires_at=now + dt.timedelta(minutes=15),
        **kw,
    )
    database.add(challenge)
    database.commit()
    return challenge.id


def _spent(database: Session, group: BillGroup, **kw: object) -> int:
    challenge_id = _challenge(database, group, **kw)
    assert signin.spend(database, challenge_id, group, NONCE)
    return challenge_id


def test_a_sign_in_creates_a_session_audits_and_queues_the_event(database: Session) -> None:
    group = _group(database)
    webhooks.create_endpoint(
        database, "https://hooks.example.com/x", {"portal.signed_in"}, "ops@staff.example.com"
    )
    challenge_id = _spent(database, group, next_path=f"/p/{group.public_id}/invoices")

    done = complete_sign_in(database, group, challenge_id)
    database.commit()

    assert done.email == ADDRESS and done.next_path == f"/p/{group.public_id}/invoices"
    assert done.session.sid_hash == signin.sha256(done.sid)
    assert done.session.ip == "192.0.2.7"
    assert sessions.load(database, done.sid) is not None
    audited = database.scalars(select(AuditEvent).where(AuditEvent.action == "signin.complete"))
    assert [(a.outcome, a.actor_type, a.actor) for a in audited] == [
        ("signed_in", "customer", ADDRESS)
    ]
    event = database.scalars(select(WebhookEvent)).one()
    assert event.type == "portal.signed_in"


def test_the_old_session_ends_and_the_other_links_are_retired(database: Session) -> None:
    group = _group(database)
    first = complete_sign_in(database, group, _spent(database, group))
    database.commit()
    other_link = _challenge(database, group)
    someone_else = _challenge(database, group, email="cfo@acme.com")

    second = complete_sign_in(database, group, _spent(database, group), replacing=first.session)
    database.commit()

    assert first.session.revoked_reason == "replaced"
    assert sessions.load(database, first.sid) is None
    assert sessions.load(database, second.sid) is not None
    assert database.get(SignInChallenge, other_link).retired_at is not None
    assert database.get(SignInChallenge, someone_else).retired_at is None


def test_a_revoked_address_is_refused_and_nothing_is_written(database: Session) -> None:
    group = _group(database)
    challenge_id = _spent(database, group, email="ap@elsewhere.com")
    database.commit()
    before = database.scalars(select(AuditEvent)).all()

    with pytest.raises(SignInRefused) as refused:
        complete_sign_in(database, group, challenge_id)

    assert (refused.value.code, refused.value.email, refused.value.status) == (
        "access_revoked",
        "ap@elsewhere.com",
        403,
    )
    assert not database.new and not database.dirty
    assert database.scalars(select(CustomerSession)).all() == []
    assert database.scalars(select(AuditEvent)).all() == before


def test_a_challenge_of_another_bill_group_is_refused(database: Session) -> None:
    group, other = _group(database), _group(database)
    challenge_id = _spent(database, other)
    with pytest.raises(SignInRefused) as refused:
        complete_sign_in(database, group, challenge_id)
    assert refused.value.code == "link_not_usable"


def test_a_refusal_is_recorded_as_anonymous(database: Session) -> None:
    group = _group(database)
    record_refusal(database, group, SignInRefused("access_revoked", ADDRESS))
    database.commit()
    row = database.scalars(select(AuditEvent).where(AuditEvent.action == "signin.complete")).one()
    assert (row.outcome, row.actor_type, row.actor, row.bill_group_id) == (
        "access_revoked",
        "anonymous",
        ADDRESS,
        group.id,
    )
