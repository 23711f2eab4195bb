"""Only the rate-limit storage failing is an outage; a limit that does not parse is a bug
that must show, not a quiet "no" to every sign-in logged as an outage."""

from __future__ import annotations

import logging

import pytest

from portal import throttle
from portal.app import create_app
from tests.conftest import TEST_CONFIG, free_port
from tests.settings import change_settings


def test_a_broken_limit_string_raises_instead_of_refusing_quietly(app, caplog):
    with app.app_context():
        assert throttle.within(("signin-address", "ap@acme.com"))
        change_settings(app, SIGNIN_LIMIT_PER_ADDRESS="3 per 15 minuts")  # a typo after start-up
        caplog.set_level(logging.WARNING, logger="portal.throttle")
        with pytest.raises(ValueError):
            throttle.within(("signin-address", "ap@acme.com"))
        with pytest.raises(ValueError):
            throttle.has_room("signin-address", "ap@acme.com")
    assert "storage unavailable" not in caplog.text


def test_an_unreachable_storage_fails_closed_and_says_so(tmp_path, caplog):
    app = create_app(
        {
            **TEST_CONFIG,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
            "RATELIMIT_STORAGE_URI": f"redis://127.0.0.1:{free_port()}",
        }
    )
    caplog.set_level(logging.WARNING, logger="portal.throttle")
    with app.app_context():
        assert throttle.within(("signin-address", "ap@acme.com")) is False
        assert throttle.has_room("signin-address", "ap@acme.com") is False
        assert throttle.try_backoff("staff-signin", "a|b") is False
    assert "storage unavailable" in caplog.text
