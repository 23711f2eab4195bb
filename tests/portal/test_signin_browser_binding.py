"""A sign-in link works only in the browser that asked; scanners never get a session."""

from __future__ import annotations

import hashlib
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from flask.testing import FlaskClient

from portal import signin
from portal.models import SignInChallenge
from tests.conftest import CODE_RE, Inbox, csrf_token, run_worker
from tests.portal.signin_helpers import (
    ADDRESS,
    asked,
    challenges,
    confirm,
    session_of,
    sessions_count,
    type_code,
    urls,
)

# --- 6. binding to the browser that asked ---------------------------------------------


def test_the_link_in_another_browser_spends_nothing_and_never_signs_in(app, client, db, smtp):
    pid, path, code = asked(app, client, db, smtp)
    other = app.test_client()

    opened = other.get(path)
    assert opened.status_code == 303
    assert opened.headers["Location"] == urls(pid).other
    page = other.get(urls(pid).other)
    assert "Open the link where you asked for it" in page.text
    csrf = csrf_token(page.text)
    assert (
        other.post(urls(pid).confirm, data={"csrf_token": csrf}).headers["Location"]
        == urls(pid).invalid
    )
    assert type_code(other, pid, code, csrf).status_code == 400
    assert sessions_count(app, pid) == 0
    [row] = challenges(app, pid)
    assert row.spent_at is None and row.code_attempts == 0
    # The spend itself is bound too, whatever the caller passes.
    with app.app_context():
        group = db.get(SignInChallenge, row.id).bill_group
        for nonce in (session_of(app, other)["nonce"], None, ""):
            assert signin.spend(db, row.id, group, nonce) is False
        db.rollback()

    assert client.get(path).headers["Location"] == urls(pid).confirm
    assert confirm(client, pid).headers["Location"] == urls(pid).overview


class Forms(HTMLParser):
    """Every form on a page: (method, action, {name: value}); and every link."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, str, dict[str, str]]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        attributes = dict(attrs)
        if tag == "form":
            method = (attributes.get("method") or "get").upper()
            self.forms.append((method, attributes.get("action") or "", {}))
        elif tag in ("input", "textarea", "button") and self.forms and attributes.get("name"):
            self.forms[-1][2][attributes["name"]] = attributes.get("value") or ""
        elif tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"])


def scan(client: FlaskClient, link: str, pid: str) -> list[tuple[str, str, int]]:
    """A mail scanner: HEAD and GET the link, follow every redirect and same-site link,
    submit every form it finds, then POST confirm with its own CSRF token."""
    done: list[tuple[str, str, int]] = []
    queue: list[tuple[str, str, dict[str, str] | None]] = [
        ("HEAD", link, None),
        ("GET", link, None),
    ]
    seen: set[tuple[str, str]] = set()
    csrf = None
    while queue and len(done) < 40:
        method, url, data = queue.pop(0)
        if (method, url) in seen and method != "HEAD":
            continue
        seen.add((method, url))
        response = client.open(url, method=method, data=data)
        done.append((method, url, response.status_code))
        if "Location" in response.headers:
            queue.append(("GET", urljoin(url, response.headers["Location"]), None))
            continue
        parser = Forms()
        parser.feed(response.get_data(as_text=True))
        for form_method, action, fields in parser.forms:
            csrf = fields.get("csrf_token", csrf)
            queue.append((form_method, urljoin(url, action) or url, fields))
        for href in parser.links:
            if urlsplit(href).netloc == "" and href.startswith(f"/p/{pid}"):
                queue.append(("GET", href, None))
    assert csrf, "the scanner found no form"
    confirmed = client.post(f"/p/{pid}/confirm", data={"csrf_token": csrf})
    done.append(("POST", f"/p/{pid}/confirm", confirmed.status_code))
    return done


def test_a_scanner_that_follows_and_submits_everything_never_gets_a_session(app, client, db, smtp):
    pid, path, _code = asked(app, client, db, smtp)
    scanner = app.test_client()

    visited = scan(scanner, path, pid)

    submitted = {(method, url) for method, url, _status in visited if method == "POST"}
    assert {("POST", f"/p/{pid}/resend"), ("POST", f"/p/{pid}/confirm")} <= submitted
    assert sessions_count(app, pid) == 0
    assert scanner.get(urls(pid).overview).status_code != 200
    assert all(row.spent_at is None for row in challenges(app, pid))
    assert "_user_id" not in session_of(app, scanner)

    assert client.get(path).headers["Location"] == urls(pid).confirm
    assert confirm(client, pid).headers["Location"] == urls(pid).overview
    assert sessions_count(app, pid) == 1


def code_only_mail(inbox: Inbox, address: str = ADDRESS) -> tuple[str, str, str]:
    """The newest email: its plain text, its HTML, and its code."""
    message = inbox.to(address)[-1]
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html, CODE_RE.search(text).group(1)


def test_a_scanner_that_also_scans_the_email_it_caused_gets_no_session(app, client, db, smtp):
    """The resend button sends a code, not a link: a scanner that keeps its cookies and
    reads the email it caused has nothing to follow."""
    pid, path, _code = asked(app, client, db, smtp)
    scanner = app.test_client()
    scan(scanner, path, pid)
    run_worker(app)
    assert len(smtp.to(ADDRESS)) == 2, "the scanner's resend sent no email"

    text, html, _code = code_only_mail(smtp)
    assert "/verify/" not in text and "/verify/" not in html
    assert 'href="http' not in html and "http" not in text
    assert sessions_count(app, pid) == 0
    assert client.get(path).headers["Location"] == urls(pid).confirm


def test_email_me_a_code_for_this_browser_signs_in_the_second_browser(app, client, db, smtp):
    pid, path1, _code1 = asked(app, client, db, smtp)
    phone = app.test_client()
    page = phone.get(phone.get(path1).headers["Location"])
    assert "Email me a code for this browser" in page.text

    resent = phone.post(f"/p/{pid}/resend", data={"csrf_token": csrf_token(page.text)})
    assert resent.status_code == 200 and "Check your email" in resent.text
    run_worker(app)
    _text, _html, code2 = code_only_mail(smtp)
    second = challenges(app, pid)[1]
    phone_nonce = session_of(app, phone)["nonce"]
    assert second.nonce_hash == hashlib.sha256(phone_nonce.encode()).hexdigest()

    # The code works only in the browser that pressed the button.
    refused = type_code(client, pid, code2, csrf_token(client.get(f"/p/{pid}").text))
    assert refused.status_code == 400
    signed_in = type_code(phone, pid, code2, csrf_token(resent.text))
    assert signed_in.headers["Location"] == urls(pid).overview
