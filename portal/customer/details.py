"""Billing details (PO, VAT and registration numbers) and the two contacts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import abort, flash, make_response, redirect
from werkzeug.wrappers import Response as BaseResponse
from wtforms import SelectChoice

from portal import billing_contact, db, details
from portal.actions import Actor, TooMany
from portal.actions.contacts import update_contact
from portal.actions.details import update_billing_details
from portal.config import settings
from portal.customer.forms import BillingDetailsForm, ContactForm
from portal.customer.viewer import (
    Viewer,
    bp,
    portal_page,
    portal_url,
    render_page,
)
from portal.models import Contact, ContactKind


@bp.route("/billing-details", methods=["GET", "POST"])
@portal_page
def billing_details(viewer: Viewer) -> str | tuple[str, int] | BaseResponse:
    group = viewer.bill_group
    form = BillingDetailsForm(obj=group)
    if form.validate_on_submit():
        try:
            saved = update_billing_details(
                db.session(), _actor(viewer), group, _values(form, details.BILLING_DETAILS)
            )
        except details.InvalidFields as exc:
            _show(form, exc)
        else:
            if saved:
                db.session().commit()
                flash("Your billing details have been saved.")
            else:
                flash("Nothing changed.")
            return redirect(portal_url("billing_details"), code=303)
    status = 400 if any(field.errors for field in form) else 200
    return render_page("portal/billing_details.html", form=form), status


@bp.get("/contacts")
@portal_page
def contacts(viewer: Viewer) -> str:
    return render_page(
        "portal/contacts.html",
        billing=viewer.bill_group.contact(ContactKind.BILLING),
        shipping=viewer.bill_group.contact(ContactKind.SHIPPING),
        country_names=dict(details.countries(settings().LOCALE)),
    )


@bp.route("/contacts/<kind>", methods=["GET", "POST"])
@portal_page(form=True)
def edit_contact(viewer: Viewer, kind: str) -> str | tuple[str, int] | BaseResponse:
    if kind not in (ContactKind.BILLING, ContactKind.SHIPPING):
        abort(404)
    group = viewer.bill_group
    contact_kind = ContactKind(kind)
    existing = group.contact(contact_kind)
    billing = group.contact(ContactKind.BILLING)
    form = ContactForm(obj=existing)
    form.country.choices = [
        SelectChoice("", "Choose a country"),
        *(SelectChoice(code, name) for code, name in details.countries(settings().LOCALE)),
    ]
    if form.validate_on_submit():
        try:
            saved = update_contact(
                db.session(),
                _actor(viewer),
                group,
                contact_kind,
                _values(form, details.CONTACT),
                same_as_billing=bool(form.same_as_billing.data),
            )
        except details.InvalidFields as exc:
            _show(form, exc)
        except TooMany as exc:
            db.session().rollback()
            form.email.errors = [*form.email.errors, exc.message]
            page, status = _contact_form(form, contact_kind, existing, billing, exc.status)
            refused = make_response(page, status)
            refused.headers["Retry-After"] = str(exc.retry_after)
            return refused
        else:
            if not saved.changed:
                flash("Nothing changed.")
                return redirect(portal_url("contacts"), code=303)
            db.session().commit()
            flash(f"The {kind} contact has been saved.")
            if saved.named is not None:
                flash(
                    _named_message(
                        saved.named, saved.contact.pending_email or "", saved.contact.email
                    )
                )
            return redirect(portal_url("contacts"), code=303)
    elif not form.is_submitted() and existing is not None and existing.pending_email:
        form.email.data = existing.pending_email  # what the customer last asked for
    status = 400 if any(field.errors for field in form) else 200
    return _contact_form(form, contact_kind, existing, billing, status)


def _contact_form(
    form: ContactForm,
    kind: ContactKind,
    existing: Contact | None,
    billing: Contact | None,
    status: int,
) -> tuple[str, int]:
    return render_page(
        "portal/contact_form.html",
        form=form,
        kind=kind,
        contact=existing,
        can_copy=kind == ContactKind.SHIPPING and billing is not None,
    ), status


def _named_message(named: billing_contact.Named, address: str, confirmed: str | None) -> str:
    sent = (
        f"We have emailed {address} a link to confirm it."
        if named is billing_contact.Named.SENT
        else f"We emailed {address} a link to confirm it recently; that link still works."
    )
    until = (
        f" Until it is confirmed, notices keep going to {confirmed}."
        if confirmed
        else " Until it is confirmed, it receives no notices."
    )
    return sent + until


def _actor(viewer: Viewer) -> Actor:
    """The customer who saves (a preview never reaches here: portal_page refuses its POSTs)."""
    return Actor.customer(viewer.email)


def _values(form: Any, rules: Mapping[str, details.Rule]) -> dict[str, Any]:
    return {name: getattr(form, name).data for name in rules}


def _show(form: Any, exc: details.InvalidFields) -> None:
    """Each refused value's message next to its field, as the rule words it."""
    for name, message in exc.errors.items():
        field = getattr(form, name)
        field.errors = [*field.errors, message]
