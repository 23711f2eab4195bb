"""Credits: the bill group's credit notes and unapplied payments, applying them to open
invoices (where the entity allows it), and turning automatic payment on or off."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse
from wtforms import SelectChoice

from portal import billing, credits, db
from portal.actions import ActionError, Actor
from portal.actions.autopay import expiry_warning, set_autopay
from portal.actions.credits import Source, apply_credit
from portal.clock import today
from portal.customer.forms import ApplyCreditForm, AutopayForm
from portal.customer.viewer import Viewer, bp, portal_page, portal_url
from portal.forms import status_of
from portal.models import BillGroup, Invoice, InvoiceStatus
from portal.money import MoneyError, format_money, to_minor

# The open invoices the form offers, the oldest due first (the action takes any open one).
OFFERED = 200


def _open_invoices(group: BillGroup) -> list[Invoice]:
    return list(
        db.session().scalars(
            select(Invoice)
            .where(
                Invoice.bill_group_id == group.id,
                Invoice.status == InvoiceStatus.OPEN,
                Invoice.balance_minor > 0,
            )
            .order_by(Invoice.due_date, Invoice.issue_date, Invoice.id)
            .limit(OFFERED)
        )
    )


def _choices(form: ApplyCreditForm, group: BillGroup, available: list[credits.Credit]) -> None:
    currency = group.currency
    form.source.choices = [
        SelectChoice(c.token, f"{c.label}: {format_money(c.remaining_minor, currency)} left")
        for c in available
    ]
    form.invoice.choices = [
        SelectChoice(
            str(i.id),
            f"{i.number}, due {i.due_date.isoformat()}: "
            f"{format_money(i.balance_minor, currency)} to pay",
        )
        for i in _open_invoices(group)
    ]


@bp.route("/credits", methods=["GET", "POST"])
@portal_page
def credits_page(viewer: Viewer) -> str | tuple[str, int] | BaseResponse:
    group = viewer.bill_group
    session = db.session()
    available = credits.available(session, group)
    form = ApplyCreditForm()
    _choices(form, group, available)
    may_apply = group.entity.allow_credit_application
    if form.validate_on_submit():
        if not may_apply:
            abort(403)
        try:
            amount = to_minor((form.amount.data or "").strip().replace(",", ""), group.currency)
        except MoneyError:
            form.amount.errors = [*form.amount.errors, "Enter an amount such as 25.00."]
        else:
            try:
                applied = apply_credit(
                    session,
                    Actor.customer(viewer.email),
                    group,
                    source=Source.parse(form.source.data or ""),
                    invoice_id=int(form.invoice.data or 0),
                    amount_minor=amount,
                )
            except ActionError as exc:
                session.rollback()
                field = {"source": form.source, "invoice": form.invoice}.get(
                    exc.field or "", form.amount
                )
                field.errors = [*field.errors, exc.message]
            else:
                session.commit()
                flash(
                    f"{format_money(applied.amount_minor, group.currency)} applied to invoice "
                    f"{applied.invoice.number}."
                )
                return redirect(portal_url("credits_page"), code=303)
    return render_template(
        "portal/credits.html",
        group=group,
        form=form,
        available=available,
        notes=credits.credit_notes(session, group),
        unapplied=credits.unapplied_payments(session, group),
        figures=billing.summary(session, group, today()),
        may_apply=may_apply,
    ), status_of(form)


@bp.post("/autopay")
@portal_page
def autopay(viewer: Viewer) -> BaseResponse:
    group = viewer.bill_group
    form = AutopayForm()
    if not form.validate_on_submit() or form.enabled.data not in ("on", "off"):
        abort(400)
    enabled = form.enabled.data == "on"
    session = db.session()
    try:
        set_autopay(session, Actor.customer(viewer.email), group, enabled)
    except ActionError as exc:
        session.rollback()
        flash(exc.message)
        return redirect(portal_url("overview"), code=303)
    session.commit()
    message = "Automatic payment is on." if enabled else "Automatic payment is off."
    warning = expiry_warning(group, today()) if enabled else None
    flash(f"{message} {warning}" if warning else message)
    return redirect(portal_url("overview"), code=303)
