"""A bill group's access rules over the API: the same canonicaliser, overlap checks and
messages as the staff pages (portal.access), audited and announced the same way."""

from __future__ import annotations

from flask import Response, current_app, jsonify
from sqlalchemy import delete, select

from api.base import ApiError, body, bp, current_key, record, requires
from api.resources import bill_group_or_404
from portal import db, events
from portal.access import AccessError, DuplicateRule, OverlappingRules, add_rule
from portal.models import AccessRule
from portal.sync import schemas, serialize


@bp.get("/bill-groups/<external_id>/access-rules")
@requires("read")
def list_rules(external_id: str) -> Response:
    group = bill_group_or_404(external_id)
    rules = [serialize.access_rule(rule) for rule in group.access_rules]
    return jsonify({"data": rules, "next_cursor": None})


@bp.post("/bill-groups/<external_id>/access-rules")
@requires("write")
def create_rule(external_id: str) -> tuple[Response, int]:
    group = bill_group_or_404(external_id)
    data = body(schemas.AccessRuleIn)
    session = db.session()
    actor = events.api_key(current_key().name)
    redundant_before = {r.id: serialize.access_rule(r) for r in group.access_rules}
    try:
        rule = add_rule(
            session,
            group,
            data.value,
            created_by=f"api:{current_key().name}"[:254],
            include_subdomains=data.include_subdomains,
            fold_in=data.fold_in,
            extra_providers=current_app.config["PUBLIC_MAIL_PROVIDERS_EXTRA"],
        )
    except OverlappingRules as exc:  # its message names the redundant rules
        raise ApiError(409, exc.message, field="value", code="overlapping_rules") from None
    except DuplicateRule as exc:
        raise ApiError(409, exc.message, field="value", code="duplicate_rule") from None
    except AccessError as exc:
        raise ApiError(422, exc.message, field="value") from None
    remaining = set(
        session.scalars(select(AccessRule.id).where(AccessRule.bill_group_id == group.id))
    )
    record("access_rule.add", "added", bill_group_id=group.id, detail=rule.label)
    events.access_rule_created(session, group, rule, actor)
    for rule_id, folded in redundant_before.items():
        if rule_id not in remaining:
            record(
                "access_rule.remove", "folded_in", bill_group_id=group.id, detail=folded["label"]
            )
            events.access_rule_deleted(session, group, folded, actor)
    session.commit()
    return jsonify(serialize.access_rule(rule)), 201


@bp.delete("/bill-groups/<external_id>/access-rules/<int:rule_id>")
@requires("write")
def delete_rule(external_id: str, rule_id: int) -> tuple[str, int]:
    group = bill_group_or_404(external_id)
    session = db.session()
    rule = session.scalar(
        select(AccessRule).where(AccessRule.id == rule_id, AccessRule.bill_group_id == group.id)
    )
    if rule is None:
        raise ApiError(404, "This bill group has no access rule with that id.")
    gone = serialize.access_rule(rule)
    # Conditional, so two concurrent deletes audit and announce it once.
    if session.execute(delete(AccessRule).where(AccessRule.id == rule.id)).rowcount != 1:
        session.rollback()
        raise ApiError(404, "That access rule has already been removed.")
    record("access_rule.remove", "removed", bill_group_id=group.id, detail=gone["label"])
    events.access_rule_deleted(session, group, gone, events.api_key(current_key().name))
    session.commit()
    return "", 204
