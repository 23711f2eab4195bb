"""Configuration precedence and the refusal to start with unsafe settings."""

from __future__ import annotations

import re
import tomllib

import pytest

from portal import ROOT
from portal.app import create_app
from portal.config import DEFAULTS, DEV_SECRET_KEY, ConfigError, settings_of

GOOD_SECRET = "s" * 40
PRODUCTION = {"DATABASE_URL": "sqlite://", "SECRET_KEY": GOOD_SECRET}
URL = "https://b.example.com"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Tests here control the environment the app reads."""
    for name in list(__import__("os").environ):
        if name.startswith("PORTAL_") or name == "FLASK_DEBUG":
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("secret", "reason"),
    [(DEV_SECRET_KEY, "default"), ("", "empty"), (None, "unset"), ("short", "short")],
)
def test_refuses_to_start_without_a_real_secret_key(secret, reason):
    config = {**PRODUCTION, "SECRET_KEY": secret, "PORTAL_BASE_URL": "https://b.example.com"}
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app(config)


def test_refuses_to_start_without_portal_base_url():
    with pytest.raises(ConfigError, match="PORTAL_BASE_URL is not set"):
        create_app(PRODUCTION)


def test_refuses_plain_http_base_url_in_production():
    with pytest.raises(ConfigError, match="https"):
        create_app({**PRODUCTION, "PORTAL_BASE_URL": "http://billing.example.com"})


def test_refuses_a_base_url_that_is_not_a_url():
    with pytest.raises(ConfigError, match="must start with"):
        create_app({**PRODUCTION, "PORTAL_BASE_URL": "billing.example.com"})


def test_debug_mode_runs_on_the_defaults(monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app({"DATABASE_URL": "sqlite://"})
    assert settings_of(app).SECRET_KEY == DEV_SECRET_KEY
    assert settings_of(app).PORTAL_BASE_URL == "http://127.0.0.1:5000"


def test_sqlite_under_instance_is_the_embedded_default(monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app()
    assert settings_of(app).DATABASE_URL == f"sqlite:///{ROOT / 'instance' / 'portal.db'}"


def test_precedence_defaults_file_environment_overrides(tmp_path, monkeypatch):
    config_file = tmp_path / "portal.toml"
    config_file.write_text(
        f'SECRET_KEY = "{GOOD_SECRET}"\n'
        'PORTAL_BASE_URL = "https://from-file.example.com/"\n'
        "MAIL_PORT = 2525\n"
        'MAIL_SERVER = "smtp.from-file.example.com"\n'
        'DATABASE_URL = "sqlite://"\n'
    )
    monkeypatch.setenv("PORTAL_CONFIG", str(config_file))
    monkeypatch.setenv("PORTAL_MAIL_PORT", "2526")
    app = create_app({"MAIL_SERVER": "smtp.override.example.com"})
    assert settings_of(app).SECRET_KEY == GOOD_SECRET  # file over default
    assert settings_of(app).MAIL_PORT == 2526  # environment over file, parsed as JSON
    assert settings_of(app).MAIL_SERVER == "smtp.override.example.com"  # override over all
    assert settings_of(app).PORTAL_BASE_URL == "https://from-file.example.com"  # no slash
    assert settings_of(app).MAIL_DEFAULT_SENDER == DEFAULTS["MAIL_DEFAULT_SENDER"]


@pytest.mark.parametrize("variable", ["PORTAL_BASE_URL", "PORTAL_PORTAL_BASE_URL"])
def test_base_url_from_the_environment(monkeypatch, variable):
    monkeypatch.setenv(variable, "https://env.example.com")
    app = create_app(PRODUCTION)
    assert settings_of(app).PORTAL_BASE_URL == "https://env.example.com"


def test_only_the_base_url_host_is_trusted_in_production():
    app = create_app({**PRODUCTION, "PORTAL_BASE_URL": "https://billing.example.com"})
    client = app.test_client()
    assert client.get("/", headers={"Host": "billing.example.com"}).status_code == 200
    assert client.get("/", headers={"Host": "evil.example.net"}).status_code == 400


def test_production_cookies_are_secure_and_host_prefixed():
    app = create_app({**PRODUCTION, "PORTAL_BASE_URL": "https://billing.example.com"})
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert app.config["SESSION_COOKIE_NAME"] == "__Host-session"


def test_example_config_documents_every_key():
    path = ROOT / "config.example.toml"
    with path.open("rb") as handle:
        example = tomllib.load(handle)
    assert set(DEFAULTS) <= set(example), set(DEFAULTS) - set(example)
    lines = path.read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z_]+\s*=", line):
            assert lines[index - 1].startswith("#"), f"{line!r} has no comment above it"


def test_example_config_loads_and_still_demands_a_secret(monkeypatch):
    monkeypatch.setenv("PORTAL_CONFIG", str(ROOT / "config.example.toml"))
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app({"DATABASE_URL": "sqlite://"})
    monkeypatch.setenv("PORTAL_SECRET_KEY", GOOD_SECRET)
    app = create_app({"DATABASE_URL": "sqlite://"})
    assert settings_of(app).PORTAL_BASE_URL.startswith("https://")


@pytest.mark.parametrize("sender", ["billing", "Billing portal <billing>", "", "<@>"])
def test_the_sender_address_must_have_a_domain(sender):
    """Message-IDs are made on its domain: without one, every message would fail at send."""
    with pytest.raises(ConfigError, match="MAIL_DEFAULT_SENDER must be an address with a domain"):
        create_app({**PRODUCTION, "PORTAL_BASE_URL": URL, "MAIL_DEFAULT_SENDER": sender})


def test_a_sender_with_a_domain_starts():
    sender = "Acme <bills@acme.example>"
    app = create_app({**PRODUCTION, "PORTAL_BASE_URL": URL, "MAIL_DEFAULT_SENDER": sender})
    assert settings_of(app).MAIL_DEFAULT_SENDER == sender


def test_extra_public_providers_must_be_domains():
    with pytest.raises(ConfigError, match="PUBLIC_MAIL_PROVIDERS_EXTRA"):
        create_app(
            {
                **PRODUCTION,
                "PORTAL_BASE_URL": "https://b.example.com",
                "PUBLIC_MAIL_PROVIDERS_EXTRA": ["mail,example.com"],
            }
        )


def test_the_sandbox_payment_gateway_is_refused_in_production():
    """It takes card numbers on this server: demos and tests only."""
    base = {**PRODUCTION, "PORTAL_BASE_URL": "https://b.example.com"}
    with pytest.raises(ConfigError, match="sandbox"):
        create_app({**base, "PAYMENT_GATEWAY": "sandbox"})
    assert settings_of(create_app(base)).PAYMENT_GATEWAY == "none"


def test_the_sandbox_is_the_local_default(monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    assert settings_of(create_app({"DATABASE_URL": "sqlite://"})).PAYMENT_GATEWAY == "sandbox"


# --- a config that checks itself -----------------------------------------------------


def write_config(tmp_path, monkeypatch, text: str) -> str:
    config_file = tmp_path / "portal.toml"
    config_file.write_text(f'SECRET_KEY = "{GOOD_SECRET}"\nDATABASE_URL = "sqlite://"\n' + text)
    monkeypatch.setenv("PORTAL_CONFIG", str(config_file))
    return str(config_file)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('SIGNIN_LIMIT_PER_ADRESS = "3 per 15 minutes"', "SIGNIN_LIMIT_PER_ADRESS in the config"),
        ('mail_server = "smtp.example.com"', "Keys are upper case"),
        ('MAIL_PORT = "2525"', "MAIL_PORT in the config file .* must be a whole number"),
        ("MAIL_USE_TLS = 1", "MAIL_USE_TLS in .* must be true or false"),
        ("SIGNIN_TTL_MINUTES = true", "SIGNIN_TTL_MINUTES .* must be a whole number"),
        ('TRUSTED_HOSTS = "billing.example.com"', "TRUSTED_HOSTS .* must be a list"),
        ("TRUSTED_HOSTS = [1]", "TRUSTED_HOSTS .* a list of strings"),
        ("MAIL_PASSWORD = 12", "MAIL_PASSWORD .* must be a string"),
        (
            'SIGNIN_LIMIT_PER_ADDRESS = "3 per 15 minuts"',
            "SIGNIN_LIMIT_PER_ADDRESS .* not a rate limit",
        ),
        ('STAFF_REAUTH_LIMIT_PER_USER = "five a day"', "STAFF_REAUTH_LIMIT_PER_USER .* not a rate"),
    ],
)
def test_a_bad_key_or_value_in_the_file_stops_the_app_naming_both(
    tmp_path, monkeypatch, line, message
):
    path = write_config(tmp_path, monkeypatch, line + "\n")
    with pytest.raises(ConfigError, match=message) as raised:
        create_app({"PORTAL_BASE_URL": "https://b.example.com"})
    assert path in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PORTAL_SIGNIN_LIMIT_PER_ADRESS", "3 per day", "PORTAL_SIGNIN_LIMIT_PER_ADRESS is not"),
        ("PORTAL_mail_server", "smtp.example.com", "Keys are upper case"),
        ("PORTAL_SIGNIN_TTL_MINUTES", "fifteen", "SIGNIN_TTL_MINUTES in the environment variable"),
        ("PORTAL_SIGNIN_LIMIT_GLOBAL", "300 per 15 minuts", "SIGNIN_LIMIT_GLOBAL .* not a rate"),
    ],
)
def test_a_bad_environment_variable_stops_the_app_naming_it(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        create_app({**PRODUCTION, "PORTAL_BASE_URL": "https://b.example.com"})


def test_the_tooling_s_own_variables_are_not_settings(monkeypatch):
    monkeypatch.setenv("PORTAL_TEST_DATABASE_URL", "postgresql://elsewhere")
    monkeypatch.setenv("PORTAL_BENCH_DATABASE_URL", "postgresql://elsewhere")
    app = create_app({**PRODUCTION, "PORTAL_BASE_URL": "https://b.example.com"})
    assert "TEST_DATABASE_URL" not in app.config and "BENCH_DATABASE_URL" not in app.config
    assert "CONFIG" not in app.config


def test_a_good_file_of_every_kind_of_value_starts(tmp_path, monkeypatch):
    write_config(
        tmp_path,
        monkeypatch,
        'MAIL_PORT = 2525\nMAIL_USE_TLS = true\nTRUSTED_HOSTS = ["b.example.com"]\n'
        'MAIL_USERNAME = "portal"\nSIGNIN_LIMIT_PER_ADDRESS = "2 per 15 minutes; 5 per day"\n',
    )
    app = create_app({"PORTAL_BASE_URL": "https://b.example.com"})
    assert settings_of(app).MAIL_PORT == 2525
    assert settings_of(app).TRUSTED_HOSTS == ("b.example.com",)
    assert settings_of(app).SIGNIN_LIMIT_PER_ADDRESS == "2 per 15 minutes; 5 per day"


def test_an_unreadable_or_broken_config_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTAL_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="missing.toml, which cannot be read"):
        create_app(PRODUCTION)
    broken = tmp_path / "broken.toml"
    broken.write_text("SECRET_KEY = \n")
    monkeypatch.setenv("PORTAL_CONFIG", str(broken))
    with pytest.raises(ConfigError, match="broken.toml is not valid TOML"):
        create_app(PRODUCTION)
