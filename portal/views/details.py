"""Billing details (PO, VAT and registration numbers) and the two contacts."""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, redirect, render_template
from werkzeug.wrappers import Response as BaseResponse
from wtforms import SelectChoice

from portal import db, details, events, notices
from portal.forms import BillingDetailsForm, ContactForm
from portal.models import Contact, ContactKind
from portal.views.viewer import Viewer, bp, portal_page, portal_url, record_change

ADDRESS_FIELDS = ("company", "line1", "line2", "city", "region", "postal_code", "country")
CONTACT_FIELDS = ("name", "email", "phone", *ADDRESS_FIELDS)


@bp.route("/billing-details", methods=["GET", "POST"])
@portal_page
def billing_details(viewer: Viewer) -> str | tuple[str, int] | BaseResponse:
    group = viewer.bill_group
    form = BillingDetailsForm(obj=group)
    if form.validate_on_submit():
        checks = {
            "po_number": lambda v: details.reference_number(v, max_length=64, what="PO number"),
            "vat_number": details.vat_number,
            "registration_number": lambda v: details.reference_number(
                v, max_length=64, what="registration number"
            ),
        }
        new = _checked(form, checks)
        if new is not None:
            to = notices.recipients(group)
            before = {key: getattr(group, key) for key in new}
            for key, value in new.items():
                setattr(group, key, value)
            if record_change(viewer, "billing_details.update", before, new):
                changed = [key for key in new if before[key] != new[key]]
                notices.details_changed(
                    db.session(), group, viewer.email, "billing details", changed, to
                )
                events.billing_details_updated(
                    db.session(), group, events.customer(viewer.email), changed
                )
                db.session().commit()
                flash("Your billing details have been saved.")
            else:
                flash("Nothing changed.")
            return redirect(portal_url("billing_details"), code=303)
    status = 400 if any(field.errors for field in form) else 200
    return render_template("portal/billing_details.html", group=group, form=form), status


@bp.get("/contacts")
@portal_page
def contacts(viewer: Viewer) -> str:
    group = viewer.bill_group
    return render_template(
        "portal/contacts.html",
        group=group,
        billing=group.contact(ContactKind.BILLING),
        shipping=group.contact(ContactKind.SHIPPING),
        country_names=dict(details.countries(current_app.config["LOCALE"])),
    )


@bp.route("/contacts/<kind>", methods=["GET", "POST"])
@portal_page
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
        *(
            SelectChoice(code, name)
            for code, name in details.countries(current_app.config["LOCALE"])
        ),
    ]
    if form.validate_on_submit():
        if contact_kind == ContactKind.SHIPPING and form.same_as_billing.data and billing:
            for field in ADDRESS_FIELDS:
                getattr(form, field).data = getattr(billing, field)
        checks = {
            "name": lambda v: _required(
                details.clean_text(v, max_length=200, what="name"), "Enter a name."
            ),
            "company": lambda v: details.clean_text(v, max_length=200, what="company"),
            "email": details.contact_email,
            "phone": details.phone,
            "line1": lambda v: _required(
                details.clean_text(v, max_length=200, what="address"),
                "Enter the first line of the address.",
            ),
            "line2": lambda v: details.clean_text(v, max_length=200, what="address"),
            "city": lambda v: _required(
                details.clean_text(v, max_length=100, what="town or city"),
                "Enter the town or city.",
            ),
            "region": lambda v: details.clean_text(v, max_length=100, what="region"),
            "postal_code": lambda v: details.clean_text(v, max_length=20, what="postcode"),
            "country": details.country,
        }
        new = _checked(form, checks)
        if new is not None:
            to = notices.recipients(group)
            contact = existing or Contact(bill_group=group, kind=contact_kind, name=new["name"])
            before = {key: getattr(existing, key) for key in new} if existing else {}
            for key, value in new.items():
                setattr(contact, key, value)
            db.session().add(contact)
            if record_change(viewer, f"contact.{kind}.update", before, new):
                changed = [key for key in new if before.get(key) != new[key]]
                notices.details_changed(
                    db.session(), group, viewer.email, f"{kind} contact", changed, to
                )
                events.contact_updated(
                    db.session(), group, contact, events.customer(viewer.email), changed
                )
                db.session().commit()
                flash(f"The {kind} contact has been saved.")
            else:
                flash("Nothing changed.")
            return redirect(portal_url("contacts"), code=303)
    status = 400 if any(field.errors for field in form) else 200
    return render_template(
        "portal/contact_form.html",
        group=group,
        form=form,
        kind=contact_kind,
        can_copy=contact_kind == ContactKind.SHIPPING and billing is not None,
    ), status


def _required(value: str | None, message: str) -> str:
    if value is None:
        raise details.DetailError(message)
    return value


def _checked(form: Any, checks: dict[str, Any]) -> dict[str, Any] | None:
    """Run each field through its domain check; put messages next to the fields.
    Returns the clean values, or None when any field is wrong (nothing is written)."""
    clean: dict[str, Any] = {}
    for name, check in checks.items():
        field = getattr(form, name)
        try:
            clean[name] = check(field.data)
        except details.DetailError as exc:
            field.errors = [*field.errors, exc.message]
    if any(getattr(form, name).errors for name in checks):
        return None
    return clean
