"""The subscriptions page, and asking for a change: pick it (a GET form), review it (a
GET page: today's plan and the new one, prices per period as the catalogue gives them),
and one button that asks (POST, portal.actions.subscriptions.request_change). The
billing system answers later; until then the subscription shows the change "requested".

The staff preview sees every page with its buttons disabled, and any POST from it is
refused by `portal_page`. A customer who may not manage billing (may_manage_billing: a
viewer's rule) sees no buttons, the form pages send them back to the overview, and a
forged POST from them is a 403 with an audit row (portal_page, before the view runs).
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request
from werkzeug.wrappers import Response as BaseResponse
from wtforms import SelectChoice

from portal import billing, clock, db
from portal import subscriptions as rules
from portal.actions import ActionError, Actor, Conflict, Forbidden, NotFound
from portal.actions.subscriptions import Change, check_change, request_change
from portal.customer.forms import ChangeNoteForm, ChangeRequestForm
from portal.customer.viewer import (
    Viewer,
    bp,
    may_manage_billing,
    portal_page,
    portal_url,
    render_page,
)
from portal.models import ChangeKind, Subscription

View = str | tuple[str, int] | BaseResponse


@bp.get("/subscriptions")
@portal_page
def subscriptions(viewer: Viewer) -> str:
    group = viewer.bill_group
    found = billing.subscriptions(db.session(), group)
    return render_page(
        "portal/subscriptions.html",
        subscriptions=found,
        allowed={s.id: rules.allowed_kinds(s, group.entity) for s in found},
        pending=rules.pending(db.session(), [s.id for s in found]),
        answered=rules.recent_answers(db.session(), [s.id for s in found], clock.now()),
        may_manage=may_manage_billing(viewer),
        describe=rules.describe,
    )


def _subscription(viewer: Viewer, subscription_id: int) -> Subscription:
    found = db.session().get(Subscription, subscription_id)
    if found is None or found.bill_group_id != viewer.bill_group.id:
        abort(404)  # another bill group's subscription is one that does not exist here
    return found


def _kind(raw: str | None) -> ChangeKind:
    try:
        return ChangeKind(raw or "")
    except ValueError:
        abort(404)


def _quantity(raw: str | None) -> int | None:
    text = (raw or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


def _plan_id(raw: str | None) -> int | None:
    text = (raw or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def _asked(source: Any) -> dict[str, Any]:
    """What the customer chose, from the form or the review page's hidden fields."""
    return {
        "plan_id": _plan_id(source.get("plan")),
        "quantity": _quantity(source.get("quantity")),
        "reason": source.get("reason") or None,
        "comment": source.get("comment") or None,
    }


def _refusal(viewer: Viewer, subscription: Subscription, exc: ActionError) -> View:
    """A change that cannot be asked for: a page that says why, with the right status."""
    return render_page(
        "portal/subscription_refused.html", subscription=subscription, message=exc.message
    ), exc.status


@bp.get("/subscriptions/<int:subscription_id>/change")
@portal_page(form=True)
def subscriptions_change(viewer: Viewer, subscription_id: int) -> View:
    """The form for one kind of change; with ?plan= etc. after a refusal, filled in again."""
    subscription = _subscription(viewer, subscription_id)
    kind = _kind(request.args.get("kind"))
    form = ChangeRequestForm(formdata=request.args if request.args.get("again") else None)
    return _form(viewer, subscription, kind, form)


def _form(
    viewer: Viewer,
    subscription: Subscription,
    kind: ChangeKind,
    form: ChangeRequestForm,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> View:
    group = viewer.bill_group
    if not rules.allowed(subscription, group.entity, kind):
        return _refusal(
            viewer, subscription, Forbidden(f"{kind.label}: this change is not offered here.")
        )
    low, high = rules.quantity_range(subscription)
    form.plan.choices = [SelectChoice(str(p.id), p.name) for p in rules.plan_options(subscription)]
    form.reason.choices = [
        SelectChoice("", "Choose a reason"),
        *(SelectChoice(code, label) for code, label in rules.CANCEL_REASONS.items()),
    ]
    for name, message in (errors or {}).items():
        field = getattr(form, name, None)
        if field is not None:
            field.errors = [message]
    return render_page(
        "portal/subscription_change.html",
        subscription=subscription,
        kind=kind,
        form=form,
        plans=rules.plan_options(subscription),
        low=low,
        high=high,
        name=rules.subscription_name(subscription),
        may_manage=may_manage_billing(viewer),
        problem=(errors or {}).get(""),
    ), status


@bp.get("/subscriptions/<int:subscription_id>/review")
@portal_page(form=True)
def subscriptions_review(viewer: Viewer, subscription_id: int) -> View:
    """Today's plan and the new one, before the one button that asks. Writes nothing."""
    subscription = _subscription(viewer, subscription_id)
    kind = _kind(request.args.get("kind"))
    asked = _asked(request.args) | {"comment": None}  # the note is the POST's, not the URL's
    try:
        change = check_change(db.session(), viewer.bill_group, subscription.id, kind, **asked)
    except (Forbidden, NotFound, Conflict) as exc:
        return _refusal(viewer, subscription, exc)
    except ActionError as exc:
        form = ChangeRequestForm(formdata=request.args)
        return _form(viewer, subscription, kind, form, {exc.field or "": exc.message}, 400)
    return _review(viewer, change)


def _review(viewer: Viewer, change: Change, form: ChangeNoteForm | None = None) -> str:
    hidden = {
        "kind": change.kind.value,
        "plan": "" if change.to_plan is None else str(change.to_plan.id),
        "quantity": "" if change.to_quantity is None else str(change.to_quantity),
        "reason": change.reason or "",
    }
    return render_page(
        "portal/subscription_review.html",
        change=change,
        subscription=change.subscription,
        name=rules.subscription_name(change.subscription),
        form=form or ChangeNoteForm(),
        hidden=hidden,
        again={key: value for key, value in hidden.items() if value} | {"again": "1"},
        reasons=rules.CANCEL_REASONS,
        may_manage=may_manage_billing(viewer),
    )


@bp.post("/subscriptions/<int:subscription_id>/request")
@portal_page
def subscriptions_request(viewer: Viewer, subscription_id: int) -> View:
    """The one button: ask the billing system. A double submit makes one request (the
    second is told the first is waiting)."""
    # portal_page has refused (403, audited) anyone who may not manage billing.
    session = db.session()
    group = viewer.bill_group
    note = ChangeNoteForm()
    if not note.validate_on_submit() and note.csrf_token.errors:
        abort(400)  # no CSRF token: the page that sent this was not ours
    subscription = _subscription(viewer, subscription_id)
    kind = _kind(request.form.get("kind"))
    try:
        request_change(
            session,
            Actor.customer(viewer.email),
            group,
            subscription.id,
            kind,
            **_asked(request.form),
        )
    except Conflict as exc:
        session.rollback()
        flash(exc.message)
        return redirect(portal_url("subscriptions"), code=303)
    except ActionError as exc:
        session.rollback()
        if exc.field == "comment":  # the note: the review page again, with the message
            asked = _asked(request.form) | {"comment": None}
            change = check_change(session, group, subscription.id, kind, **asked)
            note.comment.errors = [exc.message]
            return _review(viewer, change, note), 400
        return _refusal(viewer, subscription, exc)
    session.commit()
    flash(
        "Change requested. The billing team will answer by email; "
        "until then the subscription shows it as requested."
    )
    return redirect(portal_url("subscriptions"), code=303)
