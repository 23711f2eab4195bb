"""The billing portal: application factory, shared core, and the customer face."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: config, then extensions, blueprints, filters and CLI commands."""
    app = Flask(
        __name__,
        instance_path=str(ROOT / "instance"),
        template_folder=str(ROOT / "templates"),
    )

    from portal import cli, db, money, web
    from portal import config as settings

    settings.load(app, config)
    db.init_app(app)
    web.init_app(app)
    money.init_app(app)
    cli.init_app(app)

    from portal.views import public

    app.register_blueprint(public.bp)
    return app
