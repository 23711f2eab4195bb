"""Accounts and bill groups: search, the account overview, creating and editing them by
hand, the bill group page with its portal link, and switching a portal on or off."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import abort, current_app, flash, g, redirect, render_template, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse
from wtforms import SelectChoice

from admin.forms import (
    AccountForm,
    AccountSearchForm,
    AnswerChangeForm,
    BillGroupForm,
    EntityBankDetailsForm,
    EntityPaymentSettingsForm,
)
from admin.guard import NAV, PUBLIC, acting_staff, bp, staff_required
from admin.lookup import get_or_404
from portal import bank, clock, credits, db, disputes, links, paging
from portal import subscriptions as subscription_changes
from portal.actions import ActionError
from portal.actions import accounts as accounts_actions
from portal.actions.accounts import GROUP_FIELDS, InvoicedTermsFixed
from portal.actions.bank import set_bank_details
from portal.actions.credits import set_payment_settings
from portal.forms import ButtonForm, status_of
from portal.models import (
    AccessRule,
    Account,
    BillGroup,
    BillingFrequency,
    ChangeKind,
    CustomerSession,
    Entity,
    Payment,
)
from portal.money import MoneyError, to_decimal, to_minor

PER_PAGE = 50

NAV.append(("admin.accounts", "Accounts", "read"))

View = str | tuple[str, int] | BaseResponse
R = TypeVar("R")


# --- queries -------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRow:
    account: Account
    bill_groups: int


@dataclass(frozen=True)
class GroupRow:
    group: BillGroup
    contract_active: bool
    portal_available: bool
    access_rules: int
    last_sign_in: dt.datetime | None


def _like_pattern(term: str) -> str:
    """A substring pattern in which the user's % and _ are literal characters."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_accounts(database: Session, term: str, page: int) -> paging.Page[AccountRow]:
    """One page of accounts whose name contains `term` (any case), newest first."""
    query = select(Account)
    if term:
        query = query.where(Account.name.ilike(_like_pattern(term), escape="\\"))
    total = database.scalar(select(func.count()).select_from(query.subquery())) or 0
    number = paging.clamp(page, total, PER_PAGE)
    counts = (
        select(BillGroup.account_id, func.count().label("n"))
        .group_by(BillGroup.account_id)
        .subquery()
    )
    rows = database.execute(
        query.add_columns(func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.account_id == Account.id)
        .order_by(Account.created_at.desc(), Account.id.desc())
        .limit(PER_PAGE)
        .offset((number - 1) * PER_PAGE)
    ).all()
    return paging.Page([AccountRow(a, n) for a, n in rows], total, number, PER_PAGE)


def account_groups(database: Session, account: Account, today: dt.date) -> list[GroupRow]:
    """The account's bill groups with their rule counts and last customer sign-in: one
    statement, whatever the number of groups."""
    mine = select(BillGroup.id).where(BillGroup.account_id == account.id)
    rules = (
        select(AccessRule.bill_group_id, func.count().label("n"))
        .where(AccessRule.bill_group_id.in_(mine))
        .group_by(AccessRule.bill_group_id)
        .subquery()
    )
    sign_ins = (
        select(CustomerSession.bill_group_id, func.max(CustomerSession.created_at).label("at"))
        .where(CustomerSession.bill_group_id.in_(mine))
        .group_by(CustomerSession.bill_group_id)
        .subquery()
    )
    rows = database.execute(
        select(BillGroup, func.coalesce(rules.c.n, 0), sign_ins.c.at)
        .outerjoin(rules, rules.c.bill_group_id == BillGroup.id)
        .outerjoin(sign_ins, sign_ins.c.bill_group_id == BillGroup.id)
        .where(BillGroup.account_id == account.id)
        .order_by(BillGroup.name, BillGroup.id)
    ).all()
    return [
        GroupRow(group, group.has_active_contract(today), group.portal_available(today), n, at)
        for group, n, at in rows
    ]


def portal_link(group: BillGroup) -> str:
    """The customers' link. Always from PORTAL_BASE_URL, never from the request's Host."""
    return links.portal_url(group)


# --- helpers -------------------------------------------------------------------------


def _audit(action: str, outcome: str, account_id: int, changed: dict[str, Any], **kw: Any) -> None:
    """Old -> new for each changed field, in the caller's transaction."""
    accounts_actions.record(
        db.session(), acting_staff(), action, outcome, account_id, changed, **kw
    )


def _refused(form: Any, exc: ActionError) -> None:
    """Put the action's message next to the field it is about (next to each, when the
    refusal names several)."""
    errors = exc.errors if isinstance(exc, InvoicedTermsFixed) else {exc.field: exc.message}
    for name, message in errors.items():
        form[name].errors.append(message)


def _submitted(form: Any, write: Callable[[Session], R]) -> R | None:
    """For a valid POST, what the write returned, committed. None for anything else: a
    GET, a form with errors, or a write the action refused (its reasons now on the form)."""
    if not form.validate_on_submit():
        return None
    database = db.session()
    try:
        result = write(database)
    except ActionError as exc:
        _refused(form, exc)
        return None
    database.commit()
    return result


# --- accounts ------------------------------------------------------------------------


@bp.get("/accounts")
@staff_required("read")
def accounts() -> tuple[str, int]:
    form = AccountSearchForm(request.args)
    term = (form.q.data or "") if form.validate() else ""
    page = search_accounts(db.session(), term, paging.page_number(request.args.get("page")))
    return render_template("admin/accounts.html", form=form, term=term, page=page), status_of(form)


@bp.route("/accounts/new", methods=["GET", "POST"])
@staff_required("manage_accounts")
def new_account() -> View:
    form = AccountForm()
    account = _submitted(
        form,
        lambda database: accounts_actions.create_account(
            database,
            acting_staff(),
            name=form.name.data or "",
            external_id=form.external_id.data or None,
        ),
    )
    if account is not None:
        flash(f"Account “{account.name}” created.")
        return redirect(url_for("admin.account", account_id=account.id), code=303)
    return render_template("admin/account_form.html", form=form, account=None), status_of(form)


@bp.route("/accounts/<int:account_id>/edit", methods=["GET", "POST"])
@staff_required("manage_accounts")
def edit_account(account_id: int) -> View:
    account = get_or_404(Account, account_id)
    form = AccountForm(obj=account)
    changed = _submitted(
        form,
        lambda database: accounts_actions.update_account(
            database,
            acting_staff(),
            account,
            name=form.name.data or "",
            external_id=form.external_id.data or None,
        ),
    )
    if changed is not None:
        flash("Account saved." if changed else "Nothing changed.")
        return redirect(url_for("admin.account", account_id=account.id), code=303)
    return render_template("admin/account_form.html", form=form, account=account), status_of(form)


@bp.get("/accounts/<int:account_id>")
@staff_required("read")
def account(account_id: int) -> str:
    found = get_or_404(Account, account_id)
    rows = account_groups(db.session(), found, clock.today())
    return render_template("admin/account.html", account=found, rows=rows)


# --- bill groups ---------------------------------------------------------------------


def _group_form(**kwargs: Any) -> BillGroupForm:
    form = BillGroupForm(**kwargs)
    entities = db.session().scalars(select(Entity).order_by(Entity.name, Entity.id))
    form.entity_id.choices = [
        SelectChoice("", "Choose an entity"),
        *(SelectChoice(e.id, e.name) for e in entities),
    ]
    return form


def _group_values(form: BillGroupForm) -> dict[str, Any]:
    values = {name: form[name].data for name in GROUP_FIELDS}
    values["billing_frequency"] = BillingFrequency(values["billing_frequency"])
    values["auto_pay"] = bool(values["auto_pay"])
    values["portal_enabled"] = bool(values["portal_enabled"])
    return values


@bp.route("/accounts/<int:account_id>/bill-groups/new", methods=["GET", "POST"])
@staff_required("manage_accounts")
def new_bill_group(account_id: int) -> View:
    owner = get_or_404(Account, account_id)
    defaults = {"portal_enabled": True, "contract_start": clock.today()}
    form = _group_form(data=None if request.method == "POST" else defaults)
    group = _submitted(
        form,
        lambda database: accounts_actions.create_bill_group(
            database, acting_staff(), owner, _group_values(form)
        ),
    )
    if group is not None:
        flash(f"Bill group “{group.name}” created.")
        return redirect(url_for("admin.bill_group", bill_group_id=group.id), code=303)
    return render_template(
        "admin/bill_group_form.html", form=form, account=owner, group=None
    ), status_of(form)


@bp.route("/bill-groups/<int:bill_group_id>/edit", methods=["GET", "POST"])
@staff_required("manage_accounts")
def edit_bill_group(bill_group_id: int) -> View:
    group = get_or_404(BillGroup, bill_group_id)
    form = _group_form(obj=group)
    changed = _submitted(
        form,
        lambda database: accounts_actions.update_bill_group(
            database, acting_staff(), group, _group_values(form)
        ),
    )
    if changed is not None:
        flash("Bill group saved." if changed else "Nothing changed.")
        return redirect(url_for("admin.bill_group", bill_group_id=group.id), code=303)
    return render_template(
        "admin/bill_group_form.html", form=form, account=group.account, group=group
    ), status_of(form)


@bp.get("/bill-groups/<int:bill_group_id>")
@staff_required("read")
def bill_group(bill_group_id: int) -> str:
    group = get_or_404(BillGroup, bill_group_id)
    contract_active = group.has_active_contract(clock.today())
    reasons = [
        *([] if group.portal_enabled else ["the portal is disabled"]),
        *([] if contract_active else ["the contract is not active"]),
    ]
    return render_template(
        "admin/bill_group.html",
        group=group,
        contract_active=contract_active,
        unavailable_because=" and ".join(reasons),
        portal_link=portal_link(group),
        button=ButtonForm(),
        allowed=_allowed,
        payments=_payments(group),
        payment_count=db.session().scalar(
            select(func.count(Payment.id)).where(Payment.bill_group_id == group.id)
        ),
        credit_notes=credits.credit_notes(db.session(), group),
        change_requests=subscription_changes.requests_of(db.session(), group),
        disputes=disputes.of_bill_group(db.session(), group),
        answer_form=AnswerChangeForm(),
        describe_change=subscription_changes.describe,
        subscription_name=subscription_changes.subscription_name,
        switched_on=subscription_changes.switched_on,
        change_kinds=list(ChangeKind),
        cancel_reasons=subscription_changes.CANCEL_REASONS,
        unapplied=dict(
            (payment.id, left) for payment, left in credits.unapplied_payments(db.session(), group)
        ),
    )


# The newest payments the bill group page lists (the API lists them all).
PAYMENTS_SHOWN = 200


def _payments(group: BillGroup) -> list[Payment]:
    return list(
        db.session().scalars(
            select(Payment)
            .where(Payment.bill_group_id == group.id)
            .order_by(Payment.received_at.desc(), Payment.id.desc())
            .limit(PAYMENTS_SHOWN)
        )
    )


@bp.route("/bill-groups/<int:bill_group_id>/payment-settings", methods=["GET", "POST"])
@staff_required("manage_accounts")
def entity_payment_settings(bill_group_id: int) -> View:
    """The bill group's seller's settings for paying in the portal: part payments and
    their minimum (in this group's currency), and applying credit."""
    group = get_or_404(BillGroup, bill_group_id)
    entity = group.entity
    form = EntityPaymentSettingsForm(
        data=None
        if request.method == "POST"
        else {
            "allow_partial_payments": entity.allow_partial_payments,
            "min_partial_payment": str(
                to_decimal(entity.min_partial_payment_minor, group.currency)
            ),
            "allow_credit_application": entity.allow_credit_application,
        }
    )

    def write(database: Session) -> dict[str, Any]:
        try:
            minimum = to_minor((form.min_partial_payment.data or "").strip(), group.currency)
        except MoneyError:
            raise ActionError("Enter an amount such as 10.00.", "min_partial_payment") from None
        return set_payment_settings(
            database,
            acting_staff(),
            entity,
            allow_partial_payments=bool(form.allow_partial_payments.data),
            min_partial_payment_minor=minimum,
            allow_credit_application=bool(form.allow_credit_application.data),
        )

    changed = _submitted(form, write)
    if changed is not None:
        flash("Payment settings saved." if changed else "Nothing changed.")
        return redirect(url_for("admin.bill_group", bill_group_id=group.id), code=303)
    return render_template(
        "admin/payment_settings.html", form=form, group=group, entity=entity
    ), status_of(form)


@bp.route("/bill-groups/<int:bill_group_id>/bank-details", methods=["GET", "POST"])
@staff_required("manage_bank_details")
def entity_bank_details(bill_group_id: int) -> View:
    """The bill group's seller's bank details, shown on open invoices for paying by bank
    transfer, and how the payment reference is made (portal.bank has the rules)."""
    group = get_or_404(BillGroup, bill_group_id)
    entity = group.entity
    form = EntityBankDetailsForm(
        data=None
        if request.method == "POST"
        else {
            "account_holder": entity.bank_account_holder,
            "bank_name": entity.bank_name,
            "iban": entity.bank_iban and bank.format_iban(entity.bank_iban),
            "bic": entity.bank_bic,
            "account_number": entity.bank_account_number,
            "routing_number": entity.bank_routing_number,
            "reference_format": entity.bank_reference_format,
        }
    )
    changed = _submitted(
        form,
        lambda database: set_bank_details(
            database,
            acting_staff(),
            entity,
            account_holder=form.account_holder.data,
            bank_name=form.bank_name.data,
            iban=form.iban.data,
            bic=form.bic.data,
            account_number=form.account_number.data,
            routing_number=form.routing_number.data,
            reference_format=form.reference_format.data,
        ),
    )
    if changed is not None:
        flash("Bank details saved." if changed else "Nothing changed.")
        return redirect(url_for("admin.bill_group", bill_group_id=group.id), code=303)
    return render_template(
        "admin/bank_details.html", form=form, group=group, entity=entity
    ), status_of(form)


def _allowed(endpoint: str) -> bool:
    """Whether the signed-in staff member may open another team's page, so that nobody
    is shown a link that answers 403. Views outside /admin check for themselves."""
    view = current_app.view_functions.get(endpoint)
    permission = getattr(view, "staff_permission", None)
    return view is not None and (permission in (None, PUBLIC) or g.staff.may(permission))


@bp.post("/bill-groups/<int:bill_group_id>/portal/enable")
@staff_required("manage_access")
def bill_group_enable_portal(bill_group_id: int) -> BaseResponse:
    return _switch_portal(bill_group_id, enabled=True)


@bp.post("/bill-groups/<int:bill_group_id>/portal/disable")
@staff_required("manage_access")
def bill_group_disable_portal(bill_group_id: int) -> BaseResponse:
    return _switch_portal(bill_group_id, enabled=False)


def _switch_portal(bill_group_id: int, *, enabled: bool) -> BaseResponse:
    if not ButtonForm().validate_on_submit():
        abort(400)
    database = db.session()
    group = get_or_404(BillGroup, bill_group_id, with_for_update=True)
    word = "enabled" if enabled else "disabled"
    if group.portal_enabled == enabled:
        flash(f"The portal was already {word}.")
    else:
        group.portal_enabled = enabled
        changes = {"portal_enabled": [not enabled, enabled]}
        action = "portal.enable" if enabled else "portal.disable"
        _audit(action, word, group.account_id, changes, bill_group_id=group.id)
        database.commit()
        if not enabled:
            flash("Portal disabled. Signed-in customers are signed out on their next page.")
        elif not group.has_active_contract(clock.today()):
            flash("Portal enabled, but the contract is not active, so customers cannot sign in.")
        else:
            flash("Portal enabled. Customers with access can sign in.")
    return redirect(url_for("admin.bill_group", bill_group_id=group.id), code=303)
