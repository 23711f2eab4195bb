"""Rate limits. Flask-Limiter guards endpoints per IP with a 429; the sign-in budgets
below are silent: over budget, the page answers the same and no email goes out.

Storage is RATELIMIT_STORAGE_URI: memory:// (one process) by default, Redis in
production so that limits hold across workers. If the storage fails, budgets fail
closed: no email is sent and no code is checked.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from limits.storage import RedisClusterStorage, RedisStorage

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
    "staff-reauth": "STAFF_REAUTH_LIMIT_PER_USER",
    "api-auth-failures": "API_AUTH_FAILURE_LIMIT",
    "api-key": "API_LIMIT_PER_KEY",
}

# Every config key that holds a rate limit ("N per period; ..."): checked at start-up.
LIMIT_KEYS = frozenset(BUDGETS.values()) | {"SECRET_ENDPOINT_LIMIT"}


def init_app(app: Flask) -> None:
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    # With the storage down, the per-IP 429 limit would otherwise raise and answer 500
    # before the silent budgets below are asked; those fail closed by themselves.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    limiter.init_app(app)


def _limits(budget: str):  # type: ignore[no-untyped-def]
    return parse_many(current_app.config[BUDGETS[budget]])


def within(*checks: tuple[str, str]) -> bool:
    """Whether every (budget, key) has room; if so, spend one from each, else none.

    Fails closed: when the storage cannot be reached the answer is no.

    On Redis all of it is one script, run atomically by the server: one round trip
    however many budgets and windows (a sign-in asks four budgets, seven windows), and no
    request can slip between another's check and its spending. Elsewhere (memory:// in
    development and tests) `test` spares the other budgets when one is already spent and
    `hit` decides: `hit` takes its entry atomically and refuses once the limit is
    reached, so even a burst that all passed `test` gets no more than the budget.
    """
    try:
        windows = [(item, budget, key) for budget, key in checks for item in _limits(budget)]
        storage = limiter.limiter.storage
        if _scriptable(storage):
            return _acquire_all(storage, windows)
        strategy = limiter.limiter
        return all(strategy.test(*window) for window in windows) and all(
            strategy.hit(*window) for window in windows
        )
    except Exception:
        log.warning("rate-limit storage unavailable; refusing (fail closed)", exc_info=True)
        return False


# The moving windows of limits' Redis storage (a list of timestamps per limit, newest
# first, trimmed to the limit), so has_room, spend and Flask-Limiter read the same
# entries. Every window is checked before any is spent.
_ACQUIRE_ALL = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local oldest = redis.call('lindex', key, limit - 1)
  if oldest and tonumber(oldest) >= now - expiry then
    return 0
  end
end
for i, key in ipairs(KEYS) do
  local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  redis.call('lpush', key, now)
  redis.call('ltrim', key, 0, limit - 1)
  redis.call('expire', key, expiry)
end
return 1
"""


def _scriptable(storage: object) -> bool:
    # A cluster spreads the keys over nodes, where a script may touch only one.
    return isinstance(storage, RedisStorage) and not isinstance(storage, RedisClusterStorage)


def _acquire_all(storage: RedisStorage, windows: list[tuple[RateLimitItem, str, str]]) -> bool:
    # register_script only hashes the text; the server keeps the script (EVALSHA).
    script = storage.get_connection().register_script(_ACQUIRE_ALL)
    args: list[float | int] = [time.time()]
    for item, _budget, _key in windows:
        args += [item.amount, item.get_expiry()]
    keys = [storage.prefixed_key(item.key_for(budget, key)) for item, budget, key in windows]
    return bool(script(keys=keys, args=args))


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
