"""The lists as change feeds: commit order, resume_cursor, ?updated_since=, and the one
interleaving that lost records when the feed was ordered by updated_at."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import select

from api.resources import RESOURCES
from portal.models import Account, ChangeMixin, Contact
from tests.api.conftest import (
    BILLING_CONTACT,
    SUBSCRIPTION,
    Api,
    invoice_body,
    push_bill_group,
)


def read(api: Api, url: str, cursor: str | None = None) -> tuple[list[dict], str]:
    """Follow next_cursor to the end: the rows, and where to resume."""
    rows: list[dict] = []
    while True:
        separator = "&" if "?" in url else "?"
        body = api.get(url + (f"{separator}cursor={cursor}" if cursor else "")).get_json()
        rows += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows, body["resume_cursor"]


def ids(rows: list[dict]) -> list[str]:
    return [row["external_id"] for row in rows]


def test_every_listed_record_is_numbered_at_commit():
    assert all(issubclass(r.model, ChangeMixin) for r in RESOURCES.values())
    assert issubclass(Contact, ChangeMixin)  # /contacts


def test_a_poll_resumes_from_an_empty_page_and_reads_each_change_once_in_commit_order(api):
    rows, resume = read(api, "/accounts?limit=2")
    assert rows == []
    for name in ("a", "b", "c"):
        api.put(f"/accounts/{name}", {"name": name})
    rows, resume = read(api, "/accounts?limit=2", resume)
    assert ids(rows) == ["a", "b", "c"]
    rows, again = read(api, "/accounts?limit=2", resume)
    assert rows == [] and again == resume

    api.put("/accounts/a", {"name": "a, renamed"})
    api.put("/accounts/b", {"name": "b"})  # the same body: no change, not listed again
    rows, resume = read(api, "/accounts?limit=2", resume)
    assert [(row["external_id"], row["name"]) for row in rows] == [("a", "a, renamed")]


def test_a_change_to_children_only_lists_the_record_again(api):
    push_bill_group(api)
    _rows, resume = read(api, "/subscriptions")
    items = [{"product": "prod-1", "quantity": 20, "unit_price_minor": 2500}]
    assert api.put("/subscriptions/sub-1", SUBSCRIPTION | {"items": items}).status_code == 200
    rows, _resume = read(api, "/subscriptions", resume)
    assert [row["items"][0]["quantity"] for row in rows] == [20]


def test_contacts_and_invoices_are_feeds_too(api):
    push_bill_group(api)
    _rows, contacts = read(api, "/contacts")
    _rows, invoices = read(api, "/invoices?bill_group=bg-1")
    api.put("/bill-groups/bg-1/contacts/billing", BILLING_CONTACT | {"city": "Cork"})
    api.put("/invoices/inv-2", invoice_body("INV-1002"))
    assert [row["city"] for row in read(api, "/contacts", contacts)[0]] == ["Cork"]
    assert ids(read(api, "/invoices?bill_group=bg-1", invoices)[0]) == ["inv-2"]


def test_updated_since_is_where_to_start_and_resume_cursor_where_to_go_on(api):
    api.put("/accounts/old", {"name": "old"})
    stamp = api.get("/accounts/old").get_json()["updated_at"]
    rows, resume = read(api, "/accounts?updated_since=2999-01-01T00:00:00Z")
    assert rows == []
    api.put("/accounts/new", {"name": "new"})
    assert ids(read(api, "/accounts", resume)[0]) == ["new"]
    assert ids(read(api, f"/accounts?updated_since={stamp}")[0]) == ["old", "new"]


@pytest.mark.postgres
def test_a_record_committed_after_a_later_one_is_still_read(app, api):
    """Two writers: the first flushes (stamping updated_at) and is slow to commit; the
    second commits meanwhile and the client reads it. Resuming, the client reads the
    first too, although its updated_at is earlier than what it has already seen. (On
    SQLite the first writer holds the write lock, so the second would wait for it.)"""
    sessions = app.extensions["portal.db"]
    with sessions() as slow, sessions() as fast:
        slow.add(Account(external_id="slow", name="slow"))
        slow.flush()
        fast.add(Account(external_id="fast", name="fast"))
        fast.commit()
        rows, resume = read(api, "/accounts?limit=1")
        assert ids(rows) == ["fast"]
        slow.commit()
        stamps = {row.external_id: row.updated_at for row in slow.scalars(select(Account))}
    assert stamps["slow"] < stamps["fast"]
    assert ids(read(api, "/accounts?limit=1", resume)[0]) == ["slow"]


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "value",
    [
        ["2026-11-30T09:00:00+00:00", 1],  # a cursor of the old (updated_at, id) feed
        [-1, 1],
        [2**63, 1],
        [1, True],
        [1],
    ],
)
def test_a_cursor_it_did_not_give_out_is_400(api, value):
    response = api.get(f"/accounts?cursor={_cursor(value)}")
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "cursor"
