"""The one typed, frozen Settings: every key a field, built once and checked, and the only
way our code reads a setting (app.config keeps only what Flask and its extensions read)."""

from __future__ import annotations

import ast
import dataclasses
import re
import tomllib
import types
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest

from portal import ROOT, throttle
from portal.app import create_app
from portal.config import (
    DEFAULTS,
    FOR_FLASK,
    TYPES,
    ConfigError,
    RateLimit,
    Settings,
    settings,
    settings_of,
)
from tests.conftest import TEST_CONFIG
from tests.settings import change_settings

APP_CONFIG = {**TEST_CONFIG, "DATABASE_URL": "sqlite://"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Only the overrides each test passes reach the app."""
    for name in list(__import__("os").environ):
        if name.startswith("PORTAL_") or name == "FLASK_DEBUG":
            monkeypatch.delenv(name)


def test_the_settings_cannot_be_changed_once_built():
    built = settings_of(create_app(APP_CONFIG))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.SIGNIN_TTL_MINUTES = 5
    # Slotted too: no attribute can be added beside the fields (a typo'd name included).
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        built.SIGNIN_TTL_MINUTE = 5
    assert not hasattr(built, "__dict__")
    assert isinstance(built.TRUSTED_HOSTS, tuple)
    assert isinstance(built.PUBLIC_MAIL_PROVIDERS_EXTRA, tuple)


# What a value from outside may be for each kind of field, and a value it may not.
WRONG = {str: 12, int: "12", bool: 1, tuple: "a.example.com"}


def plain(hint: Any) -> tuple[type, bool]:
    """The field's class and whether it may be None, as the test reads the hint."""
    if hint == RateLimit:
        return str, False
    if isinstance(hint, types.UnionType):
        (inner,) = [arg for arg in get_args(hint) if arg is not type(None)]
        return inner, True
    if get_origin(hint) is tuple:
        assert get_args(hint) == (str, ...), hint
        return tuple, False
    return hint, False


def test_every_key_is_one_typed_field_with_a_default_of_its_type():
    names = [field.name for field in dataclasses.fields(Settings)]
    assert names == list(DEFAULTS) == list(TYPES)
    with (ROOT / "config.example.toml").open("rb") as handle:
        assert set(tomllib.load(handle)) == set(names)
    for name in names:
        kind, nullable = plain(TYPES[name])
        assert kind in WRONG, (name, TYPES[name])
        default = DEFAULTS[name]
        assert (nullable and default is None) or isinstance(default, kind), name
    assert FOR_FLASK <= set(names)
    # Every budget the throttle asks for is a rate-limit field, checked at start-up.
    assert {TYPES[key] for key in throttle.BUDGETS.values()} == {RateLimit}
    assert TYPES["SECRET_ENDPOINT_LIMIT"] == RateLimit


@pytest.mark.parametrize("key", list(DEFAULTS))
def test_a_wrong_typed_value_of_any_key_stops_the_app_naming_key_and_source(key):
    kind, _nullable = plain(TYPES[key])
    wrong = WRONG[kind]
    with pytest.raises(ConfigError, match=rf"^{key} in create_app\(\) must be ") as raised:
        create_app({**APP_CONFIG, key: wrong})
    assert repr(wrong) in str(raised.value)


@pytest.mark.parametrize(
    ("key", "value"), [(k, "3 a day") for k in DEFAULTS if TYPES[k] == RateLimit]
)
def test_a_rate_limit_that_does_not_parse_stops_the_app(key, value):
    with pytest.raises(ConfigError, match=rf"^{key} in create_app\(\) is not a rate limit"):
        create_app({**APP_CONFIG, key: value})


def test_values_from_outside_are_typed_and_flask_gets_its_keys(tmp_path, monkeypatch):
    config_file = tmp_path / "portal.toml"
    config_file.write_text(
        'TRUSTED_HOSTS = ["b.example.com"]\nPUBLIC_MAIL_PROVIDERS_EXTRA = ["mail.example.org"]\n'
    )
    monkeypatch.setenv("PORTAL_CONFIG", str(config_file))
    monkeypatch.setenv("PORTAL_SIGNIN_TTL_MINUTES", "20")
    app = create_app({**APP_CONFIG, "MAIL_PORT": 2525})
    built = settings_of(app)
    assert built.TRUSTED_HOSTS == ("b.example.com",)
    assert built.PUBLIC_MAIL_PROVIDERS_EXTRA == ("mail.example.org",)
    assert built.SIGNIN_TTL_MINUTES == 20 and built.MAIL_PORT == 2525
    with app.app_context():
        assert settings() is built
    # Flask and its extensions read their own keys from app.config; ours are not there,
    # so nothing can read a stale copy of them.
    assert app.config["TRUSTED_HOSTS"] == ["b.example.com"]
    assert app.config["MAIL_PORT"] == 2525 and app.config["SECRET_KEY"] == built.SECRET_KEY
    assert app.config["TESTING"] is True  # what is not a setting of ours passes through
    assert not (set(DEFAULTS) - FOR_FLASK) & set(app.config)


def test_a_test_changes_settings_through_the_helper_only():
    app = create_app(APP_CONFIG)
    before = settings_of(app)
    change_settings(app, SIGNIN_TTL_MINUTES=5, MAX_CONTENT_LENGTH=1000)
    assert settings_of(app).SIGNIN_TTL_MINUTES == 5 and before.SIGNIN_TTL_MINUTES == 15
    assert app.config["MAX_CONTENT_LENGTH"] == 1000  # Flask enforces it itself
    with pytest.raises(TypeError):
        change_settings(app, SIGNIN_TTL_MINUTE=5)


# --- nobody reads a setting by string key ----------------------------------------------

SETTING_KEYS = set(DEFAULTS)


def string_key_reads(source: str) -> list[str]:
    """config["KEY"], config.get("KEY") and the like, for KEY a setting of the portal, on
    anything named like a config (app.config, current_app.config, a local `config`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        target: ast.expr | None = None
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "setdefault", "pop")
            and node.args
        ):
            target, key = node.func.value, node.args[0]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if (
                node.func.attr in ("update", "from_mapping")
                and "config" in ast.unparse(node.func.value).lower()
            ):
                found += [kw.arg for kw in node.keywords if kw.arg in SETTING_KEYS]
            continue
        if (
            target is not None
            and isinstance(key, ast.Constant)
            and key.value in SETTING_KEYS
            and "config" in ast.unparse(target).lower()
        ):
            found.append(f"{ast.unparse(node)} (line {node.lineno})")
    return found


def our_code() -> list[Path]:
    paths = [ROOT / "wsgi.py", ROOT / "gunicorn.conf.py"]
    for top in ("portal", "admin", "api", "emails", "bench", "tests"):
        paths += sorted((ROOT / top).rglob("*.py"))
    return [p for p in paths if p not in (ROOT / "portal" / "config.py", Path(__file__))]


@pytest.mark.parametrize("path", our_code(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_reads_a_setting_from_app_config_by_string_key(path):
    # Tests included: writing app.config["KEY"] after start-up would change nothing now
    # (use tests/settings.py), and reading it would find nothing.
    assert string_key_reads(path.read_text()) == []


def test_no_template_reads_a_setting_from_config():
    pattern = re.compile(r"\bconfig(?:\.|\[['\"])([A-Z_0-9]+)")
    for path in sorted((ROOT / "templates").rglob("*")):
        if path.is_file():
            found = set(pattern.findall(path.read_text())) & SETTING_KEYS
            assert not found, (path, found)


def test_the_scan_finds_every_kind_of_string_read():
    source = """
a = current_app.config["SIGNIN_TTL_MINUTES"]
b = app.config.get("LOCALE")
config = current_app.config
c = config["PORTAL_BASE_URL"]
app.config["SECRET_KEY"] = "x"
app.config.update(MAIL_TIMEOUT=1)
fine = app.config["SESSION_COOKIE_NAME"], app.config["WTF_CSRF_ENABLED"], DEFAULTS["LOCALE"]
"""
    assert len(string_key_reads(source)) == 5
    assert our_code() and ROOT / "portal" / "links.py" in our_code()
