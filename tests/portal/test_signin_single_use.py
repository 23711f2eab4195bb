"""A sign-in link or code works once, even under concurrency; retired and expired ones never."""

from __future__ import annotations

import datetime as dt

import pytest

from portal import signin
from portal.config import settings_of
from tests.clock import Clock
from tests.conftest import csrf_token
from tests.portal.signin_helpers import (
    CONCURRENT,
    ask,
    asked,
    challenges,
    clone,
    confirm,
    latest,
    mails,
    portal,
    race,
    sessions_count,
    type_code,
    urls,
    wrong,
)
from tests.settings import change_settings

# --- 3. single use, under concurrency -------------------------------------------------


def test_twenty_concurrent_confirms_sign_in_exactly_once(app, client, db, smtp):
    pid, path, _code = asked(app, client, db, smtp)
    assert client.get(path).headers["Location"] == urls(pid).confirm
    browsers = [clone(app, client) for _ in range(CONCURRENT)]
    jobs = []
    for browser in browsers:
        page = browser.get(urls(pid).confirm)
        assert page.status_code == 200
        jobs.append((browser, csrf_token(page.text)))

    responses = race(jobs, lambda job: job[0].post(urls(pid).confirm, data={"csrf_token": job[1]}))

    assert [r.status_code for r in responses] == [303] * CONCURRENT
    locations = [r.headers["Location"] for r in responses]
    assert locations.count(urls(pid).overview) == 1
    assert locations.count(urls(pid).invalid) == CONCURRENT - 1
    assert sessions_count(app, pid) == 1
    [row] = challenges(app, pid)
    assert row.spent_at is not None
    winner = browsers[locations.index(urls(pid).overview)]
    assert winner.get(urls(pid).overview).status_code == 200


def test_twenty_concurrent_correct_codes_sign_in_exactly_once(app, client, db, smtp):
    pid = portal(db)
    page = ask(client, pid)
    _path, code = latest(app, smtp)
    csrf = csrf_token(page.text)
    browsers = [clone(app, client) for _ in range(CONCURRENT)]

    responses = race(
        browsers,
        lambda browser: browser.post(f"/p/{pid}/code", data={"csrf_token": csrf, "code": code}),
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [303] + [400] * (CONCURRENT - 1)
    [won] = [r for r in responses if r.status_code == 303]
    assert won.headers["Location"] == urls(pid).overview
    assert sessions_count(app, pid) == 1
    [row] = challenges(app, pid)
    assert row.spent_at is not None


def test_concurrent_wrong_codes_get_no_more_than_the_allowed_attempts(
    app, client, db, smtp, monkeypatch
):
    """Attempts are counted atomically: a burst of guesses at once is not a way to try
    more than CODE_ATTEMPTS_PER_CHALLENGE codes."""
    pid = portal(db)
    page = ask(client, pid)
    _path, code = latest(app, smtp)
    csrf = csrf_token(page.text)
    compared = []
    real_code_hash = signin.code_hash

    def counting_code_hash(challenge_id: int, guess: str) -> str:
        compared.append(guess)
        return real_code_hash(challenge_id, guess)

    monkeypatch.setattr(signin, "code_hash", counting_code_hash)
    guesses = [(clone(app, client), wrong(code, i)) for i in range(CONCURRENT)]

    responses = race(
        guesses,
        lambda job: job[0].post(f"/p/{pid}/code", data={"csrf_token": csrf, "code": job[1]}),
    )

    limit = settings_of(app).CODE_ATTEMPTS_PER_CHALLENGE
    assert [r.status_code for r in responses] == [400] * CONCURRENT
    assert len(compared) <= limit
    [row] = challenges(app, pid)
    assert row.code_attempts <= limit
    refused = type_code(client, pid, code, csrf)
    assert refused.status_code == 400
    assert sessions_count(app, pid) == 0


# --- 4. retirement ----------------------------------------------------------------------


@pytest.mark.parametrize("used", ["link", "code"])
def test_two_requests_give_two_live_links_and_signing_in_retires_the_other(
    app, client, db, smtp, used
):
    pid = portal(db)
    page = ask(client, pid)
    ask(client, pid)
    (path1, code1), (path2, code2) = mails(app, smtp)
    assert path1 != path2 and code1 != code2

    # The second request did not cancel the first: both links reach the confirm page.
    assert client.get(path1).headers["Location"] == urls(pid).confirm
    assert client.get(path2).headers["Location"] == urls(pid).confirm
    # The same browser, before signing in: same nonce, about to confirm link 2.
    twin = clone(app, client)
    twin_csrf = csrf_token(twin.get(urls(pid).confirm).text)

    if used == "link":
        assert client.get(path1).headers["Location"] == urls(pid).confirm
        assert confirm(client, pid).headers["Location"] == urls(pid).overview
    else:
        signed_in = type_code(client, pid, code1, csrf_token(page.text))
        assert signed_in.headers["Location"] == urls(pid).overview
    first, second = challenges(app, pid)
    assert first.spent_at is not None
    assert second.spent_at is None and second.retired_at is not None

    # Link 2, its confirm and its code are dead, even in a browser that still has the
    # nonce they were bound to.
    for browser in (client, twin):
        opened = browser.get(path2)
        assert opened.headers["Location"] == urls(pid).invalid
        neutral = browser.get(opened.headers["Location"])
        assert "This sign-in link cannot be used" in neutral.text
    assert (
        twin.post(urls(pid).confirm, data={"csrf_token": twin_csrf}).headers["Location"]
        == urls(pid).invalid
    )
    for typed in (code2, code1):
        refused = type_code(twin, pid, typed, twin_csrf)
        assert refused.status_code == 400
        assert "That code is not right" in refused.text
    assert sessions_count(app, pid) == 1


# --- 5. expiry, with the clock moved ---------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "before", "after"),
    [
        (None, dt.timedelta(minutes=15) - dt.timedelta(seconds=1), dt.timedelta(minutes=15)),
        (5, dt.timedelta(minutes=4), dt.timedelta(minutes=6)),
    ],
    ids=["default-15", "configured-5"],
)
def test_the_link_and_the_code_expire_after_the_configured_lifetime(
    app, client, db, smtp, ttl, before, after
):
    if ttl is not None:
        change_settings(app, SIGNIN_TTL_MINUTES=ttl)
    minutes = settings_of(app).SIGNIN_TTL_MINUTES
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    clock = Clock(start).install(app)
    pid = portal(db)
    page = ask(client, pid)
    path, code = latest(app, smtp)
    csrf = csrf_token(page.text)
    [row] = challenges(app, pid)
    assert row.expires_at == start + dt.timedelta(minutes=minutes)

    clock.set(start + before)
    assert client.get(path).headers["Location"] == urls(pid).confirm
    late = clone(app, client)
    late_csrf = csrf_token(late.get(urls(pid).confirm).text)

    clock.set(start + after)
    assert client.get(path).headers["Location"] == urls(pid).invalid
    assert type_code(client, pid, code, csrf).status_code == 400
    confirmed = late.post(urls(pid).confirm, data={"csrf_token": late_csrf})
    assert confirmed.headers["Location"] == urls(pid).invalid
    assert sessions_count(app, pid) == 0

    # Back within the lifetime the very same code works: it was refused for its age.
    clock.set(start + before)
    assert type_code(client, pid, code, csrf).headers["Location"] == urls(pid).overview
    assert sessions_count(app, pid) == 1
