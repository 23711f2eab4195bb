"""The Stripe settings: refused live in local development, refused incomplete, and the
Content-Security-Policy admits Stripe's origins only when the gateway is Stripe."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from portal.app import create_app
from portal.config import ConfigError, settings_of
from tests.settings import change_settings
from tests.stripe_helpers import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET

STRIPE = {
    "PAYMENT_GATEWAY": "stripe",
    "STRIPE_SECRET_KEY": SECRET_KEY,
    "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
    "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
}
LOCAL = {"TESTING": True, "DATABASE_URL": "sqlite://", "SECRET_KEY": "t" * 40}
PRODUCTION = {
    "DATABASE_URL": "sqlite://",
    "SECRET_KEY": "p" * 40,
    "PORTAL_BASE_URL": "https://billing.example.com",
}
LIVE = {"STRIPE_SECRET_KEY": "sk_live_abc", "STRIPE_PUBLISHABLE_KEY": "pk_live_abc"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("PORTAL_") or name == "FLASK_DEBUG":
            monkeypatch.delenv(name)


def test_a_test_mode_stripe_gateway_starts_locally() -> None:
    app = create_app({**LOCAL, **STRIPE})
    assert settings_of(app).PAYMENT_GATEWAY == "stripe"


@pytest.mark.parametrize("gateway", ["stripe", "sandbox", "none"])
def test_a_live_secret_key_is_refused_in_local_development(gateway: str) -> None:
    with pytest.raises(ConfigError, match="STRIPE_SECRET_KEY is a live key"):
        create_app({**LOCAL, **STRIPE, **LIVE, "PAYMENT_GATEWAY": gateway})


def test_a_live_secret_key_is_refused_in_debug_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_DEBUG", "1")
    with pytest.raises(ConfigError, match="STRIPE_SECRET_KEY is a live key"):
        create_app({"DATABASE_URL": "sqlite://", **STRIPE, **LIVE})


def test_live_keys_start_in_production() -> None:
    app = create_app({**PRODUCTION, **STRIPE, **LIVE})
    assert settings_of(app).STRIPE_SECRET_KEY == "sk_live_abc"


@pytest.mark.parametrize(
    "key", ["STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET"]
)
@pytest.mark.parametrize("value", ["", "  "])
def test_a_missing_key_is_refused_by_name(key: str, value: str) -> None:
    for base in (LOCAL, PRODUCTION):
        with pytest.raises(ConfigError, match=f"{key} is not set, and PAYMENT_GATEWAY is stripe"):
            create_app({**base, **STRIPE, key: value})


def test_missing_keys_are_fine_without_the_stripe_gateway() -> None:
    assert settings_of(create_app({**LOCAL, "PAYMENT_GATEWAY": "sandbox"})).STRIPE_SECRET_KEY == ""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"STRIPE_SECRET_KEY": "pk_test_x"}, "STRIPE_SECRET_KEY must start with sk_ or rk_"),
        ({"STRIPE_PUBLISHABLE_KEY": "sk_test_x"}, "STRIPE_PUBLISHABLE_KEY must start with pk_"),
        ({"STRIPE_WEBHOOK_SECRET": "secret"}, "STRIPE_WEBHOOK_SECRET must start with whsec_"),
        ({"STRIPE_PUBLISHABLE_KEY": "pk_live_x"}, "both be live keys or both test keys"),
        ({"STRIPE_API_BASE": "http://api.example.com"}, "STRIPE_API_BASE must be an https://"),
        ({"STRIPE_JS_URL": "js.stripe.com/v3/"}, "STRIPE_JS_URL must be an https://"),
        ({"STRIPE_TIMEOUT": 0}, "STRIPE_TIMEOUT must be between"),
        ({"STRIPE_MAX_NETWORK_RETRIES": 9}, "STRIPE_MAX_NETWORK_RETRIES must be between"),
    ],
)
def test_keys_of_the_wrong_kind_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app({**PRODUCTION, **STRIPE, **changes})


def test_localstripe_over_http_is_for_local_development_only() -> None:
    base = "http://127.0.0.1:8420"
    local = {"STRIPE_API_BASE": base, "STRIPE_JS_URL": base + "/js.stripe.com/v3/"}
    assert settings_of(create_app({**LOCAL, **STRIPE, **local})).STRIPE_API_BASE.startswith("http:")
    with pytest.raises(ConfigError, match="STRIPE_API_BASE must be an https://"):
        create_app({**PRODUCTION, **STRIPE, **local})


# --- the Content-Security-Policy ------------------------------------------------------


def csp(client: FlaskClient) -> dict[str, str]:
    header = client.get("/healthz").headers["Content-Security-Policy"]
    return {part.split()[0]: part for part in (p.strip() for p in header.split(";")) if part}


def test_without_stripe_the_csp_admits_nothing_of_stripes(app: Flask, client: FlaskClient) -> None:
    for gateway in ("sandbox", "none"):
        change_settings(app, PAYMENT_GATEWAY=gateway)
        policy = csp(client)
        assert "stripe" not in " ".join(policy.values())
        assert set(policy) == {
            "default-src", "form-action", "frame-ancestors", "object-src", "base-uri"
        }  # fmt: skip
        assert policy["default-src"] == "default-src 'self'"


def test_with_stripe_the_csp_admits_stripes_origins(app: Flask, client: FlaskClient) -> None:
    change_settings(app, **STRIPE)
    policy = csp(client)
    assert policy["script-src"] == "script-src 'self' https://js.stripe.com"
    assert policy["frame-src"] == "frame-src https://js.stripe.com https://hooks.stripe.com"
    assert policy["connect-src"] == (
        "connect-src 'self' https://api.stripe.com https://js.stripe.com"
    )
    # What stays as strict as before.
    assert policy["default-src"] == "default-src 'self'"
    assert policy["frame-ancestors"] == "frame-ancestors 'none'"
    assert "'unsafe-inline'" not in " ".join(policy.values())


def test_with_localstripe_the_csp_admits_its_origin_only(app: Flask, client: FlaskClient) -> None:
    base = "http://127.0.0.1:8420"
    change_settings(app, **STRIPE, STRIPE_API_BASE=base, STRIPE_JS_URL=base + "/js.stripe.com/v3/")
    policy = csp(client)
    assert policy["script-src"] == f"script-src 'self' {base}"
    assert policy["frame-src"] == f"frame-src {base}"
    assert policy["connect-src"] == f"connect-src 'self' {base}"
    assert "stripe.com" not in " ".join(policy.values())
