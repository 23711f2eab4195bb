"""API fixtures: keys, a JSON client that checks every response against the OpenAPI
document, a real HTTP webhook receiver on loopback, and a full bill group's records."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.openapi import document
from portal import apikeys
from tests.conftest import free_port

PREFIX = "/api/v1"


def make_key(app: Flask, scopes: set[str] | None = None, name: str = "billing system") -> str:
    from portal import db

    with app.app_context():
        key, _row = apikeys.create(db.session(), name, scopes or {"read", "write"}, "test")
        db.session().commit()
    return key


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$")


def operation_for(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """The documented operation a request path matches, if any (literal paths first)."""
    paths = document()["paths"]
    for template in sorted(paths, key=lambda t: t.count("{")):
        if _template_regex(template).match(path) and method.lower() in paths[template]:
            return template, paths[template][method.lower()]
    return None


def check_against_document(method: str, url: str, response: Any) -> None:
    """The response's status is documented for the operation, it has the headers the
    document requires, and its body validates against the documented schema (response
    schemas forbid extra fields)."""
    path = url.split("?", 1)[0].removeprefix(PREFIX)
    found = operation_for(method, path)
    if found is None:
        return  # an undocumented URL: the test that made it checks the 404
    template, operation = found
    status = str(response.status_code)
    assert status in operation["responses"], (
        f"{method} {template} answered {status}, which the document does not list"
    )
    for name, header in operation["responses"][status].get("headers", {}).items():
        if header.get("required"):
            assert name in response.headers, f"{method} {template} {status} without {name}"
    content = operation["responses"][status].get("content")
    if content is None:
        assert not response.data, f"{method} {template} {status} should have no body"
        return
    # One of the types the document lists (a dispute's file is a PDF or an image).
    media = response.mimetype
    assert media in content, (method, template, media)
    if media != "application/json":
        return
    schema = {**content[media]["schema"], "components": document()["components"]}
    jsonschema.validate(response.get_json(), schema, cls=jsonschema.Draft202012Validator)


class Api:
    """A test client for the API that sends JSON with a key and checks every answer."""

    def __init__(self, client: FlaskClient, key: str | None) -> None:
        self.client = client
        self.key = key
        self.responses = 0

    def request(self, method: str, url: str, body: Any = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if self.key is not None:
            headers.setdefault("Authorization", f"Bearer {self.key}")
        if body is not None:
            kwargs["data"] = json.dumps(body)
            kwargs.setdefault("content_type", "application/json")
        response = self.client.open(PREFIX + url, method=method, headers=headers, **kwargs)
        check_against_document(method, PREFIX + url, response)
        self.responses += 1
        return response

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def put(self, url: str, body: Any, **kwargs: Any) -> Any:
        return self.request("PUT", url, body, **kwargs)

    def post(self, url: str, body: Any, **kwargs: Any) -> Any:
        return self.request("POST", url, body, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Any:
        return self.request("DELETE", url, **kwargs)


@pytest.fixture
def api(app: Flask, client: FlaskClient) -> Api:
    return Api(client, make_key(app))


@pytest.fixture
def read_only_api(app: Flask) -> Api:
    return Api(app.test_client(), make_key(app, {"read"}, "reporting"))


# --- a full bill group, as the billing system would send it ---------------------------

ENTITY = {"name": "Northwind Cloud", "support_email": "billing@northwind.example"}
ACCOUNT = {"name": "Acme Holdings"}
BILL_GROUP = {
    "account": "acc-1",
    "entity": "ent-1",
    "name": "Acme EU",
    "currency": "EUR",
    "billing_frequency": "monthly",
    "contract_start": "2026-01-01",
    "next_billing_date": "2026-12-01",
    "auto_pay": True,
}
BILLING_CONTACT = {
    "name": "Accounts Payable",
    "email": "ap@acme.com",
    "line1": "1 Main Street",
    "city": "Dublin",
    "country": "IE",
}
PRODUCT = {"entity": "ent-1", "name": "Platform seat", "sku": "SEAT"}
SUBSCRIPTION = {
    "bill_group": "bg-1",
    "status": "active",
    "period": "monthly",
    "start_date": "2026-01-01",
    "renewal_date": "2027-01-01",
    "items": [{"product": "prod-1", "quantity": 12, "unit_price_minor": 2500}],
}


def invoice_body(number: str = "INV-1001", **overrides: Any) -> dict[str, Any]:
    body = {
        "bill_group": "bg-1",
        "number": number,
        "status": "open",
        "issue_date": "2026-11-01",
        "due_date": "2026-12-01",
        "lines": [
            {
                "description": "Platform seats, November",
                "quantity": "12",
                "unit_price_minor": 2500,
                "amount_minor": 30000,
                "tax_rate_bp": 2300,
                "tax_minor": 6900,
                "product": "prod-1",
            }
        ],
    }
    return body | overrides


# A card on bg-1, as a billing system that tokenises with Stripe sends it.
CARD = {
    "bill_group": "bg-1",
    "type": "card",
    "brand": "visa",
    "last4": "4242",
    "exp_month": 12,
    "exp_year": 2030,
    "gateway": "stripe",
    "gateway_token": "pm_1",
    "is_default": True,
}


def bill_group_records() -> list[tuple[str, dict[str, Any]]]:
    """(path, body) of an entity, account, bill group, billing contact, product,
    subscription and invoice, in the order they can be written."""
    return [
        ("/entities/ent-1", ENTITY),
        ("/accounts/acc-1", ACCOUNT),
        ("/bill-groups/bg-1", BILL_GROUP),
        ("/bill-groups/bg-1/contacts/billing", BILLING_CONTACT),
        ("/products/prod-1", PRODUCT),
        ("/subscriptions/sub-1", SUBSCRIPTION),
        ("/invoices/inv-1", invoice_body()),
    ]


def push_bill_group(api: Api) -> None:
    """Entity, account, bill group, billing contact, product, subscription, invoice."""
    for url, body in bill_group_records():
        response = api.put(url, body)
        assert response.status_code == 201, (url, response.get_json())


# --- a webhook receiver -----------------------------------------------------------------


def undocumented_event(headers: dict[str, str], body: bytes) -> str | None:
    """Why a webhook delivery does not match the document's webhooks section (its
    payload schema for the event type and its headers), or None when it does."""
    event = json.loads(body)
    hook = document()["webhooks"].get(event.get("type"))
    if hook is None:
        return f"event type {event.get('type')!r} is not documented"
    operation = hook["post"]
    for parameter in operation["parameters"]:
        value = headers.get(parameter["name"])
        if value is None:
            return f"no {parameter['name']} header"
        jsonschema.validate(value, parameter["schema"])
    schema = {
        **operation["requestBody"]["content"]["application/json"]["schema"],
        "components": document()["components"],
    }
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(event))
    return "; ".join(error.message for error in errors) or None


class Receiver:
    """A real HTTP server on 127.0.0.1 that records what it is sent and deduplicates by
    event id, as a careful billing system would. It can be stopped and started again on
    the same port, and told to answer with an error. With `check_documented`, every
    delivery is checked against the document's webhooks section, and the fixture fails
    a test that received one that does not match."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.events: dict[str, dict[str, Any]] = {}
        self.status = 200
        # Whether deliveries are checked against the document (tests that emit made-up
        # payloads to test delivery itself leave it off).
        self.check_documented = False
        self.undocumented: list[str] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    wrong = (
                        undocumented_event(dict(self.headers), body)
                        if receiver.check_documented
                        else None
                    )
                except Exception as exc:  # reported by the fixture, not lost in this thread
                    wrong = f"{type(exc).__name__}: {exc}"
                with receiver.lock:
                    if wrong is not None:
                        receiver.undocumented.append(wrong)
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    status = receiver.status
                    if 200 <= status < 300:
                        event = json.loads(body)
                        receiver.events.setdefault(event["id"], event)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events.values() if e["type"] == event_type]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()
    assert not server.undocumented, server.undocumented
