"""Sign-in tokens and codes: random, stored only as hashes; GET and HEAD change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from sqlalchemy import event, select

from portal import db as portal_db
from portal import signin
from portal.config import settings_of
from portal.models import CustomerSession, OutboxMessage
from tests.conftest import CODE_RE, LINK_RE, run_worker
from tests.portal.signin_helpers import (
    ADDRESS,
    TOKEN_RE,
    ask,
    asked,
    challenges,
    confirm,
    engine_of,
    portal,
    scalar,
    scan_database,
    session_of,
    sessions_count,
    token_of,
    urls,
)
from tests.settings import change_settings

# --- 1. tokens and codes: random, and stored only as hashes ------------------------


def test_the_token_is_256_random_bits_and_only_hashes_are_stored(app, client, db, smtp):
    pid, path, code = asked(app, client, db, smtp)
    token = token_of(path)

    assert TOKEN_RE.fullmatch(token)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32  # 256 bits
    assert re.fullmatch(r"\d{4}-\d{4}", code)
    [row] = challenges(app, pid)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    nonce = session_of(app, client)["nonce"]
    assert row.nonce_hash == hashlib.sha256(nonce.encode()).hexdigest()

    client.get(path)
    signed_in = confirm(client, pid)
    assert signed_in.headers["Location"] == urls(pid).overview
    sid = session_of(app, client)["_user_id"].removeprefix("c:")
    assert scalar(app, select(CustomerSession.sid_hash)) == hashlib.sha256(sid.encode()).hexdigest()

    found = scan_database(
        app,
        {
            "token": token,
            "code": code,
            "code digits": code.replace("-", ""),
            "nonce": nonce,
            "session id": sid,
        },
    )
    assert found == set()


def test_a_queued_email_is_sealed_and_a_sent_one_is_emptied(app, client, db, smtp):
    """While the sign-in email waits in the outbox its body is encrypted, so no table
    holds the live link or code in clear; once sent, the body is gone."""
    from emails import outbox
    from portal import signin as core

    pid = portal(db)
    ask(client, pid)
    with app.app_context():
        assert core.evaluate_pending(portal_db.session()) == 1
    [queued] = db.scalars(select(OutboxMessage)).all()
    with app.app_context():
        text = outbox.unseal(queued.text_body)
    token, code = LINK_RE.search(text).group(1).rsplit("/", 1)[1], CODE_RE.search(text).group(1)
    assert (
        scan_database(app, {"token": token, "code": code, "digits": code.replace("-", "")}) == set()
    )

    run_worker(app)
    db.expire_all()
    sent = db.get(OutboxMessage, queued.id)
    assert sent.sent_at is not None and sent.text_body == sent.html_body == ""
    assert len(smtp.to(ADDRESS)) == 1


def test_the_code_hash_is_an_hmac_keyed_by_secret_key(app, client, db, smtp):
    pid, _path, code = asked(app, client, db, smtp)
    digits = code.replace("-", "")
    [row] = challenges(app, pid)

    with app.app_context():
        expected = signin.code_hash(row.id, digits)
        original = settings_of(app).SECRET_KEY
        try:
            change_settings(app, SECRET_KEY="another-secret-key-" + "y" * 32)
            under_another_key = signin.code_hash(row.id, digits)
        finally:
            change_settings(app, SECRET_KEY=original)
    key = hashlib.sha256(b"portal sign-in code\x00" + original.encode()).digest()

    assert row.code_hash == expected
    assert expected == hmac.new(key, f"{row.id}:{digits}".encode(), hashlib.sha256).hexdigest()
    assert under_another_key != expected
    assert row.code_hash != hashlib.sha256(digits.encode()).hexdigest()


# --- 2. GET and HEAD of the link change nothing --------------------------------------


def test_a_get_of_the_link_spends_nothing_and_redirects_away_from_the_token(app, client, db, smtp):
    pid, path, _code = asked(app, client, db, smtp)
    token = token_of(path)

    for _ in range(2):
        opened = client.get(path)
        assert opened.status_code == 303
        assert opened.headers["Location"] == urls(pid).confirm
        assert all(token not in value for _name, value in opened.headers.items())
        assert token not in opened.get_data(as_text=True)
        [row] = challenges(app, pid)
        assert row.spent_at is None and row.retired_at is None
    assert sessions_count(app, pid) == 0
    assert confirm(client, pid).headers["Location"] == urls(pid).overview


def test_a_head_of_the_link_is_200_empty_and_touches_no_database(app, client, db, smtp):
    pid, path, _code = asked(app, client, db, smtp)
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = engine_of(app)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        heads = [client.head(path), app.test_client().head(path)]
        during_head = list(statements)
        opened = client.get(path)  # the listener does see the queries of a GET
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    for head in heads:
        assert head.status_code == 200
        assert head.data == b""
    assert during_head == []
    assert len(statements) > 0
    assert opened.headers["Location"] == urls(pid).confirm
    [row] = challenges(app, pid)
    assert row.spent_at is None
