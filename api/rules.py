"""A bill group's access rules over the API: the same actions as the staff pages
(portal.actions.rules), so the same checks, messages, audit rows and events."""

from __future__ import annotations

from flask import Response, jsonify, url_for

from api.base import ApiError, acting_key, body, bp, requires
from api.resources import bill_group_or_404
from portal import db
from portal.actions import ActionError, rules
from portal.config import settings
from portal.sync import schemas, serialize


def _refused(exc: ActionError, field: str | None = None) -> ApiError:
    """The action's error as the API's JSON error: its status, message and code
    (overlapping_rules, duplicate_rule, invalid, not_found)."""
    return ApiError(exc.status, exc.message, field=field, code=exc.code)


@bp.get("/bill-groups/<external_id>/access-rules")
@requires("read")
def list_rules(external_id: str) -> Response:
    group = bill_group_or_404(external_id)
    found = [serialize.access_rule(rule) for rule in group.access_rules]
    return jsonify({"data": found, "next_cursor": None})


@bp.post("/bill-groups/<external_id>/access-rules")
@requires("write")
def create_rule(external_id: str) -> tuple[Response, int]:
    group = bill_group_or_404(external_id)
    data = body(schemas.AccessRuleIn)
    session = db.session()
    try:
        added = rules.add_rule(
            session,
            acting_key(),
            group,
            data.value,
            include_subdomains=data.include_subdomains,
            role=data.role,
            fold_in=data.fold_in,
            extra_providers=settings().PUBLIC_MAIL_PROVIDERS_EXTRA,
        )
    except ActionError as exc:  # an overlap's message names the redundant rules
        raise _refused(exc, field=exc.field or "value") from None
    session.commit()
    response = jsonify(serialize.access_rule(added.rule))
    response.headers["Location"] = url_for(
        "api.delete_rule", external_id=external_id, rule_id=added.rule.id
    )
    return response, 201


# A path of its own, not PATCH on the rule's: Werkzeug answers 405 instead of 404 for an
# id beyond BIGINT on a path with routes for several methods (portal.web.IdConverter).
@bp.put("/bill-groups/<external_id>/access-rules/<int:rule_id>/role")
@requires("write")
def change_rule(external_id: str, rule_id: int) -> Response:
    """Another customer role for the rule (the only thing about a rule that changes: a
    different value is a different rule, removed and added)."""
    group = bill_group_or_404(external_id)
    data = body(schemas.AccessRuleChange)
    session = db.session()
    try:
        changed = rules.change_role(session, acting_key(), group, rule_id, data.role)
    except ActionError as exc:
        session.rollback()
        raise _refused(exc, field=exc.field) from None
    session.commit()
    return jsonify(serialize.access_rule(changed.rule))


@bp.delete("/bill-groups/<external_id>/access-rules/<int:rule_id>")
@requires("write")
def delete_rule(external_id: str, rule_id: int) -> tuple[str, int]:
    group = bill_group_or_404(external_id)
    session = db.session()
    try:
        rules.remove_rule(session, acting_key(), group, rule_id)
    except ActionError as exc:
        raise _refused(exc) from None
    session.commit()
    return "", 204
