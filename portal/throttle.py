"""Rate limits. Flask-Limiter guards endpoints per IP with a 429; the sign-in budgets
below are silent: over budget, the page answers the same and no email goes out.

Storage is RATELIMIT_STORAGE_URI: memory:// (one process) by default, Redis in
production so that limits hold across workers. If the storage fails, budgets fail
closed: no email is sent and no code is checked.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many

log = logging.getLogger(__name__)

limiter = Limiter(key_func=get_remote_address, strategy="moving-window")

# Per IP, across every endpoint (customer or staff) that sends email or checks a secret.
secret_limit = limiter.shared_limit(
    lambda: current_app.config["SECRET_ENDPOINT_LIMIT"], scope="secrets"
)

# Budget name -> config key holding its limits ("3 per 15 minutes; 10 per day").
BUDGETS = {
    "signin-address": "SIGNIN_LIMIT_PER_ADDRESS",
    "signin-domain": "SIGNIN_LIMIT_PER_DOMAIN",
    "signin-ip": "SIGNIN_LIMIT_PER_IP",
    "signin-global": "SIGNIN_LIMIT_GLOBAL",
    "code-failures": "CODE_FAILURE_LIMIT_PER_ADDRESS",
    "staff-signin": "STAFF_SIGNIN_LIMIT_PER_ADDRESS",
    "api-auth-failures": "API_AUTH_FAILURE_LIMIT",
    "api-key": "API_LIMIT_PER_KEY",
}


def init_app(app: Flask) -> None:
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    # With the storage down, the per-IP 429 limit would otherwise raise and answer 500
    # before the silent budgets below are asked; those fail closed by themselves.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    limiter.init_app(app)


def _limits(budget: str):  # type: ignore[no-untyped-def]
    return parse_many(current_app.config[BUDGETS[budget]])


def within(*checks: tuple[str, str]) -> bool:
    """Whether every (budget, key) has room; if so, spend one from each.

    Fails closed: when the storage cannot be reached the answer is no.

    `test` only spares the other budgets when one is already spent; `hit` decides. Many
    requests at once (a burst across gunicorn workers) can all pass `test` before any of
    them hits, but `hit` takes its entry atomically in the storage and refuses once the
    limit is reached, so no more than the budget ever gets through.
    """
    strategy = limiter.limiter
    try:
        if not all(
            strategy.test(item, budget, key) for budget, key in checks for item in _limits(budget)
        ):
            return False
        for budget, key in checks:
            for item in _limits(budget):
                if not strategy.hit(item, budget, key):
                    return False
    except Exception:
        log.warning("rate-limit storage unavailable; refusing (fail closed)", exc_info=True)
        return False
    return True


def has_room(budget: str, key: str) -> bool:
    """Whether the budget has room, without spending (fails closed)."""
    try:
        return all(limiter.limiter.test(item, budget, key) for item in _limits(budget))
    except Exception:
        log.warning("rate-limit storage unavailable; refusing (fail closed)", exc_info=True)
        return False


def spend(budget: str, key: str) -> None:
    try:
        for item in _limits(budget):
            limiter.limiter.hit(item, budget, key)
    except Exception:
        log.warning("rate-limit storage unavailable; could not count", exc_info=True)
