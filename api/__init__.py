"""The machine face, under /api/v1: the billing system's JSON API, authenticated with API
keys. It imports the portal's core (models, sync, access, webhooks) and neither the
customer views nor the staff face; the factory is the only place that knows all three."""

from __future__ import annotations

from flask import Flask

from api.base import PREFIX, bp


def init_app(app: Flask) -> None:
    # Each module adds its routes to the blueprint when imported.
    from api import change_requests, disputes, openapi, portal_sessions, resources, rules
    from portal.web import csrf

    assert change_requests and openapi and portal_sessions and resources and rules and disputes
    # Bearer keys, never cookies, authenticate here: there is no ambient credential for
    # a cross-site request to ride on, so CSRF tokens have nothing to protect.
    csrf.exempt(bp)
    app.register_blueprint(bp)
    # Errors under the prefix (404, 405, 413 and the rest) answer in JSON.
    app.extensions.setdefault("portal.json_error_prefixes", []).append(PREFIX + "/")
