"""Payment methods: list, add through the configured gateway, choose the default.

Only the gateway's token and display details are stored. With the sandbox gateway the
card fields post to us (demo and tests only; refused in production by the config); a
real processor tokenises in the browser and posts back a token instead.
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from portal import db, payments, signin
from portal.actions import Actor, NotFound
from portal.actions import payment_methods as actions
from portal.config import settings
from portal.customer.forms import CardForm
from portal.customer.viewer import Viewer, bp, payment_method_label, portal_page, portal_url
from portal.forms import ButtonForm
from portal.models import PaymentMethod


def _gateway() -> payments.Gateway | None:
    name = settings().PAYMENT_GATEWAY
    return None if name == "none" else payments.get_gateway(settings())


@bp.get("/payment-methods")
@portal_page
def payment_methods(viewer: Viewer) -> str:
    group = viewer.bill_group
    return render_template(
        "portal/payment_methods.html",
        group=group,
        methods=group.payment_methods,
        gateway=_gateway(),
        button=ButtonForm(),
    )


@bp.route("/payment-methods/new", methods=["GET", "POST"])
@portal_page
def add_payment_method(viewer: Viewer) -> str | tuple[str, int] | BaseResponse:
    gateway = _gateway()
    if gateway is None or not gateway.collects_card_details:
        abort(404)
    group = viewer.bill_group
    # Where to go back to once the card is added (the pay form), if inside this portal.
    back = signin.safe_next(request.args.get("next"), group.public_id)
    form = CardForm()
    if form.validate_on_submit():
        submitted = {
            "number": form.number.data or "",
            "exp_month": form.exp_month.data or "",
            "exp_year": form.exp_year.data or "",
            "cvc": form.cvc.data or "",
            "holder_name": form.holder_name.data or "",
        }
        try:
            attached = gateway.attach(group.public_id, submitted)
        except payments.GatewayError as exc:
            field = getattr(form, exc.field or "number", form.number)
            field.errors = [*field.errors, exc.message]
        else:
            method = actions.add_payment_method(
                db.session(),
                Actor.customer(viewer.email),
                group,
                attached,
                make_default=bool(form.make_default.data),
            )
            db.session().commit()
            flash(f"{_label(method)} has been added.")
            return redirect(back or portal_url("payment_methods"), code=303)
    # Never send a card number or security code back to the browser.
    form.number.data = form.cvc.data = ""
    status = 400 if any(field.errors for field in form) else 200
    return render_template(
        "portal/payment_method_form.html", group=group, form=form, gateway=gateway, back=back
    ), status


@bp.post("/payment-methods/<int:method_id>/default")
@portal_page
def make_default(viewer: Viewer, method_id: int) -> BaseResponse:
    group = viewer.bill_group
    if not ButtonForm().validate_on_submit():
        abort(400)
    try:
        method = actions.set_default(db.session(), Actor.customer(viewer.email), group, method_id)
    except NotFound:
        abort(404)
    db.session().commit()
    flash(f"{_label(method)} is now your default payment method.")
    return redirect(portal_url("payment_methods"), code=303)


def _label(method: PaymentMethod) -> str:
    return payment_method_label(method)
