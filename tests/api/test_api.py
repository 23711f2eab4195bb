"""The JSON API: authentication, idempotent upserts, validation and the error shape,
pagination, PDFs and portal links. Every response is checked against the OpenAPI
document by the `api` client (tests/api/conftest.py)."""

from __future__ import annotations

import io
import json

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from api.openapi import document
from portal.models import ApiKey, AuditEvent, Invoice, InvoiceLine, PaymentMethod
from portal.signin import sha256
from tests.api.conftest import (
    ACCOUNT,
    BILL_GROUP,
    BILLING_CONTACT,
    CARD,
    ENTITY,
    Api,
    invoice_body,
    make_key,
    push_bill_group,
)
from tests.settings import change_settings


def error_of(response):
    body = response.get_json()
    assert set(body) == {"error"}, body
    return body["error"]


def put_json_text(api, raw: str | bytes):
    """PUT an account with the body exactly as given, sent as JSON."""
    return api.request("PUT", "/accounts/acc-1", data=raw, content_type="application/json")


def bad_request(response):
    """The error of a 400 refused as a bad request."""
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "bad_request"
    return error


def no_audit(db) -> bool:
    return db.scalar(select(func.count()).select_from(AuditEvent)) == 0


# --- authentication -------------------------------------------------------------------


def test_no_key_is_401_with_a_json_error(app, client):
    response = Api(client, None).get("/accounts")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert error_of(response)["code"] == "unauthorized"


@pytest.mark.parametrize(
    "header",
    ["Bearer bp_" + "A" * 43, "Bearer nonsense", "Basic dXNlcjpwYXNz", "bp_" + "A" * 43],
)
def test_a_wrong_key_is_401(app, client, header):
    make_key(app)  # a real key exists; these are not it
    response = Api(client, None).get("/accounts", headers={"Authorization": header})
    assert response.status_code == 401


def test_a_revoked_key_is_401_at_once(app, db, api):
    assert api.get("/accounts").status_code == 200
    from portal import apikeys

    row = db.scalar(select(ApiKey))
    with app.app_context():
        assert apikeys.revoke(db, row, "admin@staff.example.com")
    db.commit()
    assert api.get("/accounts").status_code == 401


def test_only_the_keys_hash_is_stored(app, db, api):
    row = db.scalar(select(ApiKey))
    assert row.key_hash == sha256(api.key)
    assert api.key not in json.dumps([row.name, row.hint, row.key_hash, row.scopes])
    assert api.key.startswith(row.hint) and len(row.hint) < 12


def test_a_read_key_cannot_write(read_only_api):
    assert read_only_api.get("/accounts").status_code == 200
    response = read_only_api.put("/accounts/acc-1", ACCOUNT)
    assert response.status_code == 403
    assert "write" in error_of(response)["message"]


def test_a_staff_or_customer_cookie_is_no_api_credential(app, db, client):
    from tests.admin.conftest import make_staff, staff_sign_in

    user = make_staff(db)
    assert staff_sign_in(client, user.email).status_code == 303
    assert client.get("/api/v1/accounts").status_code == 401


def test_wrong_keys_are_rate_limited_per_ip(app, client):
    change_settings(app, API_AUTH_FAILURE_LIMIT="5 per 15 minutes")
    anonymous = Api(client, "bp_" + "B" * 43)
    statuses = [anonymous.get("/accounts").status_code for _ in range(7)]
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]
    # The right key from the same address is not locked out by the guesses
    # (tests/api/test_limits.py).
    good = Api(client, make_key(app))
    waited = good.get("/accounts")
    assert waited.status_code == 200
    # Past the budget, a wrong key waits until the oldest failure leaves the window.
    assert 14 * 60 <= int(anonymous.get("/accounts").headers["Retry-After"]) <= 15 * 60


def test_each_key_has_a_request_budget(app, client):
    change_settings(app, API_LIMIT_PER_KEY="3 per minute")
    api = Api(client, make_key(app))
    responses = [api.get("/accounts") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert "Retry-After" not in responses[0].headers
    assert 1 <= int(responses[3].headers["Retry-After"]) <= 60
    assert Api(client, make_key(app, name="other")).get("/accounts").status_code == 200


def test_the_document_is_public_valid_openapi_and_covers_every_route(app, client):
    from openapi_spec_validator import validate

    served = client.get("/api/v1/openapi.json")
    assert served.status_code == 200
    validate(served.get_json())
    documented = {
        (method.upper(), "/api/v1" + path)
        for path, operations in document()["paths"].items()
        for method in operations
    }
    routed = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule.endswith("openapi.json"):
            continue
        path = rule.rule
        for name in ("external_id", "kind", "rule_id", "request_id", "dispute_id", "attachment_id"):
            path = path.replace(f"<{name}>", "{" + name + "}").replace(
                f"<int:{name}>", "{" + name + "}"
            )
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if "<any(" in path:
                resource_paths = path.split(":resource>")
                for resource in document()["paths"]:
                    name = resource.strip("/").split("/")[0]
                    if f'"{name}"' in resource_paths[0]:
                        routed.add((method, "/api/v1/" + name + resource_paths[1]))
            else:
                routed.add((method, path))
    assert routed == documented


# --- upserts ----------------------------------------------------------------------------


def test_a_full_bill_group_goes_in_and_reads_back(app, api):
    push_bill_group(api)
    group = api.get("/bill-groups/bg-1").get_json()
    assert group["account"] == "acc-1" and group["entity"] == "ent-1"
    assert group["portal_url"].startswith("https://portal.example.test/p/")
    invoice = api.get("/invoices/inv-1").get_json()
    assert invoice["total_minor"] == 36900
    assert invoice["subtotal_minor"] == 30000 and invoice["balance_minor"] == 36900
    assert invoice["lines"][0]["quantity"] == "12"
    subscription = api.get("/subscriptions/sub-1").get_json()
    assert subscription["amount_per_period_minor"] == 30000
    contact = api.get("/bill-groups/bg-1/contacts/billing").get_json()
    assert contact["email"] == "ap@acme.com" and contact["bill_group"] == "bg-1"


def test_put_twice_is_idempotent(app, db, api):
    push_bill_group(api)
    before = api.get("/invoices/inv-1").get_json()
    audits = db.scalar(select(func.count()).select_from(AuditEvent))
    again = api.put("/invoices/inv-1", invoice_body())
    assert again.status_code == 200
    assert again.get_json() == before  # updated_at included: nothing was written
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == audits
    assert db.scalar(select(func.count()).select_from(Invoice)) == 1


def test_an_update_replaces_the_lines_and_is_audited(app, db, api):
    push_bill_group(api)
    body = invoice_body()
    body["lines"].append(
        {
            "description": "Support",
            "quantity": "1.5",
            "unit_price_minor": 1000,
            "amount_minor": 1500,
        }
    )
    response = api.put("/invoices/inv-1", body)
    assert response.status_code == 200
    assert response.get_json()["total_minor"] == 36900 + 1500
    assert [line["quantity"] for line in response.get_json()["lines"]] == ["12", "1.5"]
    assert db.scalar(select(func.count()).select_from(InvoiceLine)) == 2
    actions = db.scalars(
        select(AuditEvent.outcome).where(AuditEvent.action == "api.invoices.put")
    ).all()
    assert actions == ["created", "updated"]
    detail = db.scalars(select(AuditEvent.actor).where(AuditEvent.actor_type == "api")).first()
    assert "billing system" in detail and api.key not in detail


def test_created_is_201_with_a_location(api):
    response = api.put("/entities/ent-1", ENTITY)
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/api/v1/entities/ent-1")
    assert "Location" not in api.put("/entities/ent-1", ENTITY).headers


def test_a_created_contact_is_201_with_its_location(api):
    push_bill_group(api)
    created = api.put("/bill-groups/bg-1/contacts/shipping", BILLING_CONTACT)
    assert created.status_code == 201
    assert created.headers["Location"] == "/api/v1/bill-groups/bg-1/contacts/shipping"
    assert api.get(created.headers["Location"].removeprefix("/api/v1")).get_json() == (
        created.get_json()
    )
    again = api.put("/bill-groups/bg-1/contacts/shipping", BILLING_CONTACT)
    assert again.status_code == 200 and "Location" not in again.headers


def test_a_whole_number_written_with_a_fraction_is_that_integer(api):
    """JSON has one number type; JSON Schema, and so the document, count 2500.0 as the
    integer 2500. A fraction that is not zero is still refused."""
    push_bill_group(api)
    body = invoice_body("INV-2")
    body["lines"][0] |= {"unit_price_minor": 2500.0, "amount_minor": 3e4, "tax_minor": 6900}
    response = api.put("/invoices/inv-2", body)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["lines"][0]["unit_price_minor"] == 2500
    body["lines"][0]["unit_price_minor"] = 2500.5
    refused = api.put("/invoices/inv-2", body)
    assert refused.status_code == 422
    assert error_of(refused)["field"] == "lines.0.unit_price_minor"


@pytest.mark.parametrize("value", ["bg 1", "", "x" * 101, "-bg"])
def test_a_parent_filter_that_is_no_external_id_is_400(api, value):
    response = api.get("/invoices", query_string={"bill_group": value})
    assert response.status_code == 400
    assert error_of(response)["field"] == "bill_group"


def test_an_unknown_parent_filter_is_an_empty_page(api):
    push_bill_group(api)
    assert api.get("/invoices?bill_group=bg-nope").get_json()["data"] == []
    assert len(api.get("/invoices?bill_group=bg-1").get_json()["data"]) == 1


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            {
                "lines": [
                    {
                        "description": "x",
                        "quantity": "1",
                        "unit_price_minor": 12.5,
                        "amount_minor": 1,
                    }
                ]
            },
            "lines.0.unit_price_minor",
            "integer",
        ),
        (
            {
                "lines": [
                    {
                        "description": "x",
                        "quantity": "1",
                        "unit_price_minor": "1250",
                        "amount_minor": 1,
                    }
                ]
            },
            "lines.0.unit_price_minor",
            "integer",
        ),
        (
            {
                "lines": [
                    {"description": "x", "quantity": 0.1, "unit_price_minor": 1, "amount_minor": 1}
                ]
            },
            "lines.0.quantity",
            "string",
        ),
        ({"lines": []}, "lines", "at least 1"),
        ({"status": "overdue"}, "status", "open"),
        ({"issue_date": "2026-13-01"}, "issue_date", "date"),
        ({"due_date": "2026-10-01"}, None, "due_date is before issue_date"),
        ({"total_minor": 1}, None, "add up to 36900"),
        ({"status": "paid"}, None, "paid invoice"),
        ({"currency": "EURO"}, "currency", "3 characters"),
        ({"currency": "XYZ"}, "currency", "ISO 4217"),
        ({"currency": "USD"}, "currency", "billed in EUR"),
        ({"bill_group": "bg-nope"}, "bill_group", "no bill group"),
        ({"card_number": "4242424242424242"}, "card_number", "not a field"),
    ],
)
def test_a_bad_invoice_is_422_naming_the_field_and_nothing_is_written(
    app, db, api, change, field, words
):
    push_bill_group(api)
    response = api.put("/invoices/inv-2", invoice_body("INV-2", **change))
    assert response.status_code == 422, response.get_json()
    error = error_of(response)
    assert error["code"] == "invalid"
    assert error["field"] == field
    assert words in error["message"]
    assert db.scalar(select(func.count()).select_from(Invoice)) == 1


def test_malformed_json_is_400(api):
    response = put_json_text(api, "{not json")
    assert response.status_code == 400
    assert "not valid JSON" in error_of(response)["message"]


def test_a_body_that_is_not_json_is_415(api):
    response = api.request("PUT", "/accounts/acc-1", data="name=x", content_type="text/plain")
    assert response.status_code == 415


def test_a_body_that_is_not_an_object_is_422(api):
    assert api.put("/accounts/acc-1", ["name"]).status_code == 422


def test_a_body_over_the_limit_is_413_in_json(app, api):
    change_settings(app, MAX_CONTENT_LENGTH=1000)
    response = api.put("/accounts/acc-1", {"name": "x" * 2000})
    assert response.status_code == 413
    assert error_of(response)["code"] == "too_large"


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000,
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        '{"name": ' + "[" * 33 + "]" * 33 + "}",
        '{"a": [{"b": ' * 17 + "1" + "}]" * 17 + "}",
    ],
    ids=["open-arrays", "closed-arrays", "objects", "just-over-the-cap", "mixed"],
)
def test_deeply_nested_json_is_400_before_any_handler(app, db, api, raw):
    response = put_json_text(api, raw)
    error = bad_request(response)
    assert "nests deeper than 32 levels" in error["message"]
    assert no_audit(db)


def test_nesting_at_the_cap_and_brackets_in_strings_are_not_refused(api):
    at_cap = '{"name": ' + "[" * 31 + "]" * 31 + "}"
    response = put_json_text(api, at_cap)
    assert response.status_code == 422  # parsed, then refused by the schema
    brackets = json.dumps({"name": "Acme [" + "[" * 90 + "{" * 90 + '\\"'})
    response = put_json_text(api, brackets)
    assert response.status_code in (200, 201), response.get_json()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"name": "Acme\\u0000Holdings"}', "name"),
        ('{"name": "Acme\\ud800"}', "name"),
        ('{"name": "Acme", "x\\u0000": 1}', "x\x00"),
        ('{"name": "Acme", "tags": [{"k": "ok"}, {"k": "\\u0000"}]}', "tags.1.k"),
    ],
)
def test_a_nul_or_lone_surrogate_in_a_json_string_is_400(db, api, raw, field):
    response = put_json_text(api, raw)
    error = bad_request(response)
    assert "control character" in error["message"]
    assert error["field"] == field
    assert no_audit(db)


@pytest.mark.parametrize("raw", ['{"name": "Acme\\u001b[31m"}', '{"name": "Acme\\u007f"}'])
def test_other_control_characters_meet_the_field_s_own_rule_first(db, api, raw):
    """As on the customer's forms: the field's rule answers (422, its message)."""
    response = put_json_text(api, raw)
    assert response.status_code == 422
    error = error_of(response)
    assert error["field"] == "name" and "not allowed" in error["message"]
    assert no_audit(db)


def test_a_body_that_is_not_utf8_is_400(api):
    for raw in [
        '{"name": "Acme"}'.encode("utf-16"),
        b'{"name": "\xff"}',
        b'{"name": "\xed\xa0\x80"}',
    ]:
        response = put_json_text(api, raw)
        assert response.status_code == 400
        assert "not UTF-8" in error_of(response)["message"]


def test_tab_and_line_breaks_in_json_are_left_to_the_schemas(api):
    """A tab or line break is no danger to the database, so it is each field's schema
    that decides (a name refuses it with a 422 naming the field); non-Latin text passes."""
    response = api.put("/accounts/acc-1", {"name": "Acme\tHoldings"})
    assert response.status_code == 422 and error_of(response)["field"] == "name"
    response = api.put("/accounts/acc-1", {"name": "Acme 株式会社 Ελλάδα"})
    assert response.status_code in (200, 201), response.get_json()
    assert api.get("/accounts/acc-1").get_json()["name"] == "Acme 株式会社 Ελλάδα"


def test_an_access_rule_with_a_nul_is_400(api):
    push_bill_group(api)
    url = "/bill-groups/bg-1/access-rules"
    response = api.post(url, {"value": "acme.com\x00"})
    assert response.status_code == 400
    assert error_of(response)["field"] == "value"
    assert api.get(url).get_json()["data"] == []


def test_an_invoice_number_used_twice_is_409(api):
    push_bill_group(api)
    response = api.put("/invoices/inv-2", invoice_body("INV-1001"))
    assert response.status_code == 409
    assert error_of(response)["field"] == "number"


def test_a_bill_group_with_invoices_cannot_change_currency(api):
    push_bill_group(api)
    response = api.put("/bill-groups/bg-1", BILL_GROUP | {"currency": "USD"})
    assert response.status_code == 409
    assert api.get("/bill-groups/bg-1").get_json()["currency"] == "EUR"


def test_an_unknown_record_is_404_and_an_unknown_path_too(api):
    assert error_of(api.get("/invoices/nope"))["code"] == "not_found"
    assert api.get("/invoices/nope").status_code == 404
    unknown = api.get("/widgets")
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "not_found"
    assert api.get("/invoices/" + "x" * 101).status_code == 404


def test_a_wrong_method_is_405_in_json(api):
    response = api.request("DELETE", "/accounts/acc-1")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"gateway_token": "4242 4242 4242 4242"}, "card number"),
        ({"holder_name": "4000056655665556"}, "card number"),
        ({"number": "4242424242424242"}, "not a field"),
        ({"last4": "424242"}, "last4"),
        ({"exp_month": 13}, "exp_month"),
    ],
)
def test_a_card_number_never_gets_in(app, db, api, change, words):
    push_bill_group(api)
    body = CARD | {"gateway_token": "pm_1Q2w3E"} | change
    response = api.put("/payment-methods/pm-1", body)
    assert response.status_code == 422
    assert words in json.dumps(error_of(response))
    assert db.scalar(select(func.count()).select_from(PaymentMethod)) == 0


def test_payment_methods_default_and_payments(api):
    push_bill_group(api)
    card = CARD
    assert api.put("/payment-methods/pm-1", card).status_code == 201
    second = card | {"gateway_token": "pm_2", "last4": "1111"}
    assert api.put("/payment-methods/pm-2", second).get_json()["is_default"] is True
    assert api.get("/payment-methods/pm-1").get_json()["is_default"] is False
    clash = api.put("/payment-methods/pm-3", card | {"is_default": False})
    assert clash.status_code == 409
    payment = {
        "bill_group": "bg-1",
        "amount_minor": 36900,
        "currency": "EUR",
        "status": "succeeded",
        "received_at": "2026-11-20T10:00:00Z",
        "payment_method": "pm-2",
        "applications": [{"invoice": "inv-1", "amount_minor": 36900}],
    }
    response = api.put("/payments/pay-1", payment)
    assert response.status_code == 201
    assert response.get_json()["applications"] == [{"invoice": "inv-1", "amount_minor": 36900}]
    too_much = payment | {"applications": [{"invoice": "inv-1", "amount_minor": 40000}]}
    assert api.put("/payments/pay-2", too_much).status_code == 422
    naive = payment | {"received_at": "2026-11-20T10:00:00"}
    assert error_of(api.put("/payments/pay-3", naive))["message"].startswith("received_at")


# --- lists ------------------------------------------------------------------------------


def test_pages_follow_the_cursor_and_see_every_record_once(api):
    for number in range(7):
        assert api.put(f"/accounts/acc-{number}", {"name": f"Account {number}"}).status_code == 201
    seen, url, pages = [], "/accounts?limit=3", 0
    while url:
        body = api.get(url).get_json()
        seen += [row["external_id"] for row in body["data"]]
        pages += 1
        url = f"/accounts?limit=3&cursor={body['next_cursor']}" if body["next_cursor"] else None
    assert sorted(seen) == [f"acc-{n}" for n in range(7)]
    assert len(seen) == 7 and pages == 3


def test_updated_since_returns_only_what_changed(app, api):
    for number in range(3):
        api.put(f"/accounts/acc-{number}", {"name": f"Account {number}"})
    middle = api.get("/accounts/acc-2").get_json()["updated_at"]
    assert api.put("/accounts/acc-0", {"name": "Renamed"}).status_code == 200
    changed = api.get(f"/accounts?updated_since={middle}").get_json()["data"]
    names = [row["name"] for row in changed]
    assert "Renamed" in names and "Account 1" not in names


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=ten",
        "cursor=garbage",
        "updated_since=yesterday",
        "updated_since=2026-11-01T00:00:00",
    ],
)
def test_bad_list_parameters_are_400(api, query):
    response = api.get(f"/accounts?{query}")
    assert response.status_code == 400
    assert error_of(response)["field"] == query.split("=")[0]


def test_lists_filter_by_bill_group(api):
    push_bill_group(api)
    api.put("/bill-groups/bg-2", BILL_GROUP | {"name": "Acme US"})
    api.put("/invoices/inv-9", invoice_body("INV-9", bill_group="bg-2"))
    only = api.get("/invoices?bill_group=bg-2").get_json()["data"]
    assert [row["external_id"] for row in only] == ["inv-9"]
    assert api.get("/invoices?bill_group=unknown").get_json()["data"] == []


# --- PDFs, links, contacts --------------------------------------------------------------


def test_an_invoice_pdf(api):
    push_bill_group(api)
    response = api.get("/invoices/inv-1/pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(response.data)).pages)
    assert "INV-1001" in text and "Platform seats, November" in text


def test_an_invoice_pdf_with_a_non_latin_number_downloads_as_the_customer_s_does(api, app):
    """The API's copy of the PDF response had drifted: a non-Latin-1 file name made the
    WSGI server drop the connection. Both faces now send one header."""
    push_bill_group(api)
    api.put("/invoices/inv-cjk", invoice_body("発票-7"))
    response = api.get("/invoices/inv-cjk/pdf")
    assert response.status_code == 200 and response.data.startswith(b"%PDF")
    disposition = response.headers["Content-Disposition"]
    disposition.encode("latin-1")  # what a WSGI server can write
    assert disposition == (
        "attachment; filename=\"__-7.pdf\"; filename*=UTF-8''%E7%99%BA%E7%A5%A8-7.pdf"
    )


def test_the_portal_link(api):
    push_bill_group(api)
    link = api.get("/bill-groups/bg-1/portal-link").get_json()
    assert link["available"] is True
    assert link["url"] == api.get("/bill-groups/bg-1").get_json()["portal_url"]
    api.put("/bill-groups/bg-1", BILL_GROUP | {"portal_enabled": False})
    assert api.get("/bill-groups/bg-1/portal-link").get_json()["available"] is False


def test_contacts_follow_the_customer_forms_rules(api):
    push_bill_group(api)
    bad = api.put("/bill-groups/bg-1/contacts/shipping", BILLING_CONTACT | {"email": "a@b@c"})
    assert bad.status_code == 422 and error_of(bad)["field"] == "email"
    no_city = {k: v for k, v in BILLING_CONTACT.items() if k != "city"}
    assert error_of(api.put("/bill-groups/bg-1/contacts/shipping", no_city))["field"] == "city"
    assert api.put("/bill-groups/bg-1/contacts/postal", BILLING_CONTACT).status_code == 404
    created = api.put("/bill-groups/bg-1/contacts/shipping", BILLING_CONTACT)
    assert created.status_code == 201
    kinds = [c["kind"] for c in api.get("/bill-groups/bg-1/contacts").get_json()["data"]]
    assert kinds == ["billing", "shipping"]
    everywhere = api.get("/contacts?bill_group=bg-1").get_json()["data"]
    assert len(everywhere) == 2


# --- access rules -----------------------------------------------------------------------


def test_access_rules_with_the_staff_pages_rules(app, db, api):
    push_bill_group(api)
    url = "/bill-groups/bg-1/access-rules"
    created = api.post(url, {"value": "ACME.com"})
    assert created.status_code == 201 and created.get_json()["value"] == "acme.com"
    covered = api.post(url, {"value": "ap@acme.com"})
    assert covered.status_code == 409 and error_of(covered)["code"] == "duplicate_rule"
    listed = api.post(url, {"value": "a@acme-holdings.com, b@acme-holdings.com"})
    assert listed.status_code == 422 and "one at a time" in error_of(listed)["message"]
    public = api.post(url, {"value": "gmail.com"})
    assert public.status_code == 422 and "public email provider" in error_of(public)["message"]
    assert api.post(url, {"value": "cfo@acme-holdings.com"}).status_code == 201
    overlap = api.post(url, {"value": "acme-holdings.com"})
    assert overlap.status_code == 409 and "cfo@acme-holdings.com" in error_of(overlap)["message"]
    folded = api.post(url, {"value": "acme-holdings.com", "fold_in": True})
    assert folded.status_code == 201
    values = [rule["value"] for rule in api.get(url).get_json()["data"]]
    assert values == ["acme.com", "acme-holdings.com"]
    rule_id = api.get(url).get_json()["data"][0]["id"]
    assert api.delete(f"{url}/{rule_id}").status_code == 204
    assert api.delete(f"{url}/{rule_id}").status_code == 404
    outcomes = db.scalars(
        select(AuditEvent.outcome)
        .where(AuditEvent.action.like("access_rule.%"))
        .order_by(AuditEvent.id)
    ).all()
    assert outcomes == ["added", "added", "added", "folded_in", "removed"]


@pytest.mark.parametrize("domain", ["mailinator.com", "sharklasers.com", "10minutemail.com"])
def test_the_api_refuses_a_disposable_inbox_as_a_domain_rule(api, domain):
    push_bill_group(api)
    url = "/bill-groups/bg-1/access-rules"
    response = api.post(url, {"value": domain, "include_subdomains": True})
    assert response.status_code == 422
    error = error_of(response)
    assert error["field"] == "value"
    assert f"{domain} is a disposable email service" in error["message"]
    assert api.post(url, {"value": f"jo@{domain}"}).status_code == 201
    assert [r["value"] for r in api.get(url).get_json()["data"]] == [f"jo@{domain}"]


def test_one_bill_groups_rules_are_not_reachable_through_another(api):
    push_bill_group(api)
    api.put("/bill-groups/bg-2", BILL_GROUP | {"name": "Other"})
    rule = api.post("/bill-groups/bg-1/access-rules", {"value": "acme.com"}).get_json()
    assert api.delete(f"/bill-groups/bg-2/access-rules/{rule['id']}").status_code == 404
    assert len(api.get("/bill-groups/bg-1/access-rules").get_json()["data"]) == 1


def test_the_document_check_catches_a_response_that_drifts(app, api):
    """The checker every test relies on fails for an undocumented field or status."""
    push_bill_group(api)
    from tests.api.conftest import check_against_document

    good = api.client.get("/api/v1/accounts/acc-1", headers={"Authorization": f"Bearer {api.key}"})
    check_against_document("GET", "/api/v1/accounts/acc-1", good)
    drifted = app.response_class(
        json.dumps(good.get_json() | {"secret": "x"}), mimetype="application/json"
    )
    with pytest.raises(Exception, match="secret"):
        check_against_document("GET", "/api/v1/accounts/acc-1", drifted)
    teapot = app.response_class("{}", status=418, mimetype="application/json")
    with pytest.raises(AssertionError, match="418"):
        check_against_document("GET", "/api/v1/accounts/acc-1", teapot)


def test_a_database_that_is_down_is_a_json_503():
    from portal.app import create_app
    from tests.conftest import TEST_CONFIG

    down = create_app(
        {**TEST_CONFIG, "DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    )
    response = down.test_client().get(
        "/api/v1/accounts", headers={"Authorization": "Bearer bp_" + "C" * 43}
    )
    assert response.status_code == 503
    assert error_of(response)["code"] == "unavailable"
    assert "Traceback" not in response.text


def test_what_any_operation_can_answer_is_documented_for_it(api):
    """A control character in the query and a compressed body are refused before any
    view, on reads too; the `api` client fails a status the document does not list."""
    push_bill_group(api)
    assert api.get("/accounts/acc-1?x=%01").status_code == 400
    compressed = api.request(
        "GET", "/bill-groups/bg-1/portal-link", data=b"x", headers={"Content-Encoding": "gzip"}
    )
    assert compressed.status_code == 415


def test_payment_methods_the_billing_system_writes_are_in_the_change_history(api, db):
    """Change alerts (issue 18): a method the billing system adds, or makes the default,
    is a history row by the billing system, told to the billing contact only."""
    import json as json_module

    from portal.models import BillGroupChange, NoticeChange

    push_bill_group(api)
    card = CARD | {"is_default": True}
    assert api.put("/payment-methods/pm-1", card).status_code == 201
    second = CARD | {"gateway_token": "pm_2", "last4": "1111", "is_default": True}
    assert api.put("/payment-methods/pm-2", second).status_code == 201
    assert api.put("/payment-methods/pm-2", second).status_code == 200  # unchanged: no row
    db.expire_all()
    changes = db.scalars(
        select(BillGroupChange)
        .where(BillGroupChange.what == "payment methods")
        .order_by(BillGroupChange.id)
    ).all()
    assert [json_module.loads(c.changes) for c in changes] == [
        [["payment method", None, "added: Visa ending 4242"]],
        [
            ["payment method", None, "added: Visa ending 1111"],
            ["default payment method", "Visa ending 4242", "Visa ending 1111"],
        ],
    ]
    assert {c.actor_type for c in changes} == {"api"}
    told = db.scalars(select(NoticeChange.recipient).where(NoticeChange.what == "payment methods"))
    assert set(told) == {"ap@acme.com"}
