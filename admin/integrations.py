"""API keys and webhook endpoints, for admins: what the billing system may do through the
API and what it hears back.

A new key or signing secret is shown once, in the response to the POST that made it (a
200, not a redirect), so it never sits in a flash message, the session or a URL. Every
change is one transaction with its audit row, and the audit detail names keys by id and
hint and endpoints by id and URL: never anything that would let someone use them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import abort, flash, g, redirect, render_template, request, url_for
from sqlalchemy import delete, func, select
from sqlalchemy.orm import joinedload
from werkzeug.wrappers import Response
from wtforms import SelectChoice

from admin.forms import (
    ApiKeyForm,
    ReturnOriginForm,
    WebhookEndpointEditForm,
    WebhookEndpointForm,
)
from admin.guard import NAV, acting_staff, bp, staff_required
from admin.lookup import get_or_404, one_or_404
from portal import apikeys, audit, db, paging, webhooks
from portal.actions import ActionError, portal_sessions
from portal.config import settings
from portal.db import rowcount
from portal.forms import ButtonForm
from portal.models import (
    ApiKey,
    DeliveryStatus,
    Entity,
    ReturnOrigin,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

PERMISSION = "manage_integrations"
PER_PAGE = 50

NAV.append(("admin.api_keys", "API keys", PERMISSION))
NAV.append(("admin.webhooks_list", "Webhooks", PERMISSION))
NAV.append(("admin.return_origins", "Return origins", PERMISSION))


def _when(moment: dt.datetime) -> str:
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def _record(action: str, outcome: str, detail: dict[str, Any]) -> None:
    audit.record(
        db.session(),
        action,
        outcome,
        **acting_staff().audit(),
        detail=json.dumps(detail, sort_keys=True),
    )


# --- API keys -----------------------------------------------------------------------


def _keys_page(form: ApiKeyForm, status: int = 200) -> tuple[str, int]:
    keys = db.session().scalars(
        # Active keys first, then the newest.
        select(ApiKey).order_by(
            ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc(), ApiKey.id.desc()
        )
    )
    return render_template(
        "admin/api_keys.html",
        keys=list(keys),
        form=form,
        button=ButtonForm(formdata=None),
        when=_when,
    ), status


@bp.get("/api-keys")
@staff_required(PERMISSION)
def api_keys() -> tuple[str, int]:
    return _keys_page(ApiKeyForm(formdata=None))


@bp.post("/api-keys")
@staff_required(PERMISSION)
def create_api_key() -> tuple[str, int]:
    form = ApiKeyForm()
    if not form.validate_on_submit():
        return _keys_page(form, 400)
    database = db.session()
    try:
        key, row = apikeys.create(
            database, form.name.data or "", set(form.scopes.data or ()), g.staff.email
        )
    except ValueError as exc:  # the core's rules, should they ever be stricter than the form's
        form.name.errors = [str(exc)]
        return _keys_page(form, 400)
    database.flush()
    _record(
        "api_key.create",
        "created",
        {"api_key_id": row.id, "name": row.name, "hint": row.hint, "scopes": row.scopes},
    )
    database.commit()
    return render_template(
        "admin/api_key_created.html",
        key=key,
        row=row,
        api_base=str(settings().PORTAL_BASE_URL).rstrip("/") + "/api/v1",
    ), 200


@bp.post("/api-keys/<int:key_id>/revoke")
@staff_required(PERMISSION)
def revoke_api_key(key_id: int) -> Response:
    if not ButtonForm().validate_on_submit():
        abort(400)
    database = db.session()
    # Locked, so of two admins revoking the same key at once one revokes and one is told.
    row = one_or_404(select(ApiKey).where(ApiKey.id == key_id).with_for_update())
    label = f"{row.name} ({row.hint}…)"
    back = redirect(url_for("admin.api_keys"), code=303)
    if not apikeys.revoke(database, row, g.staff.email):
        database.rollback()
        flash(f"{label} was already revoked.")
        return back
    _record("api_key.revoke", "revoked", {"api_key_id": row.id, "name": row.name, "hint": row.hint})
    database.commit()
    flash(f"Revoked {label}: requests that send it are now refused.")
    return back


# --- webhook endpoints --------------------------------------------------------------


@dataclass(frozen=True)
class EndpointRow:
    endpoint: WebhookEndpoint
    pending: int
    failed: int


def _events(chosen: list[str] | None) -> str:
    """The chosen event types, space-separated, in EVENT_TYPES order."""
    wanted = set(chosen or ())
    return " ".join(event for event in webhooks.EVENT_TYPES if event in wanted)


def _audit_url(url: str) -> str:
    """The URL without its query or fragment: receivers sometimes put a token there."""
    parts = urlsplit(url)
    query = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) + query


def _webhooks_page(form: WebhookEndpointForm, status: int = 200) -> tuple[str, int]:
    database = db.session()
    endpoints = database.scalars(
        select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    ).all()
    counts = {
        (endpoint_id, state): count
        for endpoint_id, state, count in database.execute(
            select(WebhookDelivery.endpoint_id, WebhookDelivery.status, func.count())
            .where(WebhookDelivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.FAILED]))
            .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.status)
        )
    }
    rows = [
        EndpointRow(
            endpoint,
            pending=counts.get((endpoint.id, DeliveryStatus.PENDING), 0),
            failed=counts.get((endpoint.id, DeliveryStatus.FAILED), 0),
        )
        for endpoint in endpoints
    ]
    return render_template("admin/webhooks.html", rows=rows, form=form), status


@bp.get("/webhooks")
@staff_required(PERMISSION)
def webhooks_list() -> tuple[str, int]:
    return _webhooks_page(WebhookEndpointForm(formdata=None))


@bp.post("/webhooks")
@staff_required(PERMISSION)
def create_webhook() -> tuple[str, int]:
    form = WebhookEndpointForm()
    if not form.validate_on_submit():
        return _webhooks_page(form, 400)
    database = db.session()
    try:
        secret, endpoint = webhooks.create_endpoint(
            database,
            form.url.data or "",
            set(form.events.data or ()),
            g.staff.email,
            form.description.data,
        )
    except webhooks.WebhookURLError as exc:
        form.url.errors = [str(exc)]
        return _webhooks_page(form, 400)
    except ValueError as exc:
        form.events.errors = [str(exc)]
        return _webhooks_page(form, 400)
    database.flush()
    _record(
        "webhook_endpoint.create",
        "created",
        {
            "endpoint_id": endpoint.id,
            "url": _audit_url(endpoint.url),
            "events": endpoint.events.split(),
        },
    )
    database.commit()
    config = settings()
    return render_template(
        "admin/webhook_created.html",
        endpoint=endpoint,
        secret=secret,
        replay_minutes=webhooks.REPLAY_WINDOW // 60,
        timeout=config.WEBHOOK_TIMEOUT,
        max_attempts=config.WEBHOOK_MAX_ATTEMPTS,
    ), 200


def _deliveries(
    endpoint: WebhookEndpoint, wanted: int
) -> paging.Page[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    """One page of the delivery log, newest first, each delivery with its attempts (oldest
    first): three queries whatever the page size."""
    database = db.session()
    mine = WebhookDelivery.endpoint_id == endpoint.id
    total = database.scalar(select(func.count(WebhookDelivery.id)).where(mine)) or 0
    number = paging.clamp(wanted, total, PER_PAGE)
    deliveries = list(
        database.scalars(
            select(WebhookDelivery)
            .options(joinedload(WebhookDelivery.event))
            .where(mine)
            .order_by(WebhookDelivery.id.desc())
            .limit(PER_PAGE)
            .offset((number - 1) * PER_PAGE)
        )
    )
    attempts: dict[int, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
    if deliveries:
        for row in database.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.id)
        ):
            attempts[row.delivery_id].append(row)
    rows = [(delivery, attempts[delivery.id]) for delivery in deliveries]
    return paging.Page(rows, total, number, PER_PAGE)


def _endpoint_page(
    endpoint: WebhookEndpoint, form: WebhookEndpointEditForm, status: int = 200
) -> tuple[str, int]:
    return render_template(
        "admin/webhook.html",
        endpoint=endpoint,
        form=form,
        page=_deliveries(endpoint, paging.page_number(request.args.get("page"))),
        button=ButtonForm(formdata=None),
        when=_when,
    ), status


def _edit_form(endpoint: WebhookEndpoint) -> WebhookEndpointEditForm:
    # data=, not obj=: the model's events are a string, the field wants a list.
    return WebhookEndpointEditForm(
        data={
            "url": endpoint.url,
            "description": endpoint.description or "",
            "events": endpoint.events.split(),
            "is_active": endpoint.is_active,
        }
    )


@bp.get("/webhooks/<int:endpoint_id>")
@staff_required(PERMISSION)
def webhook(endpoint_id: int) -> tuple[str, int]:
    endpoint = get_or_404(WebhookEndpoint, endpoint_id)
    return _endpoint_page(endpoint, _edit_form(endpoint))


@bp.post("/webhooks/<int:endpoint_id>")
@staff_required(PERMISSION)
def update_webhook(endpoint_id: int) -> Response | tuple[str, int]:
    endpoint = get_or_404(WebhookEndpoint, endpoint_id)
    form = _edit_form(endpoint)
    if not form.validate_on_submit():
        return _endpoint_page(endpoint, form, 400)
    before = {
        "url": endpoint.url,
        "description": endpoint.description,
        "events": endpoint.events,
        "is_active": endpoint.is_active,
    }
    after = {
        "url": form.url.data or "",
        "description": form.description.data or None,
        "events": _events(form.events.data),
        "is_active": bool(form.is_active.data),
    }
    changes = {key: [before[key], value] for key, value in after.items() if before[key] != value}
    back = redirect(url_for("admin.webhook", endpoint_id=endpoint.id), code=303)
    if not changes:
        flash("Nothing to save: the endpoint is as it was.")
        return back
    for key, value in after.items():
        setattr(endpoint, key, value)
    shown: dict[str, list[object]] = {key: list(pair) for key, pair in changes.items()}
    if "url" in changes:
        shown["url"] = [_audit_url(str(url)) for url in changes["url"]]
    if "events" in changes:
        shown["events"] = [str(events).split() for events in changes["events"]]
    _record("webhook_endpoint.update", "changed", {"endpoint_id": endpoint.id, "changes": shown})
    db.session().commit()
    flash(
        "Saved the endpoint." + ("" if endpoint.is_active else " It is disabled: nothing is sent.")
    )
    return back


@bp.post("/webhooks/<int:endpoint_id>/delete")
@staff_required(PERMISSION)
def delete_webhook(endpoint_id: int) -> Response:
    if not ButtonForm().validate_on_submit():
        abort(400)
    endpoint = get_or_404(WebhookEndpoint, endpoint_id)
    url = endpoint.url
    detail = {"endpoint_id": endpoint.id, "url": _audit_url(url), "events": endpoint.events.split()}
    database = db.session()
    back = redirect(url_for("admin.webhooks_list"), code=303)
    # A conditional DELETE, so two admins deleting the same endpoint audit it once. Its
    # deliveries and their attempts go with it (ON DELETE CASCADE); the events stay.
    gone = database.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id))
    if rowcount(gone) != 1:
        database.rollback()
        flash(f"{url} had already been deleted.")
        return back
    _record("webhook_endpoint.delete", "deleted", detail)
    database.commit()
    flash(f"Deleted the endpoint {url}: it receives nothing more.")
    return back


@bp.post("/webhooks/<int:endpoint_id>/deliveries/<int:delivery_id>/resend")
@staff_required(PERMISSION)
def resend_webhook_delivery(endpoint_id: int, delivery_id: int) -> Response:
    if not ButtonForm().validate_on_submit():
        abort(400)
    endpoint = get_or_404(WebhookEndpoint, endpoint_id)
    database = db.session()
    delivery = one_or_404(
        select(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint.id
        )
    )
    page = paging.page_number(request.args.get("page"))
    back = redirect(
        url_for("admin.webhook", endpoint_id=endpoint.id, page=page if page > 1 else None),
        code=303,
    )
    event = delivery.event
    if not endpoint.is_active:
        # The worker would only mark it failed ("endpoint disabled") without sending it.
        flash(f"Not queued: this endpoint is disabled. Turn it on, then resend {event.public_id}.")
        return back
    if not webhooks.resend(database, delivery, g.staff.email):
        flash(f"{event.public_id} is being sent right now; look again in a minute.")
        return back
    _record(
        "webhook_delivery.resend",
        "queued",
        {
            "endpoint_id": endpoint.id,
            "delivery_id": delivery.id,
            "event_id": event.public_id,
            "event_type": event.type,
        },
    )
    database.commit()
    flash(f"{event.type} {event.public_id} queued; the worker sends it within seconds.")
    return back


# --- return origins of portal sessions ----------------------------------------------


def _origin_form(**kwargs: Any) -> ReturnOriginForm:
    form = ReturnOriginForm(**kwargs)
    entities = db.session().scalars(select(Entity).order_by(Entity.name, Entity.id))
    form.entity_id.choices = [
        SelectChoice("", "Choose a seller"),
        *(SelectChoice(e.id, e.name) for e in entities),
    ]
    return form


def _origins_page(form: ReturnOriginForm, status: int = 200) -> tuple[str, int]:
    origins = db.session().scalars(
        select(ReturnOrigin)
        .options(joinedload(ReturnOrigin.entity))
        .order_by(ReturnOrigin.entity_id, ReturnOrigin.origin)
    )
    return render_template(
        "admin/return_origins.html",
        origins=list(origins),
        form=form,
        button=ButtonForm(formdata=None),
        when=_when,
    ), status


@bp.get("/return-origins")
@staff_required(PERMISSION)
def return_origins() -> tuple[str, int]:
    return _origins_page(_origin_form(formdata=None))


@bp.post("/return-origins")
@staff_required(PERMISSION)
def add_return_origin() -> Response | tuple[str, int]:
    form = _origin_form()
    if not form.validate_on_submit():
        return _origins_page(form, 400)
    database = db.session()
    entity = get_or_404(Entity, form.entity_id.data)
    try:
        row = portal_sessions.add_return_origin(
            database, acting_staff(), entity, form.origin.data or ""
        )
    except ActionError as exc:
        database.rollback()
        form.origin.errors = [exc.message]
        return _origins_page(form, exc.status if exc.status != 422 else 400)
    database.commit()
    flash(f"Portal sessions of {entity.name} may now return to {row.origin}.")
    return redirect(url_for("admin.return_origins"), code=303)


@bp.post("/return-origins/<int:origin_id>/remove")
@staff_required(PERMISSION)
def remove_return_origin(origin_id: int) -> Response:
    if not ButtonForm().validate_on_submit():
        abort(400)
    database = db.session()
    try:
        row = portal_sessions.remove_return_origin(database, acting_staff(), origin_id)
    except ActionError as exc:
        database.rollback()
        flash(exc.message)
        return redirect(url_for("admin.return_origins"), code=303)
    database.commit()
    flash(f"Removed {row.origin}: links made before lose their Back link, new ones are refused.")
    return redirect(url_for("admin.return_origins"), code=303)
