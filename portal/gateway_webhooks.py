"""Webhooks in from the payment gateway: POST /payments/webhooks/<gateway name>.

The body is read whole (portal.bodies) and handed to the configured gateway's
`parse_event`, which verifies its signature (Stripe: Stripe-Signature, the endpoint's
secret, a tolerance on its age). A refused webhook answers 400 with a log line that
names the reason, never the body or a header, and nothing is applied. A verified event
is applied by `portal.actions.paying.apply_gateway_event`, which applies each event id
once ("applied", then "duplicate"), and committed; 200 with a small JSON either way, so
the gateway stops retrying. No CSRF token (the gateway has no session; the signature is
the proof); wrong signatures are budgeted per client like wrong API keys
(GATEWAY_WEBHOOK_FAILURE_LIMIT: 429 over it), valid ones are not, so a burst of real
deliveries from the gateway's few addresses is never turned away.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from flask import Blueprint, Flask, Response, abort, jsonify, request
from sqlalchemy.orm import Session

from portal import db, payments, throttle
from portal.config import settings

log = logging.getLogger(__name__)

PREFIX = "/payments/webhooks"
BUDGET = "gateway-webhook-failures"

bp = Blueprint("gateway_webhooks", __name__, url_prefix=PREFIX)


def init_app(app: Flask) -> None:
    from portal.web import csrf

    csrf.exempt(bp)
    app.register_blueprint(bp)
    # Errors under the prefix (404, 413, 429) answer JSON, as the API's do.
    app.extensions.setdefault("portal.json_error_prefixes", []).append(PREFIX + "/")


@bp.post("/<name>")
def receive(name: str) -> tuple[Response, int]:
    config = settings()
    if config.PAYMENT_GATEWAY in ("", "none") or name != config.PAYMENT_GATEWAY:
        abort(404)
    client = throttle.client_key()
    if not throttle.has_room(BUDGET, client):
        log.warning("gateway webhook (%s): refused, too many bad ones from this client", name)
        response = jsonify({"error": {"code": "rate_limited", "message": "Too many."}})
        response.headers["Retry-After"] = str(throttle.retry_after(BUDGET, client))
        return response, 429
    gateway = payments.get_gateway(config)
    try:
        headers = {key: value for key, value in request.headers.items()}
        event = gateway.parse_event(request.get_data(cache=True), headers)
    except payments.WebhookRejected as exc:
        throttle.spend(BUDGET, client)
        # Our reason only (no body, no header): it names the check that failed.
        log.warning("gateway webhook (%s) rejected: %s", name, exc)
        message = "The webhook's signature or body was not accepted."
        return jsonify({"error": {"code": "rejected", "message": message}}), 400
    if event is None:
        return jsonify({"received": True, "outcome": "ignored"}), 200
    outcome = _apply()(db.session(), name, event)
    db.session().commit()
    log.info("gateway webhook (%s): event %s %s: %s", name, event.id, event.kind, outcome)
    return jsonify({"received": True, "outcome": outcome}), 200


def _apply() -> Callable[[Session, str, payments.GatewayEvent], str]:
    """The pay flow's `apply_gateway_event(db, gateway_name, event) -> "applied" |
    "duplicate" | "unknown"`, looked up when a verified event arrives: this module does
    not depend on the pay flow's at import (they were written side by side)."""
    paying = importlib.import_module("portal.actions.paying")
    found: Callable[[Session, str, payments.GatewayEvent], str] = paying.apply_gateway_event
    return found
