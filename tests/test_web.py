"""What every response gets: the security headers, and error pages without tracebacks."""

from __future__ import annotations

import pytest

from portal.app import create_app
from portal.web import CSP
from tests.conftest import TEST_CONFIG, production_app
from tests.factories import make_entity

EXPECTED_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "object-src 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
}


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/healthz",
        "/no-such-page",
        "/static/portal.css",
        "/static/favicon.svg",
        "/favicon.ico",
        "/robots.txt",
        "/admin/sign-in",
        "/admin/",
        "/p/no-such-portal-link",
        "/p/no-such-portal-link/invoices",
        "/api/v1/accounts",
        "/api/v1/openapi.json",
        "/?q=%00",
    ],
)
def test_security_headers_on_every_response(client, path):
    response = client.get(path)
    response.close()  # static files are streamed from an open file
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers[name] == value, name
    assert CSP == EXPECTED_HEADERS["Content-Security-Policy"]


def test_hsts_outside_local_development(tmp_path):
    app = production_app(tmp_path)
    response = app.test_client().get("/", headers={"Host": "billing.example.com"})
    assert response.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"


def test_no_hsts_in_local_development(client):
    assert "Strict-Transport-Security" not in client.get("/").headers


def test_not_found_is_a_page_not_a_traceback(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert b"Page not found" in response.data


def test_method_not_allowed_says_which_methods(client):
    response = client.post("/healthz")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]


def test_unexpected_errors_show_no_traceback(app, caplog):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert b"Something went wrong" in response.data
    assert b"secret internal detail" not in response.data
    assert b"Traceback" not in response.data
    assert "secret internal detail" in caplog.text  # logged for us, not shown to them


def test_database_down_is_a_503_page(tmp_path):
    # Nothing listens on port 1: every connection attempt is refused at once.
    app = create_app(
        {**TEST_CONFIG, "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none"}
    )
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert b"The service is unavailable" in response.data
    assert b"Traceback" not in response.data
    assert b"psycopg" not in response.data


def test_health_check_answers_when_the_database_does(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_entity_logo_is_served_by_the_app(client, db):
    entity = make_entity(db, logo=b"\x89PNG\r\n\x1a\nfake", logo_type="image/png")
    no_logo = make_entity(db)
    db.commit()
    response = client.get(f"/brand/{entity.id}/logo")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert response.data.startswith(b"\x89PNG")
    assert client.get(f"/brand/{no_logo.id}/logo").status_code == 404
    assert client.get("/brand/999999/logo").status_code == 404


def test_error_responses_are_not_for_search_engines_either(app, client):
    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    for response in (client.get("/boom"), client.post("/healthz"), client.get("/p/%00x")):
        assert response.status_code in (404, 405, 500)
        assert response.headers["X-Robots-Tag"] == "noindex, nofollow"
    down = create_app(
        {**TEST_CONFIG, "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none"}
    )
    for path in ("/healthz", "/api/v1/accounts"):
        response = down.test_client().get(path, headers={"Authorization": "Bearer bp_" + "C" * 43})
        assert response.status_code == 503
        assert response.headers["X-Robots-Tag"] == "noindex, nofollow"


def test_robots_txt_disallows_everything(client):
    response = client.get("/robots.txt")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.text.splitlines() == ["User-agent: *", "Disallow: /"]


def test_the_favicon_is_served_by_the_app(client):
    response = client.get("/favicon.ico", buffered=True)
    assert response.status_code == 200
    assert response.mimetype in ("image/vnd.microsoft.icon", "image/x-icon")
    assert response.data[:4] == b"\x00\x00\x01\x00"  # an ICO header, one image
    assert b"\x89PNG" in response.data
    svg = client.get("/static/favicon.svg", buffered=True)
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    assert b"<script" not in svg.data


@pytest.mark.parametrize("path", ["/", "/admin/sign-in", "/p/no-such-portal-link"])
def test_every_page_links_the_icon_and_says_noindex(client, path):
    page = client.get(path).text
    assert '<meta name="robots" content="noindex, nofollow">' in page
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
