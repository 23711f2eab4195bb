"""No sign-in secret leaks: not into logs, the database, referrers or the pages."""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import threading
import urllib.request
from types import SimpleNamespace

from flask.testing import FlaskClient
from sqlalchemy import select, text
from werkzeug.serving import make_server

from portal.logredact import GunicornLogger, RedactTokens, redact
from portal.models import AuditEvent
from tests.conftest import csrf_token
from tests.portal.signin_helpers import (
    ADDRESS,
    ask,
    confirm,
    cookie_session,
    engine_of,
    latest,
    portal,
    scalar,
    session_of,
    token_of,
    type_code,
    urls,
    wrong,
)

# --- 8. no secret leaks ---------------------------------------------------------------


class Recording:
    """A test client that keeps every response."""

    def __init__(self, client: FlaskClient, responses: list) -> None:
        self.client = client
        self.responses = responses

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        method = getattr(self.client, name)
        if name not in ("get", "post", "head", "open"):
            return method

        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            response = method(*args, **kwargs)
            self.responses.append(response)
            return response

        return call


def test_no_secret_reaches_a_response_the_audit_trail_the_log_or_the_cookie(app, db, smtp, caplog):
    caplog.set_level(logging.DEBUG)
    responses: list = []
    group_pid = portal(db)
    group_row = scalar(app, text(f"SELECT id FROM bill_groups WHERE public_id = '{group_pid}'"))
    group_name = scalar(app, text(f"SELECT name FROM bill_groups WHERE id = {group_row}"))
    laptop = Recording(app.test_client(), responses)
    phone = Recording(app.test_client(), responses)
    elsewhere = Recording(app.test_client(), responses)

    # By link, in the laptop.
    ask(laptop, group_pid)
    path_a, code_a = latest(app, smtp)
    laptop.head(path_a)
    laptop.get(laptop.get(path_a).headers["Location"])
    laptop.get(laptop.get(f"/p/{group_pid}/verify/{secrets.token_urlsafe(32)}").headers["Location"])
    assert confirm(laptop, group_pid).headers["Location"] == urls(group_pid).overview
    assert laptop.get(urls(group_pid).overview).status_code == 200
    # By code, in the phone; its link opened elsewhere first.
    csrf = csrf_token(ask(phone, group_pid).text)
    path_b, code_b = latest(app, smtp)
    elsewhere.get(elsewhere.get(path_b).headers["Location"])
    assert type_code(phone, group_pid, wrong(code_b), csrf).status_code == 400
    signed_in = type_code(phone, group_pid, code_b, csrf)
    assert signed_in.headers["Location"] == urls(group_pid).overview
    phone.get(urls(group_pid).overview)

    sids = [session_of(app, c.client)["_user_id"].removeprefix("c:") for c in (laptop, phone)]
    assert all(len(sid) == 43 for sid in sids)
    secret_values = {
        "token a": token_of(path_a),
        "token b": token_of(path_b),
        "code a": code_a,
        "code a digits": code_a.replace("-", ""),
        "code b": code_b,
        "code b digits": code_b.replace("-", ""),
        "session id laptop": sids[0],
        "session id phone": sids[1],
    }

    cookies = []
    for response in responses:
        body = response.get_data(as_text=True)
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        for name, secret in secret_values.items():
            assert secret not in body, name
            assert secret not in headers, name
        cookies += [
            value.split("=", 1)[1].split(";", 1)[0]
            for value in response.headers.getlist("Set-Cookie")
            if value.startswith("session=") and not value.startswith("session=;")
        ]
    assert len(responses) > 12 and cookies

    with engine_of(app).connect() as connection:
        audit_rows = [str(tuple(row)) for row in connection.execute(select(AuditEvent))]
    assert len(audit_rows) >= 6
    for name, secret in secret_values.items():
        assert not [row for row in audit_rows if secret in row], name

    # mail.log is aiosmtpd, the test's SMTP server: the mailbox, which does get the email.
    records = [r for r in caplog.records if not r.name.startswith("mail.log")]
    assert any(r.name == "mail.log" and "/verify/" in r.getMessage() for r in caplog.records)
    logged = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}" for r in records
    )
    for name, secret in secret_values.items():
        assert secret not in logged, name

    # The (client-readable) session cookie says nothing about who or which bill group.
    for value in cookies + [c.client.get_cookie("session").value for c in (laptop, phone)]:
        data = json.dumps(cookie_session(app, value))
        for fact in (ADDRESS, "acme.com", group_pid, group_name):
            assert fact not in data
        assert not any(
            word in key
            for key in cookie_session(app, value)
            for word in ("email", "group", "bill", "address")
        )


def test_redact_and_the_filter_remove_tokens_from_access_log_lines(app):
    token = secrets.token_urlsafe(32)
    line = f'127.0.0.1 - - [21/Nov/2026 12:00:00] "GET /p/x/verify/{token} HTTP/1.1" 303 -'
    assert token not in redact(line)
    assert "/p/x/verify/[redacted] HTTP/1.1" in redact(line)
    assert redact(f"/p/x/verify/{token}?a=b") == "/p/x/verify/[redacted]?a=b"

    record = logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '%s - - "%s" %s %s',
        ("127.0.0.1", f"GET /p/x/verify/{token} HTTP/1.1", "303", "-"),
        None,
    )
    assert RedactTokens().filter(record) is True
    assert token not in record.getMessage()
    assert "/verify/[redacted]" in record.getMessage()
    for name in ("werkzeug", "gunicorn.access"):
        assert any(isinstance(f, RedactTokens) for f in logging.getLogger(name).filters)


def test_the_development_servers_access_log_never_shows_a_token(app, db, caplog):
    caplog.set_level(logging.INFO, logger="werkzeug")
    pid = portal(db)
    token = secrets.token_urlsafe(32)
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/p/{pid}/verify/{token}"
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as answer:
            assert answer.status == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    access = [r for r in caplog.records if r.name == "werkzeug"]
    assert any("/verify/[redacted]" in r.getMessage() for r in access)
    assert not any(token in r.getMessage() for r in access)


def test_gunicorns_access_log_atoms_are_redacted():
    from gunicorn.config import Config

    token = secrets.token_urlsafe(32)
    # atoms() reads nothing from the instance's configuration: skip gunicorn's setup,
    # which would attach handlers to the global gunicorn loggers.
    logger = object.__new__(GunicornLogger)
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"/p/x/verify/{token}",
        "PATH_INFO": f"/p/x/verify/{token}",
        "QUERY_STRING": f"next=/p/x/verify/{token}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.9",
    }
    resp = SimpleNamespace(status="303 See Other", sent=0, headers=[("Location", "/p/x/confirm")])
    req = SimpleNamespace(headers=[("HOST", "portal.example.test")])

    atoms = logger.atoms(resp, req, environ, dt.timedelta(milliseconds=7))

    for key in ("r", "U", "q"):
        assert token not in atoms[key]
        assert "/verify/[redacted]" in atoms[key]
    assert atoms["r"] == "GET /p/x/verify/[redacted] HTTP/1.1"
    assert token not in Config().access_log_format % atoms
