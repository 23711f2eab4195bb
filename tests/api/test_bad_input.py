"""Inputs that used to answer 500, and their neighbours: each is a 400, 404 or 422 in
the documented error shape ({"error": {"code", "message", "field"}}), with nothing
written. The `api` client checks every answer against the OpenAPI document too."""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.request
from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from portal.models import AccessRule, Account, AuditEvent
from tests.api.conftest import BILLING_CONTACT, PREFIX, Api, invoice_body, push_bill_group
from tests.conftest import sign_in

# Integers as people and programs mistype them, percent-encoded for a path or query.
ODD_INTEGERS = {
    "2**63": str(2**63),
    "-1": "-1",
    "arabic-indic": "%D9%A1%D9%A2",  # "١٢": str.isdigit() and int() take it as 12
    "superscript": "%C2%B2",  # "²": str.isdigit() is true, int() refuses it
    "plus": "%2B5",
    "space": "%205",
    "decimal": "5.0",
    "1e309": "1e309",
    "5000-digits": "9" * 5000,  # int() refuses more than 4,300 digits
}


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "field"} <= set(body["error"]), body
    assert "Traceback" not in body["error"]["message"]
    return dict(body["error"])


def raw_put(api: Api, url: str, text: str | bytes) -> Any:
    return api.request("PUT", url, data=text, content_type="application/json")


def written(db: Any) -> int:
    return db.scalar(select(func.count()).select_from(AuditEvent)) or 0


# --- ids in paths -------------------------------------------------------------------------


@pytest.fixture
def rule_id(db: Any, api: Api) -> int:
    push_bill_group(api)
    created = api.post("/bill-groups/bg-1/access-rules", {"value": "acme.com"})
    assert created.status_code == 201, created.get_json()
    return int(created.get_json()["id"])


def test_deleting_an_access_rule_beyond_bigint_is_a_404(db, api, rule_id):
    response = api.delete("/bill-groups/bg-1/access-rules/9223372036854775808")
    assert error_of(response, 404)["code"] == "not_found"
    assert db.scalar(select(func.count()).select_from(AccessRule)) == 1


@pytest.mark.parametrize("spelling", [*ODD_INTEGERS.values(), "0", "%EF%BC%91"])
def test_every_odd_spelling_of_a_rule_id_is_a_404(db, api, rule_id, spelling):
    response = api.delete(f"/bill-groups/bg-1/access-rules/{spelling}")
    assert error_of(response, 404)["code"] == "not_found"
    assert db.scalar(select(func.count()).select_from(AccessRule)) == 1


def test_a_rule_id_in_other_digits_is_not_a_second_name_for_the_rule(db, api, rule_id):
    """Werkzeug's <int:> took any Unicode digit: DELETE .../١ deleted rule 1."""
    other_digits = "".join(chr(0x0660 + int(d)) for d in str(rule_id))  # Arabic-Indic
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in str(rule_id))
    for spelling in (other_digits, fullwidth):
        assert api.delete(f"/bill-groups/bg-1/access-rules/{spelling}").status_code == 404
    assert db.scalar(select(func.count()).select_from(AccessRule)) == 1
    assert api.delete(f"/bill-groups/bg-1/access-rules/{rule_id}").status_code == 204


# --- integer and time query parameters ------------------------------------------------------


@pytest.mark.parametrize("raw", ["²", "%C2%B2"], ids=["literal", "encoded"])
def test_a_superscript_limit_is_a_400(api, raw):
    error = error_of(api.get(f"/accounts?limit={raw}"), 400)
    assert error == {
        "code": "bad_request",
        "field": "limit",
        "message": "limit must be a whole number from 1 to 200.",
    }


@pytest.mark.parametrize("spelling", [*ODD_INTEGERS.values(), "0", "201"], ids=str)
def test_every_odd_limit_is_a_400(api, spelling):
    assert error_of(api.get(f"/accounts?limit={spelling}"), 400)["field"] == "limit"


def test_plain_limits_still_work(api):
    for number in range(3):
        api.put(f"/accounts/acc-{number}", {"name": f"Account {number}"})
    assert len(api.get("/accounts?limit=2").get_json()["data"]) == 2
    assert len(api.get("/accounts?limit=002").get_json()["data"]) == 2
    assert len(api.get("/accounts?limit=200").get_json()["data"]) == 3


@pytest.mark.parametrize(
    "stamp", ["0001-01-01T00:00:00%2B01:00", "9999-12-31T23:59:59-01:00"], ids=["year-0", "10000"]
)
def test_updated_since_outside_the_calendar_in_utc_is_a_400(api, stamp):
    error = error_of(api.get(f"/accounts?updated_since={stamp}"), 400)
    assert error["field"] == "updated_since"
    assert "outside the years 1 to 9999" in error["message"]


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-12-31T23:59:60Z",  # a leap second: Python has no such time
        "2026-11-01T00:00:00%2B24:00",
        "2026-11-01T00:00:00",
        "2026-11-01",
        "%D9%A2%D9%A0%D9%A2%D9%A6-11-01T00:00:00Z",  # Arabic-Indic digits
    ],
)
def test_other_odd_times_are_a_400(api, stamp):
    assert error_of(api.get(f"/accounts?updated_since={stamp}"), 400)["field"] == "updated_since"


def test_z_and_every_spelling_of_utc_mean_the_same(api):
    api.put("/accounts/acc-1", {"name": "Acme"})
    expected = api.get("/accounts?updated_since=2026-01-01T00:00:00Z").get_json()
    assert len(expected["data"]) == 1
    for stamp in (
        "2026-01-01T00:00:00%2B00:00",
        "2026-01-01T00:00:00+00:00",  # an unencoded "+" arrives as a space
        "2026-01-01T00:00:00-00:00",
        "2026-01-01T01:30:00%2B01:30",
        "2025-12-31T00:00:01-23:59:59",
    ):
        assert api.get(f"/accounts?updated_since={stamp}").get_json() == expected, stamp
    # The calendar's edges themselves are fine.
    assert len(api.get("/accounts?updated_since=0001-01-01T00:00:00Z").get_json()["data"]) == 1
    assert api.get("/accounts?updated_since=9999-12-31T23:59:59Z").get_json()["data"] == []


def crafted_cursor(row_id: object) -> str:
    """A cursor as this API writes them (base64url of [change_seq, id]) with any id."""
    raw = f"[0, {json.dumps(row_id)}]".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("row_id", [99999999999999999999, 2**63, 0, -1, True, 1.5, "1"])
def test_a_crafted_cursor_with_an_impossible_id_is_a_400(api, row_id):
    error = error_of(api.get(f"/accounts?cursor={crafted_cursor(row_id)}"), 400)
    assert error["field"] == "cursor"


def test_a_crafted_cursor_with_a_possible_id_is_followed(api):
    """So that the test above fails if the cursor's encoding changes under it."""
    api.put("/accounts/acc-1", {"name": "Acme"})
    response = api.get(f"/accounts?cursor={crafted_cursor(1)}")
    assert response.status_code == 200
    assert [row["external_id"] for row in response.get_json()["data"]] == ["acc-1"]


# --- bodies ---------------------------------------------------------------------------------


def test_a_lone_surrogate_in_a_name_is_a_400_naming_the_field(db, api):
    response = api.put("/accounts/acc-1", {"name": "Acme \udc00"})
    error = error_of(response, 400)
    assert error["field"] == "name" and "lone surrogate" in error["message"]
    assert db.scalar(select(func.count()).select_from(Account)) == 0
    assert written(db) == 0


@pytest.mark.parametrize("field", ["name", "line1", "city", "email"])
def test_a_lone_surrogate_in_a_contact_field_is_a_400(db, api, field):
    push_bill_group(api)
    before = written(db)
    response = api.put("/bill-groups/bg-1/contacts/shipping", BILLING_CONTACT | {field: "x\udc00"})
    assert error_of(response, 400)["field"] == field
    assert api.get("/bill-groups/bg-1/contacts/shipping").status_code == 404
    assert written(db) == before


@pytest.mark.parametrize(
    "url",
    ["/accounts/acc-1", "/bill-groups/bg-1/contacts/shipping", "/invoices/inv-9"],
)
def test_deeply_nested_json_is_a_400_on_every_write(db, api, url):
    push_bill_group(api)
    before = written(db)
    for raw in ("[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
        error = error_of(raw_put(api, url, raw), 400)
        assert "nests deeper than 32 levels" in error["message"]
    rules = "/bill-groups/bg-1/access-rules"
    response = api.request("POST", rules, data="[" * 100_000, content_type="application/json")
    assert error_of(response, 400)["code"] == "bad_request"
    assert written(db) == before


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ('{"name": NaN}', "NaN is not a JSON number"),
        ('{"name": Infinity}', "Infinity is not a JSON number"),
        ('{"name": -Infinity}', "-Infinity is not a JSON number"),
        ('{"name": 1e309}', "too large"),
        ('{"name": "Acme", "name": "Acme Holdings"}', "'name' appears twice"),
        ('{"name": "Acme", "x": {"k": 1, "k": 2}}', "'k' appears twice"),
    ],
)
def test_what_python_reads_but_json_does_not_have_is_a_400(db, api, raw, words):
    error = error_of(raw_put(api, "/accounts/acc-1", raw), 400)
    assert error["code"] == "bad_request"
    assert words in error["message"]
    assert db.scalar(select(func.count()).select_from(Account)) == 0


def test_nan_in_a_money_field_is_refused_by_the_parser_not_the_schema(db, api):
    push_bill_group(api)
    raw = json.dumps(invoice_body("INV-2")).replace('"tax_minor": 6900', '"tax_minor": NaN')
    assert "NaN" in raw
    error = error_of(raw_put(api, "/invoices/inv-2", raw), 400)
    assert "NaN is not a JSON number" in error["message"]
    assert api.get("/invoices/inv-2").status_code == 404


PAYMENT = {"bill_group": "bg-1", "amount_minor": 100, "currency": "EUR", "status": "succeeded"}


@pytest.mark.parametrize(
    ("when", "words"),
    [
        ("0001-01-01T00:00:00+01:00", "outside the years 1 to 9999"),
        ("9999-12-31T23:59:59-01:00", "outside the years 1 to 9999"),
        ("2026-12-31T23:59:60Z", "received_at: Input should be a valid datetime"),  # leap second
        ("2026-11-20T10:00:00+24:00", "received_at: Input should be a valid datetime"),
        ("2026-11-20T10:00:00", "needs a time zone"),
    ],
    ids=["year-0", "year-10000", "leap-second", "offset-24h", "no-zone"],
)
def test_a_payment_time_that_is_no_time_in_utc_is_a_422(db, api, when, words):
    push_bill_group(api)
    payment = PAYMENT | {"received_at": when}
    error = error_of(api.put("/payments/pay-1", payment), 422)
    assert error["field"] in ("received_at", None)
    assert words in error["message"]
    assert api.get("/payments/pay-1").status_code == 404


def test_every_spelling_of_a_payment_time_is_stored_as_the_same_utc_time(api):
    push_bill_group(api)
    stored = api.put("/payments/pay-1", PAYMENT | {"received_at": "2026-11-20T10:00:00-23:59"})
    assert stored.status_code == 201
    assert stored.get_json()["received_at"] == "2026-11-21T09:59:00Z"
    for when in ("2026-11-21T09:59:00Z", "2026-11-21T09:59:00+00:00", "2026-11-21T11:29:00+01:30"):
        again = api.put("/payments/pay-1", PAYMENT | {"received_at": when})
        assert again.status_code == 200, when
        assert again.get_json()["received_at"] == "2026-11-21T09:59:00Z"


@pytest.mark.parametrize("quantity", ["١٢", "+5", " 5", "5 ", "1e3", "5_0", "٥.5", "0x10", ""])
def test_a_quantity_is_written_one_way_only(db, api, quantity):
    push_bill_group(api)
    line = invoice_body()["lines"][0] | {"quantity": quantity}
    error = error_of(api.put("/invoices/inv-2", invoice_body("INV-2", lines=[line])), 422)
    assert error["field"] == "lines.0.quantity"
    assert api.get("/invoices/inv-2").status_code == 404


@pytest.mark.parametrize(
    ("field", "value"),
    [(f, v) for f in ("amount_minor", "tax_rate_bp") for v in (2**63, -1, 10**400)]
    # 5.0 is the integer 5, as JSON Schema and so the document count it
    # (test_api.py::test_a_whole_number_written_with_a_fraction_is_that_integer).
    + [("amount_minor", "12"), ("amount_minor", 5.5), ("amount_minor", True)],
)
def test_odd_integers_in_a_body_are_a_422_naming_the_field(db, api, field, value):
    push_bill_group(api)
    line = invoice_body()["lines"][0] | {field: value}
    error = error_of(api.put("/invoices/inv-2", invoice_body("INV-2", lines=[line])), 422)
    assert error["field"] == f"lines.0.{field}"
    assert api.get("/invoices/inv-2").status_code == 404


def test_an_unknown_entity_is_named_in_the_singular(api):
    error = error_of(api.get("/entities/ent-404"), 404)
    assert error["message"] == "There is no entity with external id 'ent-404'."


# --- the PDF of an invoice numbered 請求書-0001 -------------------------------------------

CJK_DISPOSITION = (
    "attachment; filename=\"___-0001.pdf\"; filename*=UTF-8''%E8%AB%8B%E6%B1%82%E6%9B%B8-0001.pdf"
)


def test_the_pdf_of_a_non_latin_invoice_number_downloads_in_both_faces(app, smtp, api):
    push_bill_group(api)
    assert api.put("/invoices/inv-cjk", invoice_body("請求書-0001")).status_code == 201
    assert api.post("/bill-groups/bg-1/access-rules", {"value": "acme.com"}).status_code == 201
    from_api = api.get("/invoices/inv-cjk/pdf")
    assert from_api.status_code == 200 and from_api.data.startswith(b"%PDF")
    assert from_api.headers["Content-Disposition"] == CJK_DISPOSITION

    public_id = api.get("/bill-groups/bg-1").get_json()["portal_url"].rsplit("/", 1)[1]
    customer = app.test_client()
    assert sign_in(customer, app, smtp, public_id, "ap@acme.com").status_code == 303
    page = customer.get(f"/p/{public_id}/invoices")
    invoice = re.search(r'href="(/p/[^"]+/invoices/\d+)"', page.text)
    assert invoice, page.text
    from_portal = customer.get(invoice[1] + ".pdf")
    assert from_portal.status_code == 200 and from_portal.data.startswith(b"%PDF")
    assert from_portal.headers["Content-Disposition"] == CJK_DISPOSITION


def test_a_real_server_sends_the_non_latin_pdf_instead_of_dropping_the_connection(app, api):
    """The WSGI server writes headers as Latin-1: a raw 請求書 in Content-Disposition made
    it drop the connection, which the test client never shows."""
    push_bill_group(api)
    assert api.put("/invoices/inv-cjk", invoice_body("請求書-0001")).status_code == 201
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.server_port}{PREFIX}/invoices/inv-cjk/pdf",
            headers={"Authorization": f"Bearer {api.key}"},
        )
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(request, timeout=30) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Disposition"] == CJK_DISPOSITION
            assert answer.read().startswith(b"%PDF")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
