"""The staff face, under /admin: sign-in, accounts and bill groups, access settings,
preview, audit, API keys and webhooks. It imports the portal's core (models, access,
billing, staffauth) and never the customer views; the factory is the only place that
knows both."""

from __future__ import annotations

from flask import Flask

from admin.guard import NAV, bp


def init_app(app: Flask) -> None:
    # Each module adds its routes to the blueprint when imported.
    from admin import (
        access,
        accounts,
        audit,
        auth,
        disputes,
        home,
        integrations,
        reminders,
        sso,
        staff,
        subscriptions,
    )

    assert access and accounts and audit and auth and home and integrations and sso and staff
    assert subscriptions and reminders and disputes
    app.register_blueprint(bp)
    app.jinja_env.globals["admin_nav"] = NAV
    app.jinja_env.globals["has_endpoint"] = lambda name: name in app.view_functions
