"""Paying: the pay form, the review page, the confirm (PRG to the outcome page), the
3-D Secure return, the payment history with its CSV and receipt PDFs, and the sandbox
gateway's own 3-D Secure page.

The transactions are the face's, except in `paying.confirm`, which commits its claim
before it asks the gateway (see portal.actions.paying). A staff preview sees every page
with its buttons disabled; any POST from it is refused (403) by `portal_page`.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as BaseResponse

from portal import clock, csvexport, db, downloads, payments, receipts, signin
from portal.actions import ActionError, Actor, NotFound, paying
from portal.clock import today
from portal.config import settings
from portal.customer.forms import ConfirmPaymentForm, PayForm, PaymentFilterForm
from portal.customer.viewer import Viewer, bp, payment_method_label, portal_page, portal_url
from portal.forms import ButtonForm
from portal.models import (
    AttemptState,
    BillGroup,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentApplication,
    PaymentAttempt,
    PaymentAttemptLine,
    PaymentStatus,
)
from portal.money import MoneyError, to_decimal, to_minor

_MAX_ID = 2**63 - 1


def gateway() -> payments.Gateway | None:
    name = settings().PAYMENT_GATEWAY
    return None if name == "none" else payments.get_gateway(settings())


@bp.app_context_processor
def _can_pay() -> dict[str, bool]:
    """`can_pay` in every template: whether a gateway is configured to pay with, and on a
    portal page, whether the viewer's role shows the pay buttons (a viewer's does not)."""
    viewer = g.get("viewer")
    shown = viewer is None or viewer.sees_controls
    return {"can_pay": settings().PAYMENT_GATEWAY != "none" and shown}


def _invoice_ids(values: list[str]) -> list[int] | None:
    """The `invoice` fields as ids (None when there are none: the whole balance); a
    value that is not an id is an id that exists nowhere."""
    if not values:
        return None
    ids = []
    for value in values:
        ids.append(int(value) if value.isascii() and value.isdigit() and len(value) < 19 else 0)
    return ids


def _open_invoices(group: BillGroup, ids: list[int] | None) -> list[Invoice]:
    """What the pay form lists: the chosen invoices of this group that are open with a
    balance (or all of those), oldest due first."""
    statement = select(Invoice).where(
        Invoice.bill_group_id == group.id, Invoice.status == InvoiceStatus.OPEN
    )
    if ids is not None:
        statement = statement.where(Invoice.id.in_([i for i in ids if 0 < i <= _MAX_ID]))
    found = [i for i in db.session().scalars(statement) if i.balance_minor > 0]
    return sorted(found, key=lambda i: (i.due_date, i.issue_date, i.id))


@bp.route("/pay", methods=["GET", "POST"])
@portal_page(form=True)
def pay_form(viewer: Viewer) -> str | tuple[str, int] | BaseResponse:
    group = viewer.bill_group
    if gateway() is None:
        abort(404)
    source = request.form if request.method == "POST" else request.args
    ids = _invoice_ids(source.getlist("invoice"))
    form = PayForm(
        formdata=request.form if request.method == "POST" else None,
        data={
            "currency": group.currency,
            "method": group.default_payment_method.id if group.default_payment_method else None,
        },
    )
    methods = list(group.payment_methods)
    form.method.choices = [(m.id, payment_method_label(m)) for m in methods]
    invoices = _open_invoices(group, ids)
    total = sum(i.balance_minor for i in invoices)
    problem = None
    if request.method == "POST" and form.validate_on_submit():
        amount = None
        raw = (form.amount.data or "").strip()
        if raw and group.entity.allow_partial_payments:
            try:
                amount = to_minor(raw.replace(",", ""), group.currency)
            except MoneyError:
                form.amount.errors = ["Enter an amount such as 120.50."]
        if not form.amount.errors:
            try:
                attempt = paying.prepare(
                    db.session(),
                    Actor.customer(viewer.email),
                    group,
                    invoice_ids=ids,
                    amount_minor=amount,
                    method_id=form.method.data or 0,
                    currency=form.currency.data or None,
                )
            except ActionError as exc:
                db.session().rollback()
                target = {"amount": form.amount, "method": form.method}.get(exc.field or "")
                if target is not None:
                    target.errors = [*target.errors, exc.message]
                else:
                    problem = exc.message
            else:
                db.session().commit()
                return redirect(portal_url("pay_review", key=attempt.key), code=303)
    elif request.method == "POST" and not form.method.data:
        form.method.errors = ["Choose a payment method."]
    status = 400 if problem or any(field.errors for field in form) else 200
    if ids is not None and not invoices and request.method == "GET":
        problem = "None of the chosen invoices has anything left to pay."
    return render_template(
        "portal/pay_form.html",
        group=group,
        form=form,
        invoices=invoices,
        ids=ids or [],
        total=total,
        methods=methods,
        problem=problem,
        add_card_next=request.full_path.rstrip("?") if request.method == "GET" else None,
        today=today(),
        amount_default=to_decimal(total, group.currency) if total else "",
    ), status


def _attempt_by_key(group: BillGroup, key: str) -> PaymentAttempt:
    try:
        return paying.find(db.session(), group, key)
    except NotFound:
        abort(404)


@bp.get("/pay/review/<key>")
@portal_page(form=True)
def pay_review(viewer: Viewer, key: str) -> str | BaseResponse:
    group = viewer.bill_group
    attempt = _attempt_by_key(group, key)
    if attempt.state != AttemptState.REVIEW:
        return redirect(portal_url("pay_outcome", attempt_id=attempt.id), code=303)
    form = ConfirmPaymentForm(data={"key": attempt.key, "amount_minor": attempt.amount_minor})
    return render_template(
        "portal/pay_review.html",
        group=group,
        attempt=attempt,
        form=form,
        stale=attempt.stale(clock.now()),
        again=_again_args(attempt),
    )


@bp.post("/pay/confirm")
@portal_page
def pay_confirm(viewer: Viewer) -> BaseResponse:
    group = viewer.bill_group
    form = ConfirmPaymentForm()
    if not form.validate_on_submit():
        abort(400)
    key = form.key.data or ""
    raw_amount = form.amount_minor.data or ""
    amount = int(raw_amount) if raw_amount.isascii() and raw_amount.isdigit() else -1
    found = gateway()
    if found is None:
        abort(404)
    attempt = _attempt_by_key(group, key)
    try:
        attempt = paying.confirm(
            db.session(),
            Actor.customer(viewer.email),
            group,
            key,
            expected_amount_minor=amount,
            gateway=found,
            return_url=url_for(
                "customer.pay_return",
                public_id=group.public_id,
                attempt_id=attempt.id,
                _external=True,
            ),
        )
    except NotFound:
        abort(404)
    except ActionError as exc:
        db.session().rollback()
        flash(exc.message)
        if attempt.state == AttemptState.REVIEW and not attempt.stale(clock.now()):
            return redirect(portal_url("pay_review", key=attempt.key), code=303)
        return redirect(portal_url("pay_form", **_again_args(attempt)), code=303)
    if attempt.state == AttemptState.REQUIRES_ACTION:
        # A form's POST may be redirected within the portal only (CSP form-action 'self'
        # applies to the redirect too): the sandbox's step, ours, at once; a gateway's
        # own page (Stripe's 3-D Secure) is the outcome page's "Continue" link.
        action = _action_url(found, attempt)
        if action and _ours(action):
            return redirect(action, code=303)
    return redirect(portal_url("pay_outcome", attempt_id=attempt.id), code=303)


def _ours(url: str) -> bool:
    """A path on this portal (the sandbox's page), not an address elsewhere."""
    return url.startswith("/") and not url.startswith(("//", "/\\"))


def _web(url: str | None) -> bool:
    return url is not None and url.startswith(("https://", "http://"))


def _again_args(attempt: PaymentAttempt) -> dict[str, list[int]]:
    return {"invoice": [line.invoice_id for line in attempt.lines]}


def _action_url(found: payments.Gateway, attempt: PaymentAttempt) -> str | None:
    """Where the browser goes for the 3-D Secure step. The sandbox's page, ours, is
    told where to come back to; a gateway's own page (Stripe's) is used as the gateway
    gave it: it sends the browser to the return_url the charge was made with."""
    if not attempt.gateway_reference:
        return None
    try:
        answer = found.retrieve(attempt.gateway_reference)
    except payments.GatewayError:
        return None
    if answer.action_url is None or not _ours(answer.action_url):
        return answer.action_url if _web(answer.action_url) else None
    back = url_for(
        "customer.pay_return", public_id=attempt.bill_group.public_id, attempt_id=attempt.id
    )
    separator = "&" if "?" in answer.action_url else "?"
    return f"{answer.action_url}{separator}return_to={back}"


def _attempt_or_404(group: BillGroup, attempt_id: int) -> PaymentAttempt:
    attempt = None
    if 0 < attempt_id <= _MAX_ID:
        attempt = db.session().scalar(
            select(PaymentAttempt)
            .where(PaymentAttempt.id == attempt_id, PaymentAttempt.bill_group_id == group.id)
            .options(selectinload(PaymentAttempt.lines).selectinload(PaymentAttemptLine.invoice))
        )
    if attempt is None:
        abort(404)
    return attempt


def _settle(viewer: Viewer, attempt: PaymentAttempt) -> None:
    """A waiting attempt asked again (the 3-D Secure step done, a processing charge
    settled). Never from a preview: it writes."""
    found = gateway()
    if viewer.preview or found is None:
        return
    if attempt.state not in (AttemptState.REQUIRES_ACTION, AttemptState.PROCESSING):
        return
    try:
        paying.settle(db.session(), found, attempt)
    except payments.GatewayError:
        db.session().rollback()
        return
    db.session().commit()


@bp.get("/pay/attempts/<int:attempt_id>")
@portal_page
def pay_outcome(viewer: Viewer, attempt_id: int) -> str:
    group = viewer.bill_group
    attempt = _attempt_or_404(group, attempt_id)
    _settle(viewer, attempt)
    action = None
    found = gateway()
    if attempt.state == AttemptState.REQUIRES_ACTION and found is not None:
        action = _action_url(found, attempt)
    retry = None
    if attempt.state == AttemptState.CHARGING and attempt.claimed_at is None:
        retry = ConfirmPaymentForm(data={"key": attempt.key, "amount_minor": attempt.amount_minor})
    return render_template(
        "portal/pay_outcome.html",
        group=group,
        attempt=attempt,
        action=action,
        retry=retry,
        again=_again_args(attempt),
        today=today(),
    )


@bp.get("/pay/attempts/<int:attempt_id>/return")
@portal_page
def pay_return(viewer: Viewer, attempt_id: int) -> BaseResponse:
    """Where the 3-D Secure step sends the browser back: ask the gateway, then show."""
    attempt = _attempt_or_404(viewer.bill_group, attempt_id)
    _settle(viewer, attempt)
    return redirect(portal_url("pay_outcome", attempt_id=attempt.id), code=303)


# --- history ------------------------------------------------------------------------------


def _history_filters() -> PaymentFilterForm:
    args = request.args
    return PaymentFilterForm(
        formdata=MultiDict({"paid_from": args.get("from", ""), "paid_to": args.get("to", "")})
    )


def history_rows(session: Session, group: BillGroup, form: PaymentFilterForm) -> list[Payment]:
    """Every payment of the bill group (the billing system's too), newest first."""
    statement = (
        select(Payment)
        .where(Payment.bill_group_id == group.id)
        .options(
            selectinload(Payment.applications).selectinload(PaymentApplication.invoice),
            selectinload(Payment.payment_method),
        )
        .order_by(Payment.received_at.desc(), Payment.id.desc())
    )
    rows = list(session.scalars(statement))
    start, end = form.paid_from.data, form.paid_to.data
    return [
        p
        for p in rows
        if (start is None or p.received_at.date() >= start)
        and (end is None or p.received_at.date() <= end)
    ]


def method_label(payment: Payment) -> str:
    if payment.payment_method is not None:
        return payment_method_label(payment.payment_method)
    return payment.method_description or "—"


@bp.get("/payments")
@portal_page
def pay_history(viewer: Viewer) -> tuple[str, int]:
    group = viewer.bill_group
    form = _history_filters()
    valid = form.validate()
    rows = history_rows(db.session(), group, form) if valid else []
    query = {
        k: v
        for k, v in (("from", request.args.get("from", "")), ("to", request.args.get("to", "")))
        if v
    }
    return render_template(
        "portal/pay_history.html",
        group=group,
        form=form,
        payments=rows,
        query=query,
        method_label=method_label,
        has_receipt=has_receipt,
    ), (200 if valid else 400)


CSV_HEADER = ["date", "amount", "currency", "method", "reference", "invoices", "status"]


@bp.get("/payments.csv")
@portal_page
def pay_history_csv(viewer: Viewer) -> Response:
    form = _history_filters()
    if not form.validate():
        abort(400)
    new_session = current_app.extensions["portal.db"]
    group = viewer.bill_group

    def rows() -> Iterator[str]:
        with new_session() as session:
            payments_ = history_rows(session, group, form)
            yield from csvexport.stream(
                CSV_HEADER,
                (
                    [
                        p.received_at.date().isoformat(),
                        str(to_decimal(p.amount_minor, p.currency)),
                        p.currency,
                        method_label(p),
                        p.reference or "",
                        " ".join(a.invoice.number for a in p.applications),
                        p.status.value,
                    ]
                    for p in payments_
                ),
            )

    response = Response(rows(), mimetype="text/csv")
    response.headers["Content-Disposition"] = downloads.attachment("payments.csv")
    return response


def has_receipt(payment: Payment) -> bool:
    return payment.status in (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED)


@bp.get("/payments/<int:payment_id>/receipt.pdf")
@portal_page
def pay_receipt_pdf(viewer: Viewer, payment_id: int) -> Response:
    payment = None
    if 0 < payment_id <= _MAX_ID:
        payment = db.session().scalar(
            select(Payment).where(
                Payment.id == payment_id, Payment.bill_group_id == viewer.bill_group.id
            )
        )
    if payment is None or not has_receipt(payment):
        abort(404)
    response = Response(
        receipts.render_pdf(payment, locale=settings().LOCALE), mimetype="application/pdf"
    )
    response.headers["Content-Disposition"] = downloads.attachment(receipts.filename(payment))
    return response


# --- the sandbox gateway's 3-D Secure page ---------------------------------------------------

sandbox_bp = Blueprint("sandbox", __name__, url_prefix="/sandbox")


def _sandbox() -> payments.SandboxGateway:
    found = gateway()
    if not isinstance(found, payments.SandboxGateway):
        abort(404)
    return found


@sandbox_bp.route("/authenticate/<reference>", methods=["GET", "POST"])
def authenticate(reference: str) -> str | BaseResponse:
    """The card issuer's security check, as the sandbox plays it: Approve or Fail, then
    back to the portal page named by `return_to` (a path inside a portal, nothing else)."""
    sandbox = _sandbox()
    if not reference.isascii() or len(reference) > 64:
        abort(404)
    back = request.values.get("return_to", "")
    public_id = back.split("/")[2] if back.startswith("/p/") and back.count("/") > 2 else ""
    back_to = signin.safe_next(back, public_id) if public_id else None
    form = ButtonForm()
    try:
        current = sandbox.retrieve(reference)
    except payments.GatewayError:
        abort(404)
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        sandbox.authenticate(reference, approve=request.form.get("decision") == "approve")
        if back_to:
            return redirect(back_to, code=303)
        return redirect(url_for("sandbox.authenticate", reference=reference), code=303)
    return render_template(
        "portal/sandbox_authenticate.html", charge=current, form=form, return_to=back_to
    )
