"""Payment methods: list, add through the configured gateway, choose the default.

Only the gateway's token and display details are stored. With the sandbox gateway the
card fields post to us (demo and tests only; refused in production by the config); with
Stripe, Stripe.js collects the card in the browser and only a PaymentMethod id posts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import abort, flash, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from portal import db, payments, signin
from portal.actions import Actor, NotFound
from portal.actions import payment_methods as actions
from portal.config import settings
from portal.customer.forms import CardForm, StripeCardForm
from portal.customer.viewer import Viewer, bp, payment_method_label, portal_page, portal_url
from portal.forms import ButtonForm
from portal.models import PaymentMethod

if TYPE_CHECKING:
    from portal.gateways.stripe import StripeGateway


def _gateway() -> payments.Gateway | None:
    name = settings().PAYMENT_GATEWAY
    return None if name == "none" else payments.get_gateway(settings())


@bp.get("/payment-methods")
@portal_page
def payment_methods(viewer: Viewer) -> str:
    group = viewer.bill_group
    gateway = _gateway()
    return render_template(
        "portal/payment_methods.html",
        group=group,
        methods=group.payment_methods,
        gateway=gateway,
        can_add=viewer.sees_controls
        and gateway is not None
        and (gateway.collects_card_details or _stripe(gateway) is not None),
        button=ButtonForm(),
    )


@bp.route("/payment-methods/new", methods=["GET", "POST"])
@portal_page(form=True)
def add_payment_method(viewer: Viewer) -> str | tuple[str, int] | BaseResponse:
    gateway = _gateway()
    group = viewer.bill_group
    # Where to go back to once the card is added (the pay form), if inside this portal.
    back = signin.safe_next(request.args.get("next"), group.public_id)
    if gateway is not None and _stripe(gateway) is not None:
        return _add_with_stripe(viewer, gateway, back)
    if gateway is None or not gateway.collects_card_details:
        abort(404)
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
            return _added(viewer, attached, bool(form.make_default.data), back)
    # Never send a card number or security code back to the browser.
    form.number.data = form.cvc.data = ""
    status = 400 if any(field.errors for field in form) else 200
    return render_template(
        "portal/payment_method_form.html", group=group, form=form, gateway=gateway, back=back
    ), status


def _stripe(gateway: payments.Gateway) -> StripeGateway | None:
    if gateway.name != "stripe":
        return None
    from portal.gateways.stripe import StripeGateway  # the stripe library, when chosen

    return gateway if isinstance(gateway, StripeGateway) else None


def _add_with_stripe(
    viewer: Viewer, gateway: payments.Gateway, back: str | None
) -> tuple[str, int] | BaseResponse:
    """Stripe mode: the page carries a SetupIntent's client secret for the bill group's
    Stripe customer (made on first use); Stripe.js (static/stripe_card.js) collects the
    card, confirms the SetupIntent and posts the PaymentMethod id, which `attach` checks
    belongs to this customer. The staff preview gets the page without a SetupIntent."""
    stripe = _stripe(gateway)
    assert stripe is not None
    group = viewer.bill_group
    form = StripeCardForm()
    status = 200
    if form.validate_on_submit() and group.gateway_customer_ref:
        submitted = {
            "payment_method": form.payment_method.data or "",
            "customer": group.gateway_customer_ref,
        }
        try:
            attached = stripe.attach(group.public_id, submitted)
        except payments.GatewayError as exc:
            form.payment_method.errors = [exc.message]
        else:
            return _added(viewer, attached, bool(form.make_default.data), back)
    elif form.is_submitted() and not form.payment_method.errors:
        form.payment_method.errors = ["Enter your card details."]
    if form.errors or form.payment_method.errors:
        status = 400
    form.payment_method.data = ""  # a SetupIntent is confirmed once: a new one below
    client_secret = None
    if not viewer.preview:
        try:
            customer = actions.gateway_customer(
                db.session(), group, lambda: stripe.create_customer(group.public_id, group.name)
            )
            db.session().commit()
            client_secret = stripe.setup_intent(customer)
        except payments.GatewayError as exc:
            db.session().rollback()
            form.payment_method.errors = [exc.message]
            status = 503 if isinstance(exc, payments.GatewayUnavailable) else 502
    page = render_template(
        "portal/payment_method_form.html",
        group=group,
        form=form,
        gateway=gateway,
        stripe=stripe,
        client_secret=client_secret,
        back=back,
    )
    return page, status


def _added(
    viewer: Viewer,
    attached: payments.PaymentMethodDetails,
    make_default: bool,
    back: str | None,
) -> BaseResponse:
    method = actions.add_payment_method(
        db.session(),
        Actor.customer(viewer.email),
        viewer.bill_group,
        attached,
        make_default=make_default,
    )
    db.session().commit()
    flash(f"{_label(method)} has been added.")
    return redirect(back or portal_url("payment_methods"), code=303)


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
