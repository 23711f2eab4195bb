"""What the sign-in token tests share: asking for a link, reading the email, sessions and
races (test_notices and test_budgets race browsers with them too)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.orm import Session

from portal.access import add_rule
from portal.models import BillGroup, CustomerRole, CustomerSession, SignInChallenge
from tests.conftest import Inbox, csrf_token, link_and_code, run_worker
from tests.factories import make_bill_group

ADDRESS = "ap@acme.com"


TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


CONCURRENT = 20


def engine_of(app: Flask) -> Engine:
    return app.extensions["portal.db"].kw["bind"]


def scalar(app: Flask, statement):  # type: ignore[no-untyped-def]
    """One value, read on a connection of its own (no snapshot left open)."""
    with engine_of(app).connect() as connection:
        return connection.execute(statement).scalar()


def sessions_count(app: Flask, pid: str) -> int:
    return scalar(
        app,
        select(func.count())
        .select_from(CustomerSession)
        .join(BillGroup, BillGroup.id == CustomerSession.bill_group_id)
        .where(BillGroup.public_id == pid),
    )


def challenges(app: Flask, pid: str) -> list:
    with engine_of(app).connect() as connection:
        return list(
            connection.execute(
                select(SignInChallenge)
                .join(BillGroup, BillGroup.id == SignInChallenge.bill_group_id)
                .where(BillGroup.public_id == pid)
                .order_by(SignInChallenge.id)
            )
        )


def portal(db: Session, rule: str = "acme.com") -> str:
    group = make_bill_group(db)
    add_rule(db, group, rule, created_by="test", role=CustomerRole.BILLING_MANAGER)
    db.commit()
    return group.public_id


def ask(client: FlaskClient, pid: str, address: str = ADDRESS, next_path: str = "", **kw):
    """Open the portal link and ask for a sign-in link; returns the check-email page."""
    page = client.get(f"/p/{pid}", query_string={"next": next_path} if next_path else None, **kw)
    assert page.status_code == 200
    response = client.post(
        f"/p/{pid}/sign-in",
        data={"csrf_token": csrf_token(page.text), "email": address, "next": next_path},
        **kw,
    )
    assert response.status_code == 200
    assert "Check your email" in response.text
    return response


def mails(app: Flask, inbox: Inbox, address: str = ADDRESS) -> list[tuple[str, str]]:
    """Run the worker; (verify path, code) of every sign-in email to the address."""
    run_worker(app)
    return [link_and_code(message) for message in inbox.to(address)]


def latest(app: Flask, inbox: Inbox, address: str = ADDRESS) -> tuple[str, str]:
    sent = mails(app, inbox, address)
    assert sent, "no sign-in email"
    return sent[-1]


def asked(app: Flask, client: FlaskClient, db: Session, inbox: Inbox) -> tuple[str, str, str]:
    """A portal whose link ADDRESS opened to ask for a sign-in: the portal's public id, and
    the link path and the code it was emailed."""
    pid = portal(db)
    ask(client, pid)
    path, code = latest(app, inbox)
    return pid, path, code


def token_of(path: str) -> str:
    return path.rsplit("/", 1)[1]


def clone(app: Flask, client: FlaskClient) -> FlaskClient:
    """Another client carrying the same browser session cookie."""
    twin = app.test_client()
    twin.set_cookie("session", client.get_cookie("session").value)
    return twin


def cookie_session(app: Flask, value: str) -> dict:
    return app.session_interface.get_signing_serializer(app).loads(value)


def session_of(app: Flask, client: FlaskClient) -> dict:
    return cookie_session(app, client.get_cookie("session").value)


def confirm(client: FlaskClient, pid: str):
    page = client.get(f"/p/{pid}/confirm")
    assert page.status_code == 200, "the confirm page was not reached"
    return client.post(f"/p/{pid}/confirm", data={"csrf_token": csrf_token(page.text)})


def type_code(client: FlaskClient, pid: str, code: str, csrf: str):
    return client.post(f"/p/{pid}/code", data={"csrf_token": csrf, "code": code})


def wrong(code: str, i: int = 0) -> str:
    digits = code.replace("-", "")
    return f"{(int(digits) + 1 + i) % 10**8:08d}"


def urls(pid: str) -> SimpleNamespace:
    return SimpleNamespace(
        confirm=f"/p/{pid}/confirm",
        invalid=f"/p/{pid}/link-invalid",
        other=f"/p/{pid}/other-browser",
        overview=f"/p/{pid}/overview",
    )


def scan_database(app: Flask, secrets_: dict[str, str]) -> set[tuple[str, str, str]]:
    """(table, column, secret name) for every secret found in any row of any table."""
    hits = set()
    engine = engine_of(app)
    with engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            result = connection.execute(text(f'SELECT * FROM "{table}"'))
            for row in result.mappings():
                for column, value in row.items():
                    if value is None:
                        continue
                    as_text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    for name, secret in secrets_.items():
                        if secret in as_text:
                            hits.add((table, column, name))
    return hits


def race(jobs: list[Any], send: Callable[[Any], Any]) -> list[Any]:
    """Run send(job) for every job at once: threads released together by a barrier."""
    barrier = threading.Barrier(len(jobs))

    def go(job: Any) -> Any:
        barrier.wait(timeout=30)
        return send(job)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(go, jobs))
