"""Pages that need no sign-in: the home page, the health check and entity logos."""

from __future__ import annotations

from flask import Blueprint, Response, abort, render_template
from sqlalchemy import text

from portal import db
from portal.models import Entity

bp = Blueprint("public", __name__)


@bp.get("/")
def home() -> str:
    return render_template("portal/home.html")


@bp.get("/healthz")
def health() -> tuple[dict[str, str], int]:
    """For load balancers: 200 when the database answers; database errors become a 503."""
    db.session().execute(text("SELECT 1"))
    return {"status": "ok"}, 200


@bp.get("/brand/<int:entity_id>/logo")
def logo(entity_id: int) -> Response:
    entity = db.session().get(Entity, entity_id)
    if entity is None or entity.logo is None or entity.logo_type is None:
        abort(404)
    response = Response(entity.logo, mimetype=entity.logo_type)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
