"""Billing details (PO, VAT and registration numbers) and the two contacts."""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, redirect, render_template
from werkzeug.wrappers import Response as BaseResponse
from wtforms import SelectChoice

from portal import billing_contact, db, details, events, notices
from portal.forms import BillingDetailsForm, ContactForm
from portal.models import Contact, ContactKind
from portal.views.viewer import (
    Viewer,
    bp,
    current_viewer,
    portal_page,
    portal_url,
    record_change,
)

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
            if contact_kind == ContactKind.BILLING:
                return _save_billing(viewer, form, new)
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
    return render_template(
        "portal/contact_form.html",
        group=current_viewer().bill_group,
        form=form,
        kind=kind,
        contact=existing,
        can_copy=kind == ContactKind.SHIPPING and billing is not None,
    ), status


def _save_billing(
    viewer: Viewer, form: ContactForm, new: dict[str, Any]
) -> BaseResponse | tuple[str, int]:
    """Save the billing contact. Its address changes at once only to the confirmed one
    or to none; a new address waits, as pending_email, for its mailbox to confirm it,
    and meanwhile the notices go to the confirmed one (portal.billing_contact)."""
    session = db.session()
    group = viewer.bill_group
    existing = billing_contact.lock(session, group)
    to = [existing.email] if existing and existing.email else []
    stored = ("pending_email", *new)
    before = {key: getattr(existing, key) for key in stored} if existing else {}
    contact = existing or Contact(bill_group=group, kind=ContactKind.BILLING, name=new["name"])
    asked = new.pop("email")
    for key, value in new.items():
        setattr(contact, key, value)
    session.add(contact)
    named: billing_contact.Named | None = None
    if asked is None or asked == contact.email:
        contact.email, contact.pending_email = asked, None
        billing_contact.retire(session, group)
    elif asked != contact.pending_email:
        try:
            named = billing_contact.name_address(session, group, contact, asked, viewer.email)
        except billing_contact.TooManyNamed as exc:
            session.rollback()
            form.email.errors = [*form.email.errors, exc.message]
            return _contact_form(form, ContactKind.BILLING, existing, existing, 429)
    after = {key: getattr(contact, key) for key in stored}
    if not record_change(viewer, "contact.billing.update", before, after):
        session.rollback()
        flash("Nothing changed.")
        return redirect(portal_url("contacts"), code=303)
    changed = [key for key in stored if before.get(key) != after[key]]
    notices.details_changed(session, group, viewer.email, "billing contact", changed, to)
    # The billing system hears of a new address when it is confirmed, not before.
    shown = [key for key in changed if key != "pending_email"]
    if shown:
        events.contact_updated(session, group, contact, events.customer(viewer.email), shown)
    session.commit()
    flash("The billing contact has been saved.")
    if named is not None:
        flash(_named_message(named, asked or "", contact.email))
    return redirect(portal_url("contacts"), code=303)


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
