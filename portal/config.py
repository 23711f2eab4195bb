"""Configuration: local-development defaults, then PORTAL_CONFIG (TOML), then PORTAL_* env,
checked once into the typed, frozen Settings that every module reads."""

from __future__ import annotations

import email.utils
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType, UnionType
from typing import Annotated, Any, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from flask import Config, Flask, current_app

# The one value that must never reach production; checked by `validate`.
DEV_SECRET_KEY = "dev-only-not-a-secret"

# A rate limit, "N per period; ...": checked at start-up, parsed where it is used.
RateLimit = Annotated[str, "rate limit"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting of the portal: one field per key, with its default and its type.

    `load` builds it once, checked, and nothing changes it after; code reads it with
    `settings()` (or `settings_of(app)`), never by string key from app.config, which
    holds only what Flask and its extensions read themselves (`FOR_FLASK`).
    """

    # Signs CSRF tokens and the (id-only) session cookie.
    SECRET_KEY: str = DEV_SECRET_KEY
    # Empty means "SQLite file under instance/", filled in by `load`.
    DATABASE_URL: str = ""
    # The only source of scheme and host in links we email; never the request's Host.
    PORTAL_BASE_URL: str = ""
    # Hosts Flask accepts in the Host header; empty means "the host of PORTAL_BASE_URL".
    TRUSTED_HOSTS: tuple[str, ...] = ()
    # Domain rules refuse these providers on top of the shipped list.
    PUBLIC_MAIL_PROVIDERS_EXTRA: tuple[str, ...] = ()
    # Flask-Mail.
    MAIL_SERVER: str = "127.0.0.1"
    MAIL_PORT: int = 25
    MAIL_USE_TLS: bool = False
    MAIL_USE_SSL: bool = False
    MAIL_USERNAME: str | None = None
    MAIL_PASSWORD: str | None = None
    MAIL_DEFAULT_SENDER: str = "Billing portal <billing@localhost>"
    # Seconds before an SMTP connection attempt or command gives up.
    MAIL_TIMEOUT: int = 10
    # Flask-Limiter storage; use redis://... in production so limits hold across workers.
    RATELIMIT_STORAGE_URI: str = "memory://"
    # Silent sign-in budgets (over budget: same page, no email). "N per period; ...".
    # Per address and per client: requests, counted as they are made.
    SIGNIN_LIMIT_PER_ADDRESS: RateLimit = "3 per 15 minutes; 10 per day"
    SIGNIN_LIMIT_PER_IP: RateLimit = "10 per 15 minutes; 50 per day"
    # Requests for an address from a browser it signed in from before (the device
    # cookie): this budget instead of the two above, so strangers cannot spend it.
    SIGNIN_LIMIT_PER_KNOWN_DEVICE: RateLimit = "3 per 15 minutes; 10 per day"
    # Per domain and global: emails sent to addresses that have not signed in to that
    # bill group before, counted by the worker when it sends one.
    SIGNIN_LIMIT_PER_DOMAIN: RateLimit = "30 per 15 minutes; 200 per day"
    SIGNIN_LIMIT_GLOBAL: RateLimit = "300 per 15 minutes"
    # Per-client budgets count an IPv4 address per this many leading bits (32: each
    # address), an IPv6 address per its /64 (one subscriber's usual allocation).
    RATELIMIT_IPV4_PREFIX: int = 32
    RATELIMIT_IPV6_PREFIX: int = 64
    # Days a browser is remembered as one an address signed in from (the device cookie).
    KNOWN_DEVICE_DAYS: int = 90
    # Wrong codes allowed per address per day, and per challenge.
    CODE_FAILURE_LIMIT_PER_ADDRESS: RateLimit = "20 per day"
    CODE_ATTEMPTS_PER_CHALLENGE: int = 5
    # Staff sign-in tries (password or second factor) per address and client: this many
    # are free, then each further try waits twice as long as the last, from the first
    # delay up to the maximum (seconds). Never a lock-out; a success starts afresh.
    STAFF_SIGNIN_FREE_FAILURES: int = 5
    STAFF_SIGNIN_FIRST_DELAY_SECONDS: int = 2
    STAFF_SIGNIN_MAX_DELAY_SECONDS: int = 900
    # Per-IP limit (429) on every endpoint that sends email or checks a secret.
    SECRET_ENDPOINT_LIMIT: RateLimit = "30 per minute; 300 per hour"
    # Tries, per signed-in staff member, at proving the current second factor in order
    # to move it to a new authenticator app.
    STAFF_REAUTH_LIMIT_PER_USER: RateLimit = "5 per 15 minutes; 20 per day"
    # How many proxies in front of the app set X-Forwarded-For (0: none, trust nothing).
    PROXY_FIX_X_FOR: int = 0
    # Payment gateway: "sandbox" (test cards; local development only), "stripe", or
    # "none" (list only). Empty: sandbox in local development, none otherwise.
    PAYMENT_GATEWAY: str = ""
    # Seconds a payment's review page stays good: confirming it later charges nothing
    # and asks the customer to review again.
    PAYMENT_REVIEW_TTL_SECONDS: int = 900
    # Stripe (PAYMENT_GATEWAY = "stripe"): the secret key (sk_test_... or sk_live_...;
    # a live key is refused in local development), the publishable key Stripe.js uses
    # in the browser, and the webhook endpoint's signing secret (whsec_...).
    STRIPE_SECRET_KEY: str = ""
    STRIPE_PUBLISHABLE_KEY: str = ""
    STRIPE_WEBHOOK_SECRET: str = ""
    # Where the API and Stripe.js are (the tests point both at localstripe); their
    # origins are what the Content-Security-Policy admits when the gateway is Stripe.
    STRIPE_API_BASE: str = "https://api.stripe.com"
    STRIPE_JS_URL: str = "https://js.stripe.com/v3/"
    # Seconds to wait for each answer from Stripe, and retries after a network error
    # (each with the same idempotency key, so never a second charge).
    STRIPE_TIMEOUT: int = 20
    STRIPE_MAX_NETWORK_RETRIES: int = 2
    # Webhooks in from the gateway with a bad signature allowed per client IP; over it,
    # 429 (valid ones are not counted).
    GATEWAY_WEBHOOK_FAILURE_LIMIT: RateLimit = "20 per 15 minutes; 100 per day"
    # Email transport: "smtp", or "console" (print to the log; the debug default).
    MAIL_TRANSPORT: str = ""
    # Run the outbox and sign-in worker in the web process (the demo's default).
    WORKER_IN_PROCESS: bool | None = None
    # Company single sign-on: seconds to wait for each answer from a company's OpenID
    # Connect provider (discovery, keys, token).
    SSO_TIMEOUT_SECONDS: int = 5
    # The demo data's company sign-in: an issuer such as http://127.0.0.1:9400 where
    # oidc-provider-mock runs (`python -m oidc_provider_mock`). Empty: no SSO in the demo.
    SSO_DEMO_ISSUER: str = ""
    # Sign-in defaults from SECURITY.md.
    SIGNIN_TTL_MINUTES: int = 15
    CUSTOMER_SESSION_IDLE_MINUTES: int = 30
    CUSTOMER_SESSION_MAX_HOURS: int = 12
    # A MaxMind or DB-IP city or country database (.mmdb) on this machine, for the
    # approximate place of a signed-in device. Empty: only the network is shown.
    GEOIP_DATABASE: str = ""
    STAFF_SESSION_IDLE_MINUTES: int = 30
    STAFF_SESSION_MAX_HOURS: int = 8
    # API: requests per key, and wrong keys per client IP (over either: 429).
    API_LIMIT_PER_KEY: RateLimit = "1200 per minute"
    API_AUTH_FAILURE_LIMIT: RateLimit = "20 per 15 minutes; 100 per day"
    # Portal sessions (one-time sign-in links) one API key may make; over it, 429.
    API_PORTAL_SESSION_LIMIT_PER_KEY: RateLimit = "60 per minute; 2000 per day"
    # Webhooks: seconds per attempt, attempts before a delivery is marked failed, and
    # whether endpoints may resolve to private addresses (empty: only in local dev).
    WEBHOOK_TIMEOUT: int = 5
    WEBHOOK_MAX_ATTEMPTS: int = 12
    WEBHOOK_ALLOW_PRIVATE_NETWORKS: bool | None = None
    # Notices to the billing contact: changes within this many minutes of the first are
    # merged into one email (0: each worker pass sends what has gathered), and at most
    # this many notices go to one recipient about one bill group in 24 hours; changes
    # beyond that wait for, and are listed in, the next allowed notice.
    NOTICE_WINDOW_MINUTES: int = 5
    NOTICE_LIMIT_PER_DAY: int = 10
    # Reminders (portal.reminders): the worker scans for those due at most once in this
    # many seconds (0: on every pass); the schedules themselves are per seller, set by staff.
    REMINDER_SCAN_SECONDS: int = 300
    # A new billing contact address gets one "you were named" email with a link that
    # works once, for this many hours; the same address is named again by email at most
    # once per CONTACT_NAMED_INTERVAL_HOURS, and one bill group names at most
    # CONTACT_NAMED_LIMIT_PER_DAY addresses a day.
    CONTACT_CONFIRM_TTL_HOURS: int = 72
    CONTACT_NAMED_INTERVAL_HOURS: int = 24
    CONTACT_NAMED_LIMIT_PER_DAY: int = 5
    # Babel locale for money and dates.
    LOCALE: str = "en_GB"
    # The issuer name authenticator apps show beside a staff member's codes.
    TOTP_ISSUER: str = "Billing portal"
    # Largest request body we accept, in bytes.
    MAX_CONTENT_LENGTH: int = 1024 * 1024


# Each key's type, from the fields: what `_check_values` holds a value from outside to.
TYPES: Mapping[str, Any] = MappingProxyType(get_type_hints(Settings, include_extras=True))

# Each key's default, from the fields.
DEFAULTS: Mapping[str, Any] = MappingProxyType({f.name: f.default for f in fields(Settings)})

# The keys Flask or an extension reads from app.config itself, so `install` puts them
# there too: Flask (the session and CSRF secret, Host check, body limit), Flask-Limiter
# and Flask-Mail. Our own code reads them from Settings like every other key.
FOR_FLASK = frozenset(
    {
        "SECRET_KEY",
        "TRUSTED_HOSTS",
        "MAX_CONTENT_LENGTH",
        "RATELIMIT_STORAGE_URI",
        "MAIL_SERVER",
        "MAIL_PORT",
        "MAIL_USE_TLS",
        "MAIL_USE_SSL",
        "MAIL_USERNAME",
        "MAIL_PASSWORD",
        "MAIL_DEFAULT_SENDER",
    }
)

# PORTAL_* variables that belong to the tooling, not to the app: the config file's path,
# and the test suite's and benchmarks' own settings.
ENV_NOT_CONFIG = ("PORTAL_CONFIG", "PORTAL_TEST_", "PORTAL_BENCH_")


class ConfigError(RuntimeError):
    """The configuration cannot run safely; the message says what to change."""


# Where `install` keeps an app's Settings.
EXTENSION = "portal.settings"


def settings() -> Settings:
    """The current app's settings."""
    return settings_of(current_app)


def settings_of(app: Flask) -> Settings:
    """An app's settings, outside a request or app context (factory, init_app, CLI)."""
    found: Settings = app.extensions[EXTENSION]
    return found


def load(app: Flask, overrides: Mapping[str, Any] | None = None) -> None:
    """Build the app's Settings in precedence order: defaults < file < environment <
    overrides, and give Flask and its extensions their keys in app.config.

    Every key from the file and the environment must be a field of Settings, upper case,
    with a value of the field's type (rate limits must parse): a typo stops the app
    with a message naming the key and where it came from, instead of quietly running on
    the default (or refusing every sign-in, for a limit that does not parse). Overrides
    that are not settings of the portal (TESTING, Flask's own keys) go to app.config.
    """
    values = Config(app.root_path, dict(DEFAULTS))
    sources: dict[str, str] = {}
    path = os.environ.get("PORTAL_CONFIG")
    if path:
        from_file = _read_file(os.path.abspath(path))
        sources.update(_check_names(from_file, f"the config file {path}"))
        values.from_mapping(from_file)
    sources.update(_check_environment())
    values.from_prefixed_env("PORTAL")
    # PORTAL_BASE_URL in the environment lands as BASE_URL; it is the name people type.
    if "BASE_URL" in values:
        values["PORTAL_BASE_URL"] = values.pop("BASE_URL")
    if overrides:
        values.from_mapping(overrides)
        app.config.from_mapping({k: v for k, v in overrides.items() if k not in DEFAULTS})
        sources.update({key: "create_app()" for key in overrides if key in DEFAULTS})
    _check_values(values, sources)
    if not values["DATABASE_URL"]:
        os.makedirs(app.instance_path, exist_ok=True)
        values["DATABASE_URL"] = "sqlite:///" + os.path.join(app.instance_path, "portal.db")
    if not values["PORTAL_BASE_URL"] and is_local(app):
        values["PORTAL_BASE_URL"] = "http://127.0.0.1:5000"
    values["PORTAL_BASE_URL"] = values["PORTAL_BASE_URL"].rstrip("/")
    if not values["MAIL_TRANSPORT"]:
        values["MAIL_TRANSPORT"] = "console" if app.debug else "smtp"
    if not values["PAYMENT_GATEWAY"]:
        values["PAYMENT_GATEWAY"] = "sandbox" if is_local(app) else "none"
    if values["WORKER_IN_PROCESS"] is None:
        values["WORKER_IN_PROCESS"] = app.debug
    # TOML and JSON lists become tuples: nothing in a Settings can change.
    typed: dict[str, Any] = {
        key: tuple(values[key]) if isinstance(values[key], list) else values[key]
        for key in DEFAULTS
    }
    built = Settings(**typed)
    validate(app, built)
    if not built.TRUSTED_HOSTS and not is_local(app):
        host = urlsplit(built.PORTAL_BASE_URL).hostname or ""
        built = replace(built, TRUSTED_HOSTS=(host,))
    install(app, built)


def install(app: Flask, built: Settings) -> None:
    """Make `built` the app's settings, and copy the keys Flask and its extensions read
    into app.config. `load` calls it once; tests that need other settings once the app
    is built call it with a `dataclasses.replace` of the app's settings."""
    app.extensions[EXTENSION] = built
    for key in FOR_FLASK:
        value = getattr(built, key)
        app.config[key] = list(value) if isinstance(value, tuple) else value


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(
            f"PORTAL_CONFIG names {path}, which cannot be read: {exc.strerror}."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The config file {path} is not valid TOML: {exc}.") from None


def _check_names(values: Mapping[str, Any], where: str) -> dict[str, str]:
    """Refuse a key the portal does not know; returns where each key came from."""
    for key in values:
        if key not in DEFAULTS:
            hint = " Keys are upper case." if key.upper() in DEFAULTS else ""
            raise ConfigError(
                f"{key} in {where} is not a setting of the portal.{hint} "
                "config.example.toml lists every key."
            )
    return {key: where for key in values}


def _check_environment() -> dict[str, str]:
    sources = {}
    for variable in os.environ:
        if not variable.startswith("PORTAL_") or variable.startswith(ENV_NOT_CONFIG):
            continue
        key = variable.removeprefix("PORTAL_")
        key = "PORTAL_BASE_URL" if key == "BASE_URL" else key
        sources.update(_check_names({key: None}, f"the environment variable {variable}"))
    return sources


def _check_values(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """Each value set from outside has its field's type; each rate limit parses."""
    from limits import parse_many

    for key, where in sources.items():
        value: Any = values[key]
        expected, nullable = _plain_type(TYPES[key])
        if nullable and value is None:
            continue
        # TOML and JSON have lists, not tuples.
        accepted = (list, tuple) if expected is tuple else expected
        # bool is an int in Python; neither may stand for the other here.
        if not isinstance(value, accepted) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"{key} in {where} must be {_TYPE_NAMES.get(expected, expected.__name__)}, "
                f"not {value!r}."
            )
        if isinstance(value, list | tuple) and not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{key} in {where} must be a list of strings, not {value!r}.")
        if TYPES[key] == RateLimit:
            try:
                parse_many(str(value))
            except ValueError:
                raise ConfigError(
                    f"{key} in {where} is not a rate limit: {value!r}. Write limits as "
                    '"N per period", several joined by ";", e.g. "3 per 15 minutes; 10 per day".'
                ) from None


def _plain_type(hint: Any) -> tuple[type, bool]:
    """A field's class (str, int, bool or tuple), and whether it may be None."""
    if get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    nullable = False
    if isinstance(hint, UnionType):
        others = [arg for arg in get_args(hint) if arg is not type(None)]
        nullable, hint = len(others) < len(get_args(hint)), others[0]
    plain = get_origin(hint) or hint
    assert isinstance(plain, type), hint
    return plain, nullable


_TYPE_NAMES = {str: "a string", int: "a whole number", bool: "true or false", tuple: "a list"}


def is_local(app: Flask) -> bool:
    """Local development or tests: the only places the relaxed defaults may apply."""
    return bool(app.debug or app.testing or app.config.get("TESTING"))


def validate(app: Flask, config: Settings) -> None:
    """Refuse to start with settings that are unsafe outside local development."""
    base_url = config.PORTAL_BASE_URL
    if base_url and not base_url.startswith(("https://", "http://")):
        raise ConfigError(f"PORTAL_BASE_URL must start with https:// (got {base_url!r}).")
    if config.MAIL_TRANSPORT not in ("smtp", "console"):
        raise ConfigError("MAIL_TRANSPORT must be smtp or console.")
    if not 1 <= config.SIGNIN_TTL_MINUTES <= 30:
        raise ConfigError("SIGNIN_TTL_MINUTES must be between 1 and 30.")
    if not 8 <= config.RATELIMIT_IPV4_PREFIX <= 32:
        raise ConfigError("RATELIMIT_IPV4_PREFIX must be between 8 and 32.")
    if not 32 <= config.RATELIMIT_IPV6_PREFIX <= 128:
        raise ConfigError("RATELIMIT_IPV6_PREFIX must be between 32 and 128.")
    if not 1 <= config.SSO_TIMEOUT_SECONDS <= 30:
        raise ConfigError("SSO_TIMEOUT_SECONDS must be between 1 and 30.")
    if not 0 <= config.REMINDER_SCAN_SECONDS <= 86400:
        raise ConfigError("REMINDER_SCAN_SECONDS must be between 0 and 86400.")
    if not 0 <= config.NOTICE_WINDOW_MINUTES <= 60:
        raise ConfigError("NOTICE_WINDOW_MINUTES must be between 0 and 60.")
    for key in (
        "NOTICE_LIMIT_PER_DAY",
        "CONTACT_CONFIRM_TTL_HOURS",
        "CONTACT_NAMED_INTERVAL_HOURS",
        "CONTACT_NAMED_LIMIT_PER_DAY",
    ):
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be at least 1.")
    _name, sender = email.utils.parseaddr(config.MAIL_DEFAULT_SENDER)
    _local, at, domain = sender.rpartition("@")
    if not at or not domain.strip():
        # Every message's Message-ID is made on this domain; without one nothing sends.
        raise ConfigError(
            "MAIL_DEFAULT_SENDER must be an address with a domain, e.g. "
            f'"Billing <billing@example.com>" (got {config.MAIL_DEFAULT_SENDER!r}).'
        )
    from portal.access import AccessError, canonical_domain

    for provider in config.PUBLIC_MAIL_PROVIDERS_EXTRA:
        try:
            canonical_domain(provider)
        except AccessError as exc:
            raise ConfigError(f"PUBLIC_MAIL_PROVIDERS_EXTRA: {exc.message}") from None
    _check_stripe(app, config)
    if is_local(app):
        return
    if config.MAIL_TRANSPORT != "smtp":
        raise ConfigError("MAIL_TRANSPORT must be smtp outside local development.")
    if config.PAYMENT_GATEWAY == "sandbox":
        raise ConfigError(
            "PAYMENT_GATEWAY = sandbox takes card numbers on this server: it is for local "
            "development and tests only. Use none, or a real processor's gateway."
        )
    secret = config.SECRET_KEY
    if not secret or secret == DEV_SECRET_KEY or len(secret) < 32:
        raise ConfigError(
            "SECRET_KEY is unset, too short or the development default. Set a random value "
            "of at least 32 characters, e.g. PORTAL_SECRET_KEY="
            '"$(python -c "import secrets; print(secrets.token_urlsafe(48))")".'
        )
    if not base_url:
        raise ConfigError(
            "PORTAL_BASE_URL is not set. It is the only source of the host in emailed "
            "links, e.g. PORTAL_BASE_URL=https://billing.example.com."
        )
    if not base_url.startswith("https://"):
        raise ConfigError("PORTAL_BASE_URL must use https:// outside local development.")


def _check_stripe(app: Flask, config: Settings) -> None:
    """A live Stripe key never runs in local development; the Stripe gateway needs its
    keys and the webhook secret, of the kinds each must be, and https outside it."""
    secret = config.STRIPE_SECRET_KEY
    if secret.startswith(("sk_live_", "rk_live_")) and (app.debug or is_local(app)):
        raise ConfigError(
            "STRIPE_SECRET_KEY is a live key (sk_live_...) in local development or debug "
            "mode, where anything may charge a real card. Use a test key (sk_test_...)."
        )
    if config.PAYMENT_GATEWAY != "stripe":
        return
    wanted = {
        "STRIPE_SECRET_KEY": ("sk_", "rk_"),
        "STRIPE_PUBLISHABLE_KEY": ("pk_",),
        "STRIPE_WEBHOOK_SECRET": ("whsec_",),
    }
    for key, prefixes in wanted.items():
        value = getattr(config, key)
        if not value.strip():
            raise ConfigError(
                f"{key} is not set, and PAYMENT_GATEWAY is stripe: copy it from the Stripe "
                "dashboard (Developers, API keys; the webhook secret from the endpoint)."
            )
        if not value.startswith(prefixes):
            raise ConfigError(f"{key} must start with {' or '.join(prefixes)}.")
    live_secret = secret.startswith(("sk_live_", "rk_live_"))
    if live_secret != config.STRIPE_PUBLISHABLE_KEY.startswith("pk_live_"):
        raise ConfigError(
            "STRIPE_SECRET_KEY and STRIPE_PUBLISHABLE_KEY must both be live keys or both test keys."
        )
    schemes = ("http://", "https://") if is_local(app) else ("https://",)
    for key in ("STRIPE_API_BASE", "STRIPE_JS_URL"):
        value = getattr(config, key)
        if not value.startswith(schemes) or not urlsplit(value).hostname:
            raise ConfigError(f"{key} must be an {schemes[-1]} address (got {value!r}).")
    if not 1 <= config.STRIPE_TIMEOUT <= 120:
        raise ConfigError("STRIPE_TIMEOUT must be between 1 and 120 seconds.")
    if not 0 <= config.STRIPE_MAX_NETWORK_RETRIES <= 5:
        raise ConfigError("STRIPE_MAX_NETWORK_RETRIES must be between 0 and 5.")
