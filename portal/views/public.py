"""Pages that need no sign-in: the home page, the health check and entity logos."""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, render_template
from sqlalchemy import text

from portal import db
from portal.models import Entity

bp = Blueprint("public", __name__)

_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


@bp.get("/")
def home() -> str:
    return render_template("portal/home.html")


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
