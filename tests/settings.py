"""Other settings for an app a test has already built. Settings are frozen and the code
reads them from the app's Settings, not app.config, so writing app.config["KEY"] would
change nothing: `change_settings` installs a copy with the new values instead (and puts
the keys Flask and its extensions read into app.config, as start-up does).

What the app set up from its settings at start-up (the rate-limit storage, Flask-Mail's
server, the money filter's locale, ProxyFix) stays as it was: pass those to create_app,
or to the `sibling` fixture, instead."""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Flask

from portal import config


def change_settings(app: Flask, **changes: Any) -> None:
    """Replace some of the app's settings; an unknown key raises TypeError."""
    config.install(app, dataclasses.replace(config.settings_of(app), **changes))
