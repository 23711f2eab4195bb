"""The factory: the one module that puts the core and the three faces together."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from portal import resource_dir


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: config, then extensions, blueprints, filters and CLI commands."""
    # Named after the package (not this module): its static/ folder, and Flask's default
    # instance folder, instance/ in a checkout, <venv>/var/portal-instance when installed,
    # never site-packages. Production sets PORTAL_DATABASE_URL anyway.
    app = Flask("portal", template_folder=str(resource_dir("templates")))

    import emails
    from portal import cli, db, logredact, money, sessions, throttle, web, worker
    from portal.config import load, settings_of

    load(app, config)
    hops = settings_of(app).PROXY_FIX_X_FOR
    if hops:
        # Trust X-Forwarded-For only for the proxies we actually have.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    logredact.install()
    db.init_app(app)
    web.init_app(app)
    web.csrf.init_app(app)
    throttle.init_app(app)
    sessions.init_app(app)
    emails.init_app(app)
    money.init_app(app)
    worker.init_app(app)
    cli.init_app(app)

    # The portal pages join viewer.bp when their modules are imported.
    from portal.customer import (
        contact_confirmation,
        credits,
        details,
        devmail,
        email_reminders,
        history,
        invoice_copies,
        invoices,
        pages,
        paying,
        payment_methods,
        portal_sessions,
        public,
        signed_in_devices,
        signin,
        sso,
        statements,
        subscriptions,
        switch,
        unsubscribe,
        viewer,
    )

    assert details and invoices and pages and payment_methods  # imported for their routes
    assert credits and statements and subscriptions and email_reminders and signed_in_devices
    assert history and invoice_copies
    app.register_blueprint(public.bp)
    app.register_blueprint(paying.sandbox_bp)  # 404 unless PAYMENT_GATEWAY is the sandbox
    app.register_blueprint(signin.bp)
    app.register_blueprint(sso.bp)
    app.register_blueprint(contact_confirmation.bp)
    app.register_blueprint(unsubscribe.bp)
    app.register_blueprint(invoice_copies.links_bp)
    app.register_blueprint(portal_sessions.bp)
    app.register_blueprint(switch.bp)
    app.register_blueprint(viewer.bp)
    # The same pages again for staff: a read-only preview inside the staff session.
    app.register_blueprint(viewer.bp, name=viewer.PREVIEW, url_prefix=viewer.PREVIEW_PREFIX)
    viewer.init_app(app)
    switch.init_app(app)

    import admin
    import api

    admin.init_app(app)
    api.init_app(app)
    from portal import gateway_webhooks

    gateway_webhooks.init_app(app)
    if app.debug:
        app.register_blueprint(devmail.bp)
    return app
