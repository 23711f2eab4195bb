"""Control characters, DEL, lone surrogates and invalid UTF-8 in a path, query string or
form are refused before they reach the database or a header: 404 for an id, 400 for the
rest, the API's JSON error under /api, and no outage logged (on PostgreSQL a NUL in a
query parameter used to raise psycopg's DataError, which read as "database unavailable").
"""

from __future__ import annotations

import logging

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import hygiene
from portal.access import add_rule
from portal.models import BillGroup, Invoice, StaffRole
from tests.admin.conftest import PASSWORD, make_staff
from tests.api.conftest import make_key
from tests.conftest import csrf_token, sign_in
from tests.factories import make_bill_group, make_invoice

ADDRESS = "ap@acme.com"

# Percent-encoded, as a browser or curl would send them.
BAD_VALUES = {
    "nul": "%00",
    "nul-inside": "INV%00-1",
    "crlf": "%0D%0Ax",
    "tab": "a%09b",
    "escape": "%1B[31m",
    "del": "%7F",
    "c1": "%C2%85",  # NEL, U+0085
    "lone-surrogate": "%ED%A0%80",
    "invalid-utf8": "%FF%FE",
    "overlong-nul": "%C0%80",
}
GOOD_VALUES = ["INV-1", "%C3%A9t%C3%A9", "%E8%AB%8B%E6%B1%82", "a+b", "%F0%9F%98%80", ""]


@pytest.fixture
def group(db: Session) -> BillGroup:
    group = make_bill_group(db, name="Acme Europe")
    add_rule(db, group, "acme.com", created_by="test")
    make_invoice(db, group, number="INV-1")
    db.commit()
    return group


@pytest.fixture
def customer(app: Flask, client: FlaskClient, smtp, group: BillGroup) -> FlaskClient:
    response = sign_in(client, app, smtp, group.public_id, ADDRESS)
    assert response.status_code == 303, response.text
    return client


def no_outage(caplog: pytest.LogCaptureFixture) -> bool:
    return not any(
        record.levelno >= logging.ERROR or "database unavailable" in record.getMessage()
        for record in caplog.records
    )


# --- the checks themselves ---------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_VALUES)
def test_urlencoded_bad_values_are_unclean(name):
    raw = BAD_VALUES[name].encode()
    assert not hygiene.clean_urlencoded(b"number=" + raw)
    assert not hygiene.clean_urlencoded(raw + b"=1")  # in the name too


@pytest.mark.parametrize("value", GOOD_VALUES)
def test_ordinary_and_non_latin_values_are_clean(value):
    assert hygiene.clean_urlencoded(f"number={value}&status=open".encode())


def test_decoded_text_with_a_lone_surrogate_is_unclean():
    assert not hygiene.clean_text("abc\ud800")
    assert hygiene.clean_text("Zürich 東京 😀")


# --- through the app -----------------------------------------------------------------------


@pytest.mark.parametrize("segment", ["%00aaa", "aaa%0D%0A", "%ED%A0%80", "%FF", "a%7Fb"])
def test_a_bad_bill_group_id_answers_like_an_unknown_one(client, group, caplog, segment):
    unknown = client.get("/p/no-such-group-at-all")
    response = client.get(f"/p/{segment}aaaaaaaaaaaa")
    assert response.status_code == unknown.status_code == 404
    assert response.data == unknown.data
    assert no_outage(caplog)


@pytest.mark.parametrize("raw", [b"\xed\xa0\x80", b"\xff\xfe", b"\xc0\x80", b"\x00"])
def test_raw_invalid_utf8_in_the_path_is_a_404(client, group, caplog, raw):
    """What a WSGI server hands over for undecodable bytes (the test client would have
    replaced them with U+FFFD first): PEP 3333's Latin-1 string of the raw bytes."""
    path = (b"/p/" + raw + b"aaaaaaaaaaaa").decode("latin-1")
    response = client.get("/", environ_overrides={"PATH_INFO": path})
    assert response.status_code == 404
    assert b"This portal is not available" in response.data
    staff = client.get("/", environ_overrides={"PATH_INFO": "/admin/preview/" + path[3:]})
    assert staff.status_code == 404
    assert no_outage(caplog)


@pytest.mark.parametrize("name", BAD_VALUES)
def test_a_bad_invoice_filter_is_a_400_page(customer, group, caplog, name):
    response = customer.get(f"/p/{group.public_id}/invoices?number={BAD_VALUES[name]}")
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert b"control characters" in response.data
    assert b"Traceback" not in response.data
    assert no_outage(caplog)


@pytest.mark.parametrize("query", ["number=%00", "status=open%00", "from=2026-01-01%0A"])
def test_the_csv_download_with_a_bad_filter_is_refused_whole(customer, group, caplog, query):
    response = customer.get(f"/p/{group.public_id}/invoices.csv?{query}", buffered=True)
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "Content-Disposition" not in response.headers
    assert no_outage(caplog)


def test_the_csv_download_with_good_filters_still_works(customer, group):
    query = "number=INV-1&status=&from=&to="
    response = customer.get(f"/p/{group.public_id}/invoices.csv?{query}", buffered=True)
    assert response.status_code == 200
    assert "INV-1" in response.text
    search = customer.get(f"/p/{group.public_id}/invoices?number=%E8%AB%8B%E6%B1%82")
    assert search.status_code == 200


def test_a_form_post_with_a_nul_is_refused_before_it_is_read(client, group, smtp, caplog):
    page = client.get(f"/p/{group.public_id}")
    response = client.post(
        f"/p/{group.public_id}/sign-in",
        data={"csrf_token": csrf_token(page.text), "email": "ap\x00@acme.com"},
    )
    assert response.status_code == 400
    assert b"control characters" in response.data
    assert smtp.messages == []
    assert no_outage(caplog)


@pytest.mark.parametrize(
    "value", ["ap@acme.com\r\nBcc: x@evil.test", "ap@\tacme.com", "ap@acme.com\x7f"]
)
def test_a_one_line_form_value_with_a_line_break_or_control_is_refused_by_its_field(
    client, group, smtp, value
):
    """Not by the guard: the field says so next to itself and keeps what was typed."""
    page = client.get(f"/p/{group.public_id}")
    response = client.post(
        f"/p/{group.public_id}/sign-in",
        data={"csrf_token": csrf_token(page.text), "email": value},
    )
    assert response.status_code == 400
    assert "invisible or control characters" in response.text
    assert smtp.messages == []


def test_a_form_body_with_invalid_utf8_is_refused(client, group):
    page = client.get(f"/p/{group.public_id}")
    body = f"csrf_token={csrf_token(page.text)}&email=ap%FF%40acme.com"
    response = client.post(
        f"/p/{group.public_id}/sign-in",
        data=body,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400


def test_a_multipart_form_with_a_nul_is_refused(client, group):
    page = client.get(f"/p/{group.public_id}")
    response = client.post(
        f"/p/{group.public_id}/sign-in",
        data={"csrf_token": csrf_token(page.text), "email": "ap\x00@acme.com"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400


def test_a_clean_form_post_still_works(client, group, smtp):
    page = client.get(f"/p/{group.public_id}")
    response = client.post(
        f"/p/{group.public_id}/sign-in",
        data={"csrf_token": csrf_token(page.text), "email": ADDRESS},
    )
    assert response.status_code in (200, 303)


def test_staff_sign_in_with_a_crlf_next_does_not_sign_in(app, client, db, caplog):
    user = make_staff(db, StaffRole.ADMIN)
    page = client.get("/admin/sign-in?next=/admin/%0D%0Ax")
    assert page.status_code == 400
    good = client.get("/admin/sign-in")
    response = client.post(
        "/admin/sign-in?next=/admin/%0D%0Ax",
        data={"csrf_token": csrf_token(good.text), "email": user.email, "password": PASSWORD},
    )
    assert response.status_code == 400
    response = client.post(
        "/admin/sign-in",
        data={
            "csrf_token": csrf_token(good.text),
            "email": user.email,
            "password": PASSWORD,
            "next": "/admin/\r\nx",
        },
    )
    assert response.status_code == 400
    assert "Set-Cookie" not in response.headers or "staff" not in response.headers["Set-Cookie"]
    assert client.get("/admin/").status_code != 200  # not signed in
    assert no_outage(caplog)


@pytest.mark.parametrize("query", ["bill_group=%00", "cursor=%00", "updated_since=%0A", "x=%FF"])
def test_an_api_query_with_a_control_is_the_apis_json_400(app, client, caplog, query):
    key = make_key(app)
    response = client.get(f"/api/v1/invoices?{query}", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "bad_request"
    assert "control characters" in response.json["error"]["message"]
    assert no_outage(caplog)


def test_an_api_id_with_a_nul_is_the_apis_json_404(app, client, caplog):
    key = make_key(app)
    response = client.get("/api/v1/bill-groups/%00x", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"
    assert no_outage(caplog)


def test_the_refusal_never_echoes_the_value(customer, group, caplog):
    caplog.set_level(logging.INFO)
    response = customer.get(f"/p/{group.public_id}/invoices?number=secret%00value")
    assert response.status_code == 400
    assert b"secret" not in response.data
    assert "secret" not in caplog.text


@pytest.mark.parametrize("number", [str(2**31), str(2**63), "9" * 400])
def test_a_huge_invoice_id_is_a_404_not_an_outage(customer, group, caplog, number):
    for suffix in ("", ".pdf"):
        response = customer.get(f"/p/{group.public_id}/invoices/{number}{suffix}")
        assert response.status_code == 404
    assert no_outage(caplog)


# Werkzeug's <int:> took every Unicode digit ("١" was id 1) and any size; the portal's
# IdConverter takes ASCII digits up to BIGINT, for every face.
ODD_IDS = ["%D9%A1", "%EF%BC%91", "%C2%B9", str(2**63), "-1", "%2B1", "%201", "1.0", "1e309"]


@pytest.mark.parametrize("spelling", ODD_IDS)
def test_an_invoice_id_in_any_other_spelling_is_a_404(customer, group, db, caplog, spelling):
    invoice_id = db.scalar(select(Invoice.id).where(Invoice.bill_group_id == group.id))
    assert invoice_id == 1  # so that the spellings above would all have meant it
    assert customer.get(f"/p/{group.public_id}/invoices/1").status_code == 200
    for suffix in ("", ".pdf"):
        response = customer.get(f"/p/{group.public_id}/invoices/{spelling}{suffix}")
        assert response.status_code == 404
        assert "Traceback" not in response.text
    assert no_outage(caplog)


@pytest.mark.parametrize("spelling", ODD_IDS)
def test_a_staff_page_id_in_any_other_spelling_is_a_404(client, db, group, caplog, spelling):
    user = make_staff(db, StaffRole.ADMIN)
    good = client.get("/admin/sign-in")
    client.post(
        "/admin/sign-in",
        data={"csrf_token": csrf_token(good.text), "email": user.email, "password": PASSWORD},
    )
    assert client.get(f"/admin/bill-groups/{group.id}").status_code == 200
    for path in ("/admin/bill-groups/{}", "/admin/bill-groups/{}/audit", "/admin/staff/{}/edit"):
        response = client.get(path.format(spelling))
        assert response.status_code == 404, path
        assert "<h1>" in response.text
    assert no_outage(caplog)
