"""Forged tokens get one neutral page; wrong codes lock the challenge and the address."""

from __future__ import annotations

import secrets

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from portal.config import settings_of
from tests.conftest import Inbox, csrf_token
from tests.portal.signin_helpers import (
    ask,
    challenges,
    latest,
    portal,
    sessions_count,
    token_of,
    type_code,
    urls,
    wrong,
)
from tests.settings import change_settings


def test_forged_foreign_truncated_and_huge_tokens_get_the_same_neutral_page(app, client, db, smtp):
    pid_a, pid_b = portal(db), portal(db)
    ask(client, pid_a)
    path, _code = latest(app, smtp)
    token = token_of(path)
    forged = {
        "random": (pid_a, secrets.token_urlsafe(32)),
        "other bill group": (pid_b, token),
        "truncated": (pid_a, token[:-1]),
        "half": (pid_a, token[:22]),
        "one character changed": (pid_a, token[:-1] + ("A" if token[-1] != "A" else "B")),
        "10 kB": (pid_a, "A" * 10_240),
        "10 kB after the token": (pid_a, token + "A" * 10_240),
    }
    answers = {}
    for name, (pid, fake) in forged.items():
        opened = client.get(f"/p/{pid}/verify/{fake}")
        assert opened.status_code == 303, name
        assert opened.headers["Location"] == urls(pid).invalid, name
        assert "Set-Cookie" not in opened.headers, name
        neutral = client.get(opened.headers["Location"])
        assert neutral.status_code == 200
        answers[name] = (pid, opened.get_data(as_text=True), neutral.get_data(as_text=True))

    for pid in (pid_a, pid_b):
        reference = client.get(urls(pid).invalid).get_data(as_text=True)
        same_group = [a for a in answers.values() if a[0] == pid]
        assert same_group
        assert {a[2] for a in same_group} == {reference}
        assert len({a[1] for a in same_group}) == 1
    assert sessions_count(app, pid_a) == sessions_count(app, pid_b) == 0
    [row] = challenges(app, pid_a)
    assert row.spent_at is None
    # The real token still works: the forgeries were refused for what they were.
    assert client.get(path).headers["Location"] == urls(pid_a).confirm


def assert_signed_in(app: Flask, pid: str, answer: TestResponse, works: bool) -> None:
    """The right code either signed in (to the overview, one session) or was refused."""
    if works:
        assert answer.headers["Location"] == urls(pid).overview
        assert sessions_count(app, pid) == 1
    else:
        assert answer.status_code == 400
        assert sessions_count(app, pid) == 0


@pytest.mark.parametrize(("wrong_codes", "works"), [(4, True), (5, False)])
def test_five_wrong_codes_lock_the_challenge(app, client, db, smtp, wrong_codes, works):
    pid = portal(db)
    csrf = csrf_token(ask(client, pid).text)
    _path, code = latest(app, smtp)
    for i in range(wrong_codes):
        refused = type_code(client, pid, wrong(code, i), csrf)
        assert refused.status_code == 400
        assert "That code is not right" in refused.text

    answer = type_code(client, pid, code, csrf)

    assert_signed_in(app, pid, answer, works)
    if not works:
        [row] = challenges(app, pid)
        assert row.spent_at is None and row.code_attempts == 5


def _fail_codes(app: Flask, pid: str, inbox: Inbox, failures: int, per_challenge: int) -> None:
    """`failures` wrong codes for ADDRESS, from fresh browsers, per_challenge each."""
    while failures:
        browser = app.test_client()
        csrf = csrf_token(ask(browser, pid).text)
        _path, code = latest(app, inbox)
        for i in range(min(per_challenge, failures)):
            assert type_code(browser, pid, wrong(code, i), csrf).status_code == 400
            failures -= 1


@pytest.mark.parametrize(
    ("limit", "failures", "works"),
    [("20 per day", 19, True), ("20 per day", 20, False), ("2 per day", 2, False)],
)
def test_wrong_codes_per_address_per_day_lock_even_a_fresh_challenge(
    app, db, smtp, limit, failures, works
):
    change_settings(
        app,
        CODE_FAILURE_LIMIT_PER_ADDRESS=limit,
        SIGNIN_LIMIT_PER_ADDRESS="100 per day",
        SIGNIN_LIMIT_PER_IP="100 per day",
        SECRET_ENDPOINT_LIMIT="1000 per minute",
    )
    pid = portal(db)
    _fail_codes(app, pid, smtp, failures, settings_of(app).CODE_ATTEMPTS_PER_CHALLENGE)

    fresh = app.test_client()
    csrf = csrf_token(ask(fresh, pid).text)
    _path, code = latest(app, smtp)
    answer = type_code(fresh, pid, code, csrf)

    assert_signed_in(app, pid, answer, works)
    if not works:
        # Another address, from the same IP, is not affected.
        colleague = app.test_client()
        csrf = csrf_token(ask(colleague, pid, "ar@acme.com").text)
        _path, other_code = latest(app, smtp, "ar@acme.com")
        signed_in = type_code(colleague, pid, other_code, csrf)
        assert signed_in.headers["Location"] == urls(pid).overview


@pytest.mark.parametrize("layout", ["{} {}", "{}{}", "{}-{}"])
def test_a_code_may_be_typed_with_a_space_a_dash_or_nothing(app, client, db, smtp, layout):
    pid = portal(db)
    csrf = csrf_token(ask(client, pid).text)
    _path, code = latest(app, smtp)
    first, last = code.split("-")

    answer = type_code(client, pid, layout.format(first, last), csrf)

    assert answer.status_code == 303
    assert answer.headers["Location"] == urls(pid).overview
    assert sessions_count(app, pid) == 1
