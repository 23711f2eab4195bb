"""Pages that need no sign-in: the home page, the health check, entity logos, and what
browsers and crawlers ask for at the root (robots.txt, favicon.ico)."""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, current_app, render_template
from sqlalchemy import text

from portal import db
from portal.models import Entity

bp = Blueprint("public", __name__)

_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


@bp.get("/")
def home() -> str:
    return render_template("portal/home.html")


@bp.get("/robots.txt")
def robots() -> Response:
    """Nothing here is for search engines: sign-in pages name the seller and the
    customer's bill group. Every response also says X-Robots-Tag: noindex (portal.web)."""
    response = Response("User-agent: *\nDisallow: /\n", mimetype="text/plain")
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for it whatever the page says; pages link the SVG as well."""
    response = current_app.send_static_file("favicon.ico")
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


@bp.get("/healthz")
def health() -> tuple[dict[str, str], int]:
    """For load balancers: 200 when the database answers; database errors become a 503."""
    db.session().execute(text("SELECT 1"))
    return {"status": "ok"}, 200


@bp.get("/brand/<int:entity_id>/brand.css")
def brand_css(entity_id: int) -> Response:
    """The entity's colour as a stylesheet: the CSP allows no inline styles."""
    entity = db.session().get(Entity, entity_id)
    if entity is None:
        abort(404)
    colour = entity.brand_colour if _HEX_COLOUR.fullmatch(entity.brand_colour) else "#2f5bea"
    response = Response(f":root {{ --accent: {colour}; }}\n", mimetype="text/css")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/brand/<int:entity_id>/logo")
def logo(entity_id: int) -> Response:
    entity = db.session().get(Entity, entity_id)
    if entity is None or entity.logo is None or entity.logo_type is None:
        abort(404)
    response = Response(entity.logo, mimetype=entity.logo_type)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
