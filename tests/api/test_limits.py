"""429s: wrong keys are budgeted apart from valid ones, and every 429 (the API's, the
pages') says in Retry-After how long to wait, on memory:// and on Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from tests.api.conftest import Api, make_key
from tests.conftest import REDIS_URL, csrf_token
from tests.factories import make_bill_group

WRONG = "bp_" + "B" * 43


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limited(request, app: Flask, sibling) -> Iterator[Flask]:
    """The app with small limits, its budgets in memory or in the test Redis database."""
    limits = {"API_AUTH_FAILURE_LIMIT": "5 per 15 minutes", "API_LIMIT_PER_KEY": "3 per minute"}
    if request.param == "memory":
        app.config.update(limits)
        yield app
        return
    import redis

    with redis.Redis.from_url(REDIS_URL) as server:
        server.flushdb()
        yield sibling(RATELIMIT_STORAGE_URI=REDIS_URL, **limits)
        server.flushdb()


def retry_after(response: Any, most: int) -> int:
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "rate_limited"
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= most, seconds
    return seconds


def test_a_wrong_key_flood_does_not_lock_out_a_valid_key_from_the_same_ip(limited):
    flood = Api(limited.test_client(), WRONG)
    statuses = [flood.get("/accounts").status_code for _ in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    good = Api(limited.test_client(), make_key(limited))
    assert [good.get("/accounts").status_code for _ in range(3)] == [200] * 3
    # The guesses stay refused, and the valid key keeps only its own budget.
    retry_after(flood.get("/accounts"), 15 * 60)
    retry_after(Api(limited.test_client(), None).get("/accounts"), 15 * 60)
    retry_after(good.get("/accounts"), 60)


def test_a_key_over_its_budget_is_told_when_to_retry(limited):
    api = Api(limited.test_client(), make_key(limited))
    assert [api.get("/accounts").status_code for _ in range(3)] == [200] * 3
    over = api.get("/accounts")
    assert "too many requests" in over.get_json()["error"]["message"]
    retry_after(over, 60)
    other = Api(limited.test_client(), make_key(limited, name="other"))
    assert other.get("/accounts").status_code == 200


def test_the_per_client_429_page_says_when_to_retry(app, db):
    group = make_bill_group(db)
    db.commit()
    app.config["SECRET_ENDPOINT_LIMIT"] = "2 per minute"
    browser = app.test_client()
    token = csrf_token(browser.get(f"/p/{group.public_id}").text)
    answers = [
        browser.post(f"/p/{group.public_id}/sign-in", data={"csrf_token": token, "email": e})
        for e in ("a@acme.com", "b@acme.com", "c@acme.com")
    ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[-1].mimetype == "text/html" and "Too many attempts" in answers[-1].text
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 61
    assert "Retry-After" not in answers[0].headers
