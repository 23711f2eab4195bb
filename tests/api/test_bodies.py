"""Bodies framed every way a client can frame them (portal/bodies.py): chunked with or
without a Content-Length, a Content-Length larger or smaller than the body, gzip, no
body at all, to the API and to the HTML forms, through the test client and over a raw
socket to a real server (the test client does not frame a body as a server does).
A body over MAX_CONTENT_LENGTH is a 413 however it comes; nothing is half-written."""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from werkzeug.serving import make_server

from portal.models import AccessRule, Account, AuditEvent, StaffRole
from tests.admin.conftest import make_staff, staff_sign_in
from tests.api.conftest import PREFIX, make_key
from tests.conftest import csrf_token, free_port
from tests.factories import make_bill_group

MIB = 1024 * 1024
# "A 2 MiB body of a name followed by spaces": valid JSON when cut at 1 MiB.
PADDED = b'{"name": "Acme"}' + b" " * (2 * MIB)
SMALL = b'{"name": "Acme"}'


def accounts(db: Any) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(Account)) or 0


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert set(body) == {"error"} and {"code", "message", "field"} <= set(body["error"])
    return dict(body["error"])


def chunked(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def as_server_dechunks(body: bytes) -> dict[str, Any]:
    """Test-client arguments for a chunked body as gunicorn hands it over: no
    Content-Length, the stream already de-chunked and terminated."""
    return {
        "input_stream": io.BytesIO(body),
        "headers": {"Transfer-Encoding": "chunked"},
        "environ_overrides": {"wsgi.input_terminated": True},
    }


def put_account(api: Any, **kwargs: Any) -> Any:
    """PUT /accounts/acc-1 as JSON, framed as `kwargs` say."""
    kwargs.setdefault("content_type", "application/json")
    return api.request("PUT", "/accounts/acc-1", **kwargs)


# --- the test client ------------------------------------------------------------------------


def test_a_chunked_body_over_the_limit_is_a_413_not_cut_and_accepted(db, api):
    response = put_account(api, **as_server_dechunks(PADDED))
    assert error_of(response, 413)["code"] == "too_large"
    assert accounts(db) == 0


def test_a_chunked_body_within_the_limit_is_read_whole(db, api):
    body = b'{"name": "Acme"}' + b" " * (MIB - 100)
    response = put_account(api, **as_server_dechunks(body))
    assert response.status_code == 201, response.get_json()
    assert accounts(db) == 1


@pytest.mark.parametrize(
    ("length", "words"),
    [("100", "ended before it was complete"), ("5", "not valid JSON")],
    ids=["larger-than-the-body", "smaller-than-the-body"],
)
def test_a_content_length_that_is_not_the_body_s_is_a_400(db, api, length, words):
    """Larger: the client stopped early. Smaller: the body is read to the length only."""
    response = put_account(
        api, input_stream=io.BytesIO(SMALL), environ_overrides={"CONTENT_LENGTH": length}
    )
    assert words in error_of(response, 400)["message"]
    assert accounts(db) == 0


def test_a_content_length_over_the_limit_is_a_413_on_any_route(db, api):
    response = put_account(api, data=b" " * (MIB + 1))
    assert error_of(response, 413)["code"] == "too_large"
    # Even where the view would never read it.
    response = api.client.get(
        PREFIX + "/accounts",
        data=b"x" * (MIB + 1),
        headers={"Authorization": f"Bearer {api.key}"},
    )
    assert error_of(response, 413)["code"] == "too_large"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "gzip, identity"])
def test_a_compressed_body_is_a_415(db, api, coding):
    response = put_account(api, data=gzip.compress(SMALL), headers={"Content-Encoding": coding})
    error = error_of(response, 415)
    assert error["code"] == "unsupported_media_type" and "uncompressed" in error["message"]
    assert accounts(db) == 0


def test_content_encoding_identity_is_no_encoding(db, api):
    response = put_account(api, data=SMALL, headers={"Content-Encoding": "identity"})
    assert response.status_code == 201


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_a_415(db, api, content_type):
    response = put_account(api, data=SMALL, content_type=content_type)
    assert error_of(response, 415)["code"] == "unsupported_media_type"
    assert accounts(db) == 0


@pytest.mark.parametrize("body", [b"", b"   ", b"\r\n"])
def test_an_empty_body_is_a_400_that_says_so(db, api, body):
    response = put_account(api, data=body)
    assert error_of(response, 400)["message"] == (
        "The body is empty: send the record as a JSON object."
    )
    assert accounts(db) == 0


# --- the HTML forms -----------------------------------------------------------------------


@pytest.fixture
def forms(app: Flask, db: Any) -> dict[str, Any]:
    """The customer sign-in form and a signed-in staff form, with their CSRF tokens."""
    group = make_bill_group(db)
    db.commit()
    customer = app.test_client()
    page = customer.get(f"/p/{group.public_id}")
    make_staff(db, StaffRole.ADMIN, "admin@staff.example.com")
    staff = app.test_client()
    assert staff_sign_in(staff, "admin@staff.example.com").status_code == 303
    access = f"/admin/bill-groups/{group.id}/access"
    return {
        "customer": (customer, f"/p/{group.public_id}/sign-in", csrf_token(page.text)),
        "staff-sign-in": (app.test_client(), "/admin/sign-in", None),
        "staff": (staff, access + "/domains", csrf_token(staff.get(access).text)),
    }


def form_body(token: str | None, padding: int) -> bytes:
    fields = f"csrf_token={token or ''}&email=ap%40acme.com&domain=acme.com&password="
    return fields.encode() + b"x" * padding


def page_of(response: Any, status: int) -> str:
    assert response.status_code == status, response.text[:300]
    assert response.mimetype == "text/html"
    assert "<h1>" in response.text and "Traceback" not in response.text
    return str(response.text)


@pytest.mark.parametrize("face", ["customer", "staff-sign-in", "staff"])
def test_a_chunked_form_over_the_limit_is_a_413_page(db, forms, face):
    client, url, token = forms[face]
    response = client.post(
        url,
        content_type="application/x-www-form-urlencoded",
        **as_server_dechunks(form_body(token, 2 * MIB)),
    )
    assert "That was too large" in page_of(response, 413)
    assert db.scalar(select(func.count()).select_from(AccessRule)) == 0


@pytest.mark.parametrize("face", ["customer", "staff-sign-in", "staff"])
def test_a_form_cut_short_or_compressed_is_refused_with_a_page(db, forms, face):
    client, url, token = forms[face]
    body = form_body(token, 0)
    short = client.post(
        url,
        input_stream=io.BytesIO(body),
        content_type="application/x-www-form-urlencoded",
        environ_overrides={"CONTENT_LENGTH": str(len(body) + 10)},
    )
    page_of(short, 400)
    squeezed = client.post(
        url,
        data=gzip.compress(body),
        content_type="application/x-www-form-urlencoded",
        headers={"Content-Encoding": "gzip"},
    )
    page_of(squeezed, 415)
    assert db.scalar(select(func.count()).select_from(AccessRule)) == 0
    assert (
        db.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action.like("access%"))
        )
        == 0
    )


def test_an_empty_form_post_is_the_expired_form_page(forms):
    client, url, _token = forms["customer"]
    response = client.post(url, data=b"", content_type="application/x-www-form-urlencoded")
    assert "This form has expired" in page_of(response, 400)


# --- real servers, over a raw socket ----------------------------------------------------------


def exchange(port: int, head: bytes, body: Iterator[bytes] | bytes, *, half_close=False) -> Any:
    """Send one request (chunks framed as chunks), read the answer to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"\r\n")
        if isinstance(body, bytes):
            sock.sendall(body)
        else:
            for part in body:
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            sock.sendall(b"0\r\n\r\n")
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, content = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), headers.decode("latin-1").lower(), content


def api_head(method: str, path: str, key: str, *lines: str) -> bytes:
    return "\r\n".join(
        [
            f"{method} {PREFIX}{path} HTTP/1.1",
            "Host: 127.0.0.1",
            f"Authorization: Bearer {key}",
            "Content-Type: application/json",
            "Connection: close",
            *lines,
            "",
        ]
    ).encode()


@pytest.fixture
def werkzeug_port(app: Flask) -> Iterator[int]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_development_server_refuses_every_odd_framing(app, db, werkzeug_port):
    key = make_key(app)
    port = werkzeug_port
    status, _, content = exchange(
        port, api_head("PUT", "/accounts/a-1", key, "Transfer-Encoding: chunked"), chunked(PADDED)
    )
    assert status == 413 and json.loads(content)["error"]["code"] == "too_large"
    status, _, _ = exchange(
        port, api_head("PUT", "/accounts/a-2", key, "Transfer-Encoding: chunked"), chunked(SMALL)
    )
    assert status == 201
    # Both framings: the chunks count, not the length (RFC 9112 6.3).
    both = api_head("PUT", "/accounts/a-2", key, "Transfer-Encoding: chunked", "Content-Length: 5")
    status, _, content = exchange(port, both, chunked(b'{"name": "Acme Two"}'))
    assert status == 200 and json.loads(content)["name"] == "Acme Two"
    status, _, content = exchange(
        port,
        api_head("PUT", "/accounts/a-3", key, "Content-Length: 100"),
        SMALL,
        half_close=True,  # the client stops sending: the body ends 84 bytes early
    )
    assert status == 400 and b"ended before it was complete" in content
    packed = gzip.compress(SMALL)
    status, _, content = exchange(
        port,
        api_head(
            "PUT", "/accounts/a-4", key, "Content-Encoding: gzip", f"Content-Length: {len(packed)}"
        ),
        packed,
    )
    assert status == 415 and json.loads(content)["error"]["code"] == "unsupported_media_type"
    head = (
        b"POST /admin/sign-in HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"
    )
    status, headers, content = exchange(port, head, chunked(form_body(None, 2 * MIB)))
    assert status == 413 and "text/html" in headers and b"That was too large" in content
    db.expire_all()
    assert db.scalars(select(Account.external_id)).all() == ["a-2"]


GUNICORN_START_S = 60


@pytest.fixture
def gunicorn_port(app: Flask, database_url: str, tmp_path) -> Iterator[int]:
    """The app under gunicorn (one worker), on this test's database."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "FLASK_"))}
    env |= {
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_SECRET_KEY": "bodies-test-secret-key-" + "k" * 20,
        "PORTAL_BASE_URL": f"http://127.0.0.1:{port}",
        "FLASK_DEBUG": "1",  # local development: no https base URL needed
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}"]
        + ["--workers", "1", "--timeout", "60"],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + GUNICORN_START_S
    try:
        while True:
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, "gunicorn did not start"
            try:
                with direct.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def test_gunicorn_answers_a_chunked_body_over_the_limit_with_a_413(app, db, gunicorn_port):
    key = make_key(app)
    chunked_put = api_head("PUT", "/accounts/a-1", key, "Transfer-Encoding: chunked")
    status, headers, content = exchange(gunicorn_port, chunked_put, chunked(PADDED))
    assert status == 413, content[:300]
    assert "application/json" in headers
    assert json.loads(content)["error"]["code"] == "too_large"
    status, _, content = exchange(
        gunicorn_port,
        api_head("PUT", "/accounts/a-2", key, "Content-Length: 100"),
        SMALL,
        half_close=True,
    )
    assert status == 400 and b"ended before it was complete" in content
    status, _, _ = exchange(
        gunicorn_port,
        api_head("PUT", "/accounts/a-3", key, "Transfer-Encoding: chunked"),
        chunked(SMALL),
    )
    assert status == 201
    # Both framings: gunicorn itself refuses the request (its own 400, before the app).
    both = api_head("PUT", "/accounts/a-4", key, "Transfer-Encoding: chunked", "Content-Length: 5")
    status, _, _ = exchange(gunicorn_port, both, chunked(SMALL))
    assert status == 400
    db.expire_all()
    assert db.scalars(select(Account.external_id)).all() == ["a-3"]
