"""Sign-in `next` stays on same-site paths of the bill group; links come from PORTAL_BASE_URL."""

from __future__ import annotations

import re

import pytest
from flask import request

from portal import hygiene, signin
from tests.conftest import link_and_code, run_worker
from tests.portal.signin_helpers import (
    ADDRESS,
    ask,
    challenges,
    confirm,
    latest,
    portal,
    urls,
)

# --- 9. `next`: same-site paths in this bill group only --------------------------------

OPEN_REDIRECTS = [
    "//evil.com",
    "///evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "https://evil.com",
    "http:evil.com",
    "javascript:alert(1)",
    "/p/{pid}/../../evil",
    "/p/{pid}/..",
    "/p/{pid}/%2e%2e/%2e%2e/evil",
    "/p/{pid}/.%2E/{other}/overview",
    "%2F%2Fevil.com",
    "/p/{other}/overview",
    "/p/{pid}/overview\r\nLocation: x",
    " /p/{pid}/overview",
    "\t/p/{pid}/overview",
    "\n/p/{pid}/overview",
    "https://evil.com/p/{pid}/overview",
    "//evil.com/p/{pid}/overview",
    "/p/{pid}@evil.com/",
    "/p/{pid}/\\\\evil.com",
]


def _payload(template: str, pid: str, other: str) -> str:
    return template.replace("{pid}", pid).replace("{other}", other)


@pytest.mark.parametrize("template", OPEN_REDIRECTS)
def test_safe_next_refuses_every_redirect_outside_the_bill_group(template):
    pid, other = "abcdefghij12", "zyxwvutsrq98"
    assert signin.safe_next(_payload(template, pid, other), pid) is None


@pytest.mark.parametrize("valid", ["/p/{pid}/overview", "/p/{pid}/overview?tab=invoices"])
def test_safe_next_keeps_a_path_in_the_bill_group(valid):
    pid = "abcdefghij12"
    assert signin.safe_next(_payload(valid, pid, ""), pid) == _payload(valid, pid, "")


@pytest.mark.parametrize("template", OPEN_REDIRECTS)
def test_after_sign_in_a_hostile_next_lands_on_the_overview(app, client, db, smtp, template):
    pid, other = portal(db), portal(db)
    payload = _payload(template, pid, other)
    if not hygiene.clean_text(payload):
        # Control characters in a query string are refused before any view (portal.web).
        assert client.get(f"/p/{pid}", query_string={"next": payload}).status_code == 400
        assert challenges(app, pid) == []
        return
    ask(client, pid, next_path=payload)
    path, _code = latest(app, smtp)
    client.get(path)

    response = confirm(client, pid)

    assert response.status_code == 303
    assert response.headers["Location"] == urls(pid).overview
    assert challenges(app, pid)[0].next_path is None


def test_after_sign_in_a_next_in_the_bill_group_is_honoured(app, client, db, smtp):
    pid = portal(db)
    target = f"/p/{pid}/overview?tab=invoices"
    ask(client, pid, next_path=target)
    path, _code = latest(app, smtp)
    client.get(path)

    response = confirm(client, pid)

    assert response.headers["Location"] == target


# --- 10. links come from PORTAL_BASE_URL only ------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},
        {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"},
        {
            "Host": "evil.example",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "http",
            "Forwarded": "for=203.0.113.9;host=evil.example;proto=http",
        },
    ],
    ids=["host", "x-forwarded", "all"],
)
def test_the_emailed_link_uses_portal_base_url_whatever_the_host_header(app, db, smtp, headers):
    hosts: list[str] = []
    app.before_request(lambda: hosts.append(request.host))
    pid = portal(db)
    browser = app.test_client()

    ask(browser, pid, headers=headers)

    assert "Host" not in headers or hosts[-1] == "evil.example"  # the app took the Host
    run_worker(app)
    [message] = smtp.to(ADDRESS)
    for part in ("plain", "html"):
        body = message.get_body(preferencelist=(part,)).get_content()
        found = re.findall(r"https?://[^\s\"'<>]+", body)
        assert found, part
        assert all(url.startswith("https://portal.example.test/p/") for url in found), found
        assert "evil.example" not in body
    path, _code = link_and_code(message)
    assert path.startswith(f"/p/{pid}/verify/")
