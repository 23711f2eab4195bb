"""What the customer-session tests share: portals, signed-in browsers, cookies and audit rows."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.access import add_rule
from portal.models import (
    AuditEvent,
    BillGroup,
    CustomerRole,
)
from tests.conftest import (
    CSRF_RE,
    Inbox,
    csrf_token,
    link_and_code,
    request_link,
    run_worker,
)
from tests.factories import make_bill_group

ADDRESS = "ap@acme.com"


def portal(db: Session, *rules: str, **overrides) -> BillGroup:
    """A bill group with access rules (acme.com unless told otherwise), committed."""
    group = make_bill_group(db, **overrides)
    for rule in rules or ("acme.com",):
        add_rule(db, group, rule, created_by="test", role=CustomerRole.BILLING_MANAGER)
    db.commit()
    return group


def cookie_data(app: Flask, client: FlaskClient, domain: str = "localhost") -> dict:
    """The contents of the browser's Flask session cookie."""
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"], domain=domain)
    assert cookie is not None, "no session cookie"
    return app.session_interface.get_signing_serializer(app).loads(cookie.value)


def session_id(app: Flask, client: FlaskClient) -> str:
    user_id = cookie_data(app, client)["_user_id"]
    assert user_id.startswith("c:")
    return user_id.removeprefix("c:")


def cookie_names(response) -> list[str]:
    return [header.split("=", 1)[0] for header in response.headers.getlist("Set-Cookie")]


def cookie_shapes(response) -> set[tuple[str, frozenset[str]]]:
    """Set-Cookie headers as (name, attributes), without the values."""
    shapes = set()
    for header in response.headers.getlist("Set-Cookie"):
        first, *attributes = [part.strip() for part in header.split(";")]
        shapes.add((first.split("=", 1)[0], frozenset(a.lower() for a in attributes)))
    return shapes


def masked(html: str, *addresses: str) -> str:
    html = CSRF_RE.sub('name="csrf_token" type="hidden" value="X"', html)
    for address in addresses:
        html = html.replace(address, "ADDRESS")
    return html


def emailed(
    client: FlaskClient, app: Flask, inbox: Inbox, public_id: str, address: str = ADDRESS
) -> tuple[Any, str, str]:
    """Ask for a sign-in link through the form and let the worker send it: the form's
    response, then the path and the code of the email."""
    response = request_link(client, public_id, address)
    run_worker(app)
    path, code = link_and_code(inbox.to(address)[-1])
    return response, path, code


def to_confirm(
    client: FlaskClient, app: Flask, inbox: Inbox, public_id: str, address: str = ADDRESS
) -> list:
    """Ask for a link and open it, through the real forms; every response on the way,
    last the confirm page (not yet confirmed)."""
    asked, path, _code = emailed(client, app, inbox, public_id, address)
    responses = [asked, client.get(path)]
    responses.append(client.get(responses[-1].headers["Location"]))
    return responses


def journey(
    client: FlaskClient, app: Flask, inbox: Inbox, public_id: str, address: str = ADDRESS
) -> list:
    """Sign in through the real forms; every response on the way, last the confirm POST."""
    responses = to_confirm(client, app, inbox, public_id, address)
    responses.append(
        client.post(f"/p/{public_id}/confirm", data={"csrf_token": csrf_token(responses[-1].text)})
    )
    assert responses[-1].status_code == 303, "sign-in did not complete"
    return responses


def signed_in(app: Flask, inbox: Inbox, public_id: str, address: str = ADDRESS) -> FlaskClient:
    """A new browser, signed in."""
    client = app.test_client()
    journey(client, app, inbox, public_id, address)
    return client


def rows(db: Session, model, *where) -> list:
    db.expire_all()
    found = list(db.scalars(select(model).where(*where).order_by(model.id)))
    db.commit()
    return found


def count(db: Session, model) -> int:
    db.expire_all()
    number = db.scalar(select(func.count()).select_from(model))
    db.commit()
    return number


def audit_since(db: Session, after_id: int = 0) -> list[AuditEvent]:
    return rows(db, AuditEvent, AuditEvent.id > after_id)


def last_audit_id(db: Session) -> int:
    last = db.scalar(select(func.coalesce(func.max(AuditEvent.id), 0)))
    db.commit()
    return last


def sent_to_sign_in(response, public_id: str) -> bool:
    """A redirect to the portal's sign-in page (with this page as `next`)."""
    if response.status_code not in (302, 303):
        return False
    return urlsplit(response.headers["Location"]).path == f"/p/{public_id}"


def person(app: Flask, ip: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    return client
