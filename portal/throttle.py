"""Rate limits. Flask-Limiter guards endpoints per client with a 429; the sign-in budgets
below are silent: over budget, the page answers the same and no email goes out; staff
sign-in failures buy growing delays (`try_backoff`), never a lock-out.

A client is its IPv4 address, or its IPv6 /64 (`client_key`): one subscriber line
hands out a whole /64, so a budget per IPv6 address would be no budget at all.

Storage is RATELIMIT_STORAGE_URI: memory:// (one process) by default, Redis in
production so that limits hold across workers. If the storage fails, budgets fail
closed: no email is sent and no code is checked.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from typing import TypeGuard

from flask import Flask, current_app, has_request_context, request
from flask_limiter import Limiter
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import RedisClusterStorage, RedisStorage
from redis.exceptions import RedisError

from portal import clock
from portal.config import settings

log = logging.getLogger(__name__)


def client_key_of(address: str | None) -> str:
    """The budget key of a client address: the network of RATELIMIT_IPV4_PREFIX (32: the
    address itself) or RATELIMIT_IPV6_PREFIX (64) bits around it. An IPv4-mapped IPv6
    address counts as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        prefix = settings().RATELIMIT_IPV4_PREFIX
    else:
        prefix = settings().RATELIMIT_IPV6_PREFIX
    if prefix == ip.max_prefixlen:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip.compressed.split('%')[0]}/{prefix}", strict=False))


def client_key() -> str:
    """This request's client, as every per-client budget and limit counts it."""
    return client_key_of(request.remote_addr if has_request_context() else None)


limiter = Limiter(key_func=client_key, strategy="moving-window")

# Per client, across every endpoint (customer or staff) that sends email or checks a secret.
secret_limit = limiter.shared_limit(lambda: settings().SECRET_ENDPOINT_LIMIT, scope="secrets")

# Budget name -> the setting holding its limits ("3 per 15 minutes; 10 per day").
BUDGETS = {
    "signin-address": "SIGNIN_LIMIT_PER_ADDRESS",
    "signin-known-device": "SIGNIN_LIMIT_PER_KNOWN_DEVICE",
    "signin-domain": "SIGNIN_LIMIT_PER_DOMAIN",
    "signin-ip": "SIGNIN_LIMIT_PER_IP",
    "signin-global": "SIGNIN_LIMIT_GLOBAL",
    "code-failures": "CODE_FAILURE_LIMIT_PER_ADDRESS",
    "staff-reauth": "STAFF_REAUTH_LIMIT_PER_USER",
    "api-auth-failures": "API_AUTH_FAILURE_LIMIT",
    "api-key": "API_LIMIT_PER_KEY",
    "api-portal-sessions": "API_PORTAL_SESSION_LIMIT_PER_KEY",
    "gateway-webhook-failures": "GATEWAY_WEBHOOK_FAILURE_LIMIT",
}

# What the storage raises when it cannot be reached or answer: only these mean an
# outage (fail closed). Anything else, such as a limit that does not parse, is a bug to
# see, not a quiet "no" to every sign-in.
STORAGE_ERRORS: tuple[type[BaseException], ...] = (StorageError, RedisError, OSError)


def init_app(app: Flask) -> None:
    app.extensions["portal.backoff"] = _MemoryBackoff()
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    # With the storage down, the per-IP 429 limit would otherwise raise and answer 500
    # before the silent budgets below are asked; those fail closed by themselves.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    limiter.init_app(app)


def _limits(budget: str):  # type: ignore[no-untyped-def]
    return parse_many(getattr(settings(), BUDGETS[budget]))


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
    except STORAGE_ERRORS:
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


def _scriptable(storage: object) -> TypeGuard[RedisStorage]:
    # A cluster spreads the keys over nodes, where a script may touch only one.
    return isinstance(storage, RedisStorage) and not isinstance(storage, RedisClusterStorage)


def _acquire_all(storage: RedisStorage, windows: list[tuple[RateLimitItem, str, str]]) -> bool:
    # register_script only hashes the text; the server keeps the script (EVALSHA).
    script = storage.get_connection().register_script(_ACQUIRE_ALL.encode())
    args: list[float | int] = [time.time()]
    for item, _budget, _key in windows:
        args += [item.amount, item.get_expiry()]
    keys = [storage.prefixed_key(item.key_for(budget, key)) for item, budget, key in windows]
    return bool(script(keys=keys, args=args))


def has_room(budget: str, key: str) -> bool:
    """Whether the budget has room, without spending (fails closed)."""
    try:
        return all(limiter.limiter.test(item, budget, key) for item in _limits(budget))
    except STORAGE_ERRORS:
        log.warning("rate-limit storage unavailable; refusing (fail closed)", exc_info=True)
        return False


def spend(budget: str, key: str) -> None:
    try:
        for item in _limits(budget):
            limiter.limiter.hit(item, budget, key)
    except STORAGE_ERRORS:
        log.warning("rate-limit storage unavailable; could not count", exc_info=True)


# When the storage cannot say: the shortest window any default budget has.
RETRY_AFTER_UNKNOWN = 60


def retry_after(budget: str, key: str) -> int:
    """Whole seconds until the budget has room for `key` again: what a 429 sends as
    Retry-After (RFC 9110), so that a well-behaved client waits exactly as long."""
    now = time.time()
    try:
        stats = [limiter.limiter.get_window_stats(item, budget, key) for item in _limits(budget)]
    except STORAGE_ERRORS:
        return RETRY_AFTER_UNKNOWN
    waits = [reset - now for reset, remaining in stats if remaining <= 0]
    return max(1, math.ceil(max(waits, default=1)))


def limiter_retry_after() -> int:
    """The same for the Flask-Limiter limit this request broke (a 429 page)."""
    try:
        broken = limiter.current_limit
        if broken is None:
            return RETRY_AFTER_UNKNOWN
        return max(1, broken.reset_at - int(time.time()))
    except STORAGE_ERRORS:
        return RETRY_AFTER_UNKNOWN


# --- growing delays (staff sign-in) ---------------------------------------------------

# Failures are forgotten a day after the last try.
BACKOFF_MEMORY_SECONDS = 24 * 60 * 60


def _delay(tries: int) -> float:
    """Seconds the next try must wait after `tries` unforgiven tries."""
    config = settings()
    free = config.STAFF_SIGNIN_FREE_FAILURES
    if tries < free:
        return 0.0
    first = float(config.STAFF_SIGNIN_FIRST_DELAY_SECONDS)
    cap = float(config.STAFF_SIGNIN_MAX_DELAY_SECONDS)
    return min(cap, first * 2.0 ** min(tries - free, 64))


def try_backoff(scope: str, key: str) -> bool:
    """Whether a try may go ahead now; if so it is counted at once, before the secret is
    checked, so that of a burst of concurrent tries only the free ones are checked.

    The first STAFF_SIGNIN_FREE_FAILURES tries are free; after that each one must wait
    twice as long as the one before, up to STAFF_SIGNIN_MAX_DELAY_SECONDS. Nothing is
    ever locked: the owner of the key can always try again later, and `forgive` (after
    a success) starts afresh. Fails closed.
    """
    try:
        storage = limiter.limiter.storage
        name = f"backoff/{scope}/{key}"
        if _scriptable(storage):
            return _redis_try(storage, name)
        backoff: _MemoryBackoff = current_app.extensions["portal.backoff"]
        return backoff.try_now(name, clock.now().timestamp())
    except STORAGE_ERRORS:
        log.warning("rate-limit storage unavailable; refusing (fail closed)", exc_info=True)
        return False


def forgive(scope: str, key: str) -> None:
    """After a success: the key's tries count from zero again."""
    try:
        storage = limiter.limiter.storage
        name = f"backoff/{scope}/{key}"
        if _scriptable(storage):
            storage.get_connection().delete(storage.prefixed_key(name))
        else:
            current_app.extensions["portal.backoff"].forget(name)
    except STORAGE_ERRORS:
        log.warning("rate-limit storage unavailable; could not forgive", exc_info=True)


class _MemoryBackoff:
    """Tries per key in this process (memory://, and storages that cannot run scripts)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tries: dict[str, tuple[int, float, float]] = {}  # key: (tries, next, last)

    def try_now(self, name: str, now: float) -> bool:
        with self._lock:
            tries, next_at, last = self._tries.get(name, (0, 0.0, now))
            if now - last > BACKOFF_MEMORY_SECONDS:
                tries, next_at = 0, 0.0
            if now < next_at:
                return False
            tries += 1
            self._tries[name] = (tries, now + _delay(tries), now)
            return True

    def forget(self, name: str) -> None:
        with self._lock:
            self._tries.pop(name, None)


# _MemoryBackoff.try_now and _delay, run atomically by the server (one round trip, and no
# try can slip between another's check and its count). ARGV: now, then the schedule, in
# whole milliseconds: Lua prints numbers with 14 digits, which would round seconds.
_TRY_BACKOFF = """
local now = tonumber(ARGV[1])
local free, first, cap, memory = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local tries = tonumber(redis.call('hget', KEYS[1], 'tries') or '0')
local next_at = tonumber(redis.call('hget', KEYS[1], 'next') or '0')
if now < next_at then
  return 0
end
tries = tries + 1
local delay = 0
if tries >= free then
  delay = math.floor(math.min(cap, first * 2 ^ math.min(tries - free, 64)))
end
redis.call('hset', KEYS[1], 'tries', tries, 'next', string.format('%d', now + delay))
redis.call('expire', KEYS[1], memory)
return 1
"""


def _redis_try(storage: RedisStorage, name: str) -> bool:
    config = settings()
    script = storage.get_connection().register_script(_TRY_BACKOFF.encode())
    args = [
        int(clock.now().timestamp() * 1000),
        config.STAFF_SIGNIN_FREE_FAILURES,
        int(float(config.STAFF_SIGNIN_FIRST_DELAY_SECONDS) * 1000),
        int(float(config.STAFF_SIGNIN_MAX_DELAY_SECONDS) * 1000),
        BACKOFF_MEMORY_SECONDS,
    ]
    return bool(script(keys=[storage.prefixed_key(name)], args=args))
