"""The customer pays: review, confirm, the gateway's answer, and what it does to invoices.

Three steps, because the gateway call must sit between two transactions (a charge can
take seconds, and on SQLite a transaction that has written holds the whole database's
write lock):

1. `prepare` (the pay form's POST): validates the choice and makes a PaymentAttempt in
   REVIEW, keyed with `secrets.token_urlsafe(32)`, with its lines. The face commits and
   shows the review page, which carries the key and the amount.
2. `confirm` (the review page's POST): finds the attempt by key *and* bill group, checks
   the amount, the staleness and the invoices' balances, and claims it with one
   conditional UPDATE (REVIEW -> CHARGING: of twenty concurrent confirms one wins). It
   COMMITS the claim (the one exception to "actions never commit", so that no lock is
   held while the gateway answers), then the winner asks the gateway with the attempt's
   key as the idempotency key and records the answer (`record_charge`), committed too.
   A loser returns the attempt as it is: the page shows its outcome, or "being
   processed" while it is CHARGING.
3. `record_charge` / `settle` / `settle_pending` / `apply_gateway_event`: the outcome,
   applied once however often it is reported (locked per bill group, state re-read
   under the lock).

A gateway that does not answer (GatewayUnavailable) leaves the attempt CHARGING with no
claim (claimed_at cleared): nothing is applied, the customer is told to try again, and
the retry claims it again and re-sends the same key, so the gateway charges at most once.
An attempt whose confirm died after its claim (a killed worker process) is claimed again
once CLAIM_LEASE has passed, by a retried confirm or by the worker's `settle_pending`.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql import ColumnElement

from portal import audit, clock, events, payments, receipts
from portal.actions import Actor, Invalid, NotFound
from portal.config import settings
from portal.db import rowcount
from portal.locks import lock_bill_group
from portal.models import (
    FINAL_STATES,
    AttemptState,
    BillGroup,
    GatewayEventSeen,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentApplication,
    PaymentAttempt,
    PaymentAttemptLine,
    PaymentMethod,
    PaymentSource,
    PaymentStatus,
)
from portal.money import format_money
from portal.payments import Charge, ChargeRequest, ChargeStatus, GatewayEvent

log = logging.getLogger(__name__)

# A claim older than this whose confirm never recorded an answer (the process died) may
# be claimed again; the same idempotency key makes that safe.
CLAIM_LEASE = dt.timedelta(seconds=60)
_MAX_ID = 2**63 - 1

STALE = "This review page is out of date: review the payment again."
UNAVAILABLE = (
    "The payment service did not answer. Nothing was applied to your invoices; "
    "try again in a moment (you will not be charged twice)."
)


# --- 1. prepare ------------------------------------------------------------------------


def prepare(
    db: Session,
    actor: Actor,
    group: BillGroup,
    *,
    invoice_ids: list[int] | None,
    amount_minor: int | None,
    method_id: int,
    currency: str | None = None,
) -> PaymentAttempt:
    """A PaymentAttempt in REVIEW for these invoices (None: every open one), the whole
    balance or `amount_minor` of it (oldest due date first), charged to `method_id`.
    `currency`, when the form says which it shows, must be the bill group's. Never
    commits; raises Invalid or NotFound before writing anything."""
    if currency is not None and currency != group.currency:
        raise Invalid(
            f"Payments for {group.name} are in {group.currency}, not {currency}.", "amount"
        )
    chosen = _chosen_invoices(db, group, invoice_ids)
    balance = sum(invoice.balance_minor for invoice in chosen)
    if amount_minor is None:
        amount_minor = balance
    _check_amount(group, amount_minor, balance)
    method = _method(db, group, method_id)
    now = clock.now()
    attempt = PaymentAttempt(
        bill_group_id=group.id,
        key=secrets.token_urlsafe(32),
        state=AttemptState.REVIEW,
        amount_minor=amount_minor,
        currency=group.currency,
        payment_method_id=method.id,
        created_by=actor.label,
        expires_at=now + dt.timedelta(seconds=settings().PAYMENT_REVIEW_TTL_SECONDS),
    )
    left = amount_minor
    for invoice in chosen:
        part = min(left, invoice.balance_minor)
        if part <= 0:
            break
        attempt.lines.append(PaymentAttemptLine(invoice_id=invoice.id, amount_minor=part))
        left -= part
    db.add(attempt)
    db.flush()
    return attempt


def _chosen_invoices(db: Session, group: BillGroup, invoice_ids: list[int] | None) -> list[Invoice]:
    """The invoices to pay, oldest due date first; each must be this group's and open."""
    if invoice_ids is None:
        found = list(
            db.scalars(
                select(Invoice).where(
                    Invoice.bill_group_id == group.id, Invoice.status == InvoiceStatus.OPEN
                )
            )
        )
        found = [invoice for invoice in found if invoice.balance_minor > 0]
        if not found:
            raise Invalid("There is nothing to pay: no invoice has a balance.", "invoices")
    else:
        wanted = set(invoice_ids)
        if not wanted:
            raise Invalid("Choose at least one invoice to pay.", "invoices")
        if any(isinstance(i, bool) or not 0 < i <= _MAX_ID for i in wanted):
            raise NotFound("No such invoice in this bill group.", "invoices")
        found = list(
            db.scalars(
                select(Invoice).where(Invoice.bill_group_id == group.id, Invoice.id.in_(wanted))
            )
        )
        if len(found) != len(wanted):
            raise NotFound("No such invoice in this bill group.", "invoices")
        for invoice in found:
            _check_payable(group, invoice)
    return sorted(found, key=lambda i: (i.due_date, i.issue_date, i.id))


def _check_payable(group: BillGroup, invoice: Invoice) -> None:
    if invoice.status == InvoiceStatus.PAID or (
        invoice.status == InvoiceStatus.OPEN and invoice.balance_minor <= 0
    ):
        raise Invalid(f"Invoice {invoice.number} is already paid.", "invoices")
    if invoice.status == InvoiceStatus.VOID:
        raise Invalid(f"Invoice {invoice.number} is void: there is nothing to pay.", "invoices")
    if invoice.status != InvoiceStatus.OPEN:
        raise NotFound("No such invoice in this bill group.", "invoices")
    if invoice.currency != group.currency:
        raise Invalid(
            f"Invoice {invoice.number} is in {invoice.currency}; payments here are in "
            f"{group.currency}.",
            "invoices",
        )


def _check_amount(group: BillGroup, amount_minor: int, balance: int) -> None:
    money = _money(group.currency)
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise Invalid("Enter an amount greater than zero.", "amount")
    if amount_minor > balance:
        raise Invalid(
            f"The amount is more than the balance of the chosen invoices ({money(balance)}).",
            "amount",
        )
    if amount_minor < balance:
        entity = group.entity
        if not entity.allow_partial_payments:
            raise Invalid(
                f"Pay the whole balance ({money(balance)}): part payments are not accepted.",
                "amount",
            )
        if amount_minor < entity.min_partial_payment_minor:
            raise Invalid(
                f"A part payment must be at least {money(entity.min_partial_payment_minor)}.",
                "amount",
            )


def _method(db: Session, group: BillGroup, method_id: int) -> PaymentMethod:
    method = None
    if not isinstance(method_id, bool) and isinstance(method_id, int) and 0 < method_id <= _MAX_ID:
        method = db.scalar(
            select(PaymentMethod).where(
                PaymentMethod.id == method_id, PaymentMethod.bill_group_id == group.id
            )
        )
    if method is None:
        raise NotFound("Choose one of your saved payment methods.", "method")
    return method


# --- 2. confirm ------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """The attempt a confirm found, and whether this confirm is the one that charges."""

    attempt: PaymentAttempt
    won: bool


def find(db: Session, group: BillGroup, key: str) -> PaymentAttempt:
    """The bill group's attempt with this key; another group's is as absent as none."""
    attempt = None
    if isinstance(key, str) and 0 < len(key) <= 64:
        attempt = db.scalar(
            select(PaymentAttempt)
            .where(PaymentAttempt.key == key, PaymentAttempt.bill_group_id == group.id)
            .options(selectinload(PaymentAttempt.lines).selectinload(PaymentAttemptLine.invoice))
        )
    if attempt is None:
        raise NotFound("No such payment.")
    return attempt


def claim(
    db: Session, actor: Actor, group: BillGroup, key: str, *, expected_amount_minor: int
) -> Claim:
    """Check and claim the attempt (never commits). Invalid for a tampered amount, a stale
    review page (the attempt is marked EXPIRED in `db`: commit that) or an invoice whose
    balance has fallen under its line. An attempt already claimed, or finished, is
    returned as it is with won=False."""
    attempt = find(db, group, key)
    if attempt.state == AttemptState.REVIEW:
        if expected_amount_minor != attempt.amount_minor:
            raise Invalid("The amount does not match the review page: review it again.", "amount")
        now = clock.now()
        if attempt.stale(now):
            expired = db.execute(
                update(PaymentAttempt)
                .where(PaymentAttempt.id == attempt.id, PaymentAttempt.state == AttemptState.REVIEW)
                .values(state=AttemptState.EXPIRED, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            db.refresh(attempt)
            if rowcount(expired) == 1:
                raise Invalid(STALE)
            return Claim(attempt, won=False)
        for line in attempt.lines:
            if (
                line.invoice.status != InvoiceStatus.OPEN
                or line.invoice.balance_minor < line.amount_minor
            ):
                raise Invalid(
                    f"Invoice {line.invoice.number} has changed since the review page was shown: "
                    "review the payment again.",
                    "invoices",
                )
        if attempt.currency != group.currency:
            raise Invalid(f"Payments here are now in {group.currency}: review the payment again.")
        condition = PaymentAttempt.state == AttemptState.REVIEW
    elif attempt.state == AttemptState.CHARGING:
        if expected_amount_minor != attempt.amount_minor:
            raise Invalid("The amount does not match the review page: review it again.", "amount")
        # Free to claim again: the gateway did not answer (claimed_at cleared), or the
        # confirm that claimed it never finished.
        now = clock.now()
        condition = and_(
            PaymentAttempt.state == AttemptState.CHARGING,
            or_(PaymentAttempt.claimed_at.is_(None), PaymentAttempt.claimed_at < now - CLAIM_LEASE),
        )
    else:
        return Claim(attempt, won=False)
    won = _take(db, attempt, condition)
    return Claim(attempt, won=won)


def _take(db: Session, attempt: PaymentAttempt, condition: ColumnElement[bool]) -> bool:
    now = clock.now()
    result = db.execute(
        update(PaymentAttempt)
        .where(PaymentAttempt.id == attempt.id, condition)
        .values(state=AttemptState.CHARGING, claimed_at=now, failure_message=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    db.refresh(attempt)
    return rowcount(result) == 1


def charge(gateway: payments.Gateway, attempt: PaymentAttempt, *, return_url: str) -> Charge:
    """Ask the gateway; the attempt's key is the idempotency key. No database writes."""
    method = attempt.payment_method
    if method is None:
        return Charge(
            reference="",
            status=ChargeStatus.DECLINED,
            amount_minor=attempt.amount_minor,
            currency=attempt.currency,
            failure_message="The payment method was removed. Choose another one.",
        )
    return gateway.charge(
        ChargeRequest(
            idempotency_key=attempt.key,
            method_token=method.gateway_token,
            customer_ref=attempt.bill_group.gateway_customer_ref,
            amount_minor=attempt.amount_minor,
            currency=attempt.currency,
            description=_description(attempt),
            return_url=return_url,
        )
    )


def confirm(
    db: Session,
    actor: Actor,
    group: BillGroup,
    key: str,
    *,
    expected_amount_minor: int,
    gateway: payments.Gateway,
    return_url: str,
) -> PaymentAttempt:
    """The review page's button: claim, COMMIT the claim, charge, record, COMMIT.

    The one action that commits, twice: the gateway is asked between two transactions.
    Raises Invalid (nothing charged) for a tampered amount, a stale page (committed as
    EXPIRED first) or a changed invoice; NotFound for another group's key; returns the
    attempt as it is for a confirm that lost the claim. When the gateway does not answer
    the attempt is left CHARGING, unclaimed, with `failure_message` = UNAVAILABLE."""
    try:
        claimed = claim(db, actor, group, key, expected_amount_minor=expected_amount_minor)
    except Invalid:
        db.commit()  # an EXPIRED mark, if the page was stale; nothing else was written
        raise
    db.commit()
    attempt = claimed.attempt
    if not claimed.won:
        return attempt
    try:
        answer = charge(gateway, attempt, return_url=return_url)
    except payments.GatewayUnavailable:
        log.warning("payment attempt %s: the gateway did not answer", attempt.id)
        db.execute(
            update(PaymentAttempt)
            .where(PaymentAttempt.id == attempt.id, PaymentAttempt.state == AttemptState.CHARGING)
            .values(claimed_at=None, failure_message=UNAVAILABLE, updated_at=clock.now())
            .execution_options(synchronize_session=False)
        )
        db.commit()
        db.refresh(attempt)
        return attempt
    record_charge(db, attempt, answer, gateway_name=gateway.name)
    db.commit()
    return attempt


# --- 3. outcomes -----------------------------------------------------------------------


def record_charge(
    db: Session, attempt: PaymentAttempt, charge: Charge, *, gateway_name: str | None = None
) -> PaymentAttempt:
    """What the gateway said about the attempt's charge, applied once (never commits).

    SUCCEEDED: a Payment (SUCCEEDED) applied to the lines' invoices, oldest first, an
    invoice PAID when nothing is left; DECLINED: the attempt FAILED and a FAILED Payment
    with no applications (so the history shows it); REQUIRES_ACTION: the attempt waits
    for the 3-D Secure step; PROCESSING: a PENDING Payment until the gateway confirms.
    The same outcome recorded twice changes nothing the second time."""
    lock_bill_group(db, attempt.bill_group_id)
    db.refresh(attempt)  # as it is now, under the lock
    if attempt.state in FINAL_STATES:
        return attempt
    if gateway_name is not None:
        attempt.gateway = gateway_name
    if charge.reference:
        attempt.gateway_reference = charge.reference
    if charge.status == ChargeStatus.SUCCEEDED:
        _succeeded(db, attempt)
    elif charge.status == ChargeStatus.DECLINED:
        _failed(db, attempt, charge.failure_message or "The payment was declined.")
    elif charge.status == ChargeStatus.REQUIRES_ACTION:
        attempt.state = AttemptState.REQUIRES_ACTION
        attempt.claimed_at = None
    elif charge.status == ChargeStatus.PROCESSING and attempt.state != AttemptState.PROCESSING:
        attempt.state = AttemptState.PROCESSING
        attempt.claimed_at = None
        _payment(db, attempt, PaymentStatus.PENDING)
        _audit(db, attempt, "payment.pending", "pending")
    db.flush()
    return attempt


def settle(db: Session, gateway: payments.Gateway, attempt: PaymentAttempt) -> PaymentAttempt:
    """Ask the gateway how a REQUIRES_ACTION or PROCESSING attempt stands now, and
    record it (never commits). GatewayUnavailable leaves it as it was."""
    if attempt.state in (AttemptState.REQUIRES_ACTION, AttemptState.PROCESSING) and (
        attempt.gateway_reference
    ):
        record_charge(db, attempt, gateway.retrieve(attempt.gateway_reference))
    return attempt


def settle_pending(db: Session, gateway: payments.Gateway, limit: int = 50) -> int:
    """The worker's pass: processing attempts asked again, and attempts whose confirm
    never finished (CHARGING past CLAIM_LEASE) charged again with the same key. Each is
    committed on its own; returns how many reached a final state."""
    now = clock.now()
    rows = db.scalars(
        select(PaymentAttempt)
        .where(
            or_(
                PaymentAttempt.state == AttemptState.PROCESSING,
                and_(
                    PaymentAttempt.state == AttemptState.CHARGING,
                    PaymentAttempt.claimed_at < now - CLAIM_LEASE,
                ),
            ),
            PaymentAttempt.gateway.is_(None) | (PaymentAttempt.gateway == gateway.name),
        )
        .order_by(PaymentAttempt.updated_at)
        .limit(limit)
    ).all()
    db.commit()
    finished = 0
    for attempt in rows:
        try:
            if attempt.state == AttemptState.PROCESSING:
                settle(db, gateway, attempt)
            elif _take(
                db,
                attempt,
                and_(
                    PaymentAttempt.state == AttemptState.CHARGING,
                    PaymentAttempt.claimed_at < now - CLAIM_LEASE,
                ),
            ):
                db.commit()
                answer = charge(gateway, attempt, return_url=_return_path(attempt))
                record_charge(db, attempt, answer, gateway_name=gateway.name)
            db.commit()
        except payments.GatewayError:
            db.rollback()
            log.warning("payment attempt %s: not settled, the gateway did not answer", attempt.id)
            continue
        finished += attempt.state in FINAL_STATES
    return finished


def apply_gateway_event(db: Session, gateway_name: str, event: GatewayEvent) -> str:
    """A verified gateway webhook, applied once (never commits): "duplicate" for an event
    id seen before, "unknown" for a charge the portal did not make (logged), else
    "applied". charge.refunded sets the payment's refunded amount (REFUNDED when all of
    it is); invoices are not reopened: the billing system decides that."""
    try:
        with db.begin_nested():
            db.add(GatewayEventSeen(gateway=gateway_name, event_id=event.id, kind=event.kind))
    except IntegrityError:
        return "duplicate"
    reference = event.charge.reference
    attempt = db.scalar(
        select(PaymentAttempt).where(
            PaymentAttempt.gateway_reference == reference,
            or_(PaymentAttempt.gateway.is_(None), PaymentAttempt.gateway == gateway_name),
        )
    )
    payment = db.scalar(
        select(Payment).where(
            Payment.gateway == gateway_name, Payment.gateway_reference == reference
        )
    )
    if attempt is None and payment is None:
        log.warning("gateway %s event %s: no such charge %s", gateway_name, event.id, reference)
        return "unknown"
    if event.kind in ("charge.succeeded", "charge.failed"):
        if attempt is not None:
            record_charge(db, attempt, event.charge, gateway_name=gateway_name)
        return "applied"
    if event.kind == "charge.refunded":
        if payment is None:
            log.warning(
                "gateway %s event %s: refund of an unrecorded charge", gateway_name, event.id
            )
            return "unknown"
        lock_bill_group(db, payment.bill_group_id)
        db.refresh(payment)
        refunded = min(
            max(event.charge.refunded_minor, payment.refunded_minor), payment.amount_minor
        )
        if refunded != payment.refunded_minor:
            payment.refunded_minor = refunded
            if refunded == payment.amount_minor:
                payment.status = PaymentStatus.REFUNDED
            audit.record(
                db,
                "payment.refunded",
                "refunded",
                actor_type="system",
                actor=gateway_name,
                bill_group_id=payment.bill_group_id,
                detail=f"{_money(payment.currency)(refunded)} of payment {payment.id} refunded",
            )
            db.flush()
        return "applied"
    return "unknown"


# --- applying ---------------------------------------------------------------------------


def _payment(db: Session, attempt: PaymentAttempt, status: PaymentStatus) -> Payment:
    """The attempt's Payment, made now or updated to `status`."""
    payment = attempt.payment
    if payment is None:
        payment = Payment(
            bill_group_id=attempt.bill_group_id,
            payment_method_id=attempt.payment_method_id,
            amount_minor=attempt.amount_minor,
            currency=attempt.currency,
            status=status,
            received_at=clock.now(),
            method_description=_method_description(attempt),
            reference=attempt.gateway_reference,
            source=PaymentSource.PORTAL,
            gateway=attempt.gateway,
            gateway_reference=attempt.gateway_reference or None,
            created_by=attempt.created_by,
        )
        db.add(payment)
        db.flush()
        attempt.payment_id = payment.id
        attempt.payment = payment
    else:
        payment.status = status
    return payment


def _succeeded(db: Session, attempt: PaymentAttempt) -> None:
    payment = _payment(db, attempt, PaymentStatus.SUCCEEDED)
    payment.received_at = clock.now()
    for line in attempt.lines:
        invoice = db.get(Invoice, line.invoice_id, populate_existing=True)
        if invoice is None:
            continue
        # The invoice was paid some other way meanwhile: what cannot be applied stays on
        # the payment as unapplied, for the billing system to settle.
        part = min(line.amount_minor, max(invoice.balance_minor, 0))
        if part <= 0:
            continue
        payment.applications.append(PaymentApplication(invoice_id=invoice.id, amount_minor=part))
        invoice.amount_paid_minor += part
        if invoice.balance_minor == 0:
            invoice.status = InvoiceStatus.PAID
    attempt.state = AttemptState.SUCCEEDED
    attempt.claimed_at = None
    attempt.failure_message = None
    db.flush()
    _audit(db, attempt, "payment.succeeded", "succeeded")
    events.payment_succeeded(db, attempt.bill_group, payment, _actor(attempt).event())
    receipts.queue(db, payment)


def _failed(db: Session, attempt: PaymentAttempt, message: str) -> None:
    attempt.state = AttemptState.FAILED
    attempt.failure_message = message[:300]
    attempt.claimed_at = None
    payment = _payment(db, attempt, PaymentStatus.FAILED)
    payment.failure_message = message[:300]
    db.flush()
    _audit(db, attempt, "payment.failed", "failed")
    events.payment_failed(db, attempt.bill_group, payment, _actor(attempt).event())


def _actor(attempt: PaymentAttempt) -> Actor:
    return Actor.customer(attempt.created_by)


def _audit(db: Session, attempt: PaymentAttempt, action: str, outcome: str) -> None:
    money = _money(attempt.currency)(attempt.amount_minor)
    where = f"{attempt.gateway or 'gateway'} {attempt.gateway_reference or '-'}"
    detail = f"{money} (attempt {attempt.id}, {where})"
    if attempt.failure_message and outcome == "failed":
        detail += f": {attempt.failure_message}"
    audit.record(
        db,
        action,
        outcome,
        **_actor(attempt).audit(),
        bill_group_id=attempt.bill_group_id,
        detail=detail[:500],
    )


def _description(attempt: PaymentAttempt) -> str:
    numbers = ", ".join(line.invoice.number for line in attempt.lines)
    return f"{attempt.bill_group.entity.name}: {numbers}"[:200]


def _method_description(attempt: PaymentAttempt) -> str | None:
    method = attempt.payment_method
    return payments.method_label(method)[:100] if method is not None else None


def _return_path(attempt: PaymentAttempt) -> str:
    return f"/p/{attempt.bill_group.public_id}/pay/attempts/{attempt.id}/return"


def _money(currency: str) -> Callable[[int], str]:
    locale = settings().LOCALE
    return lambda minor: format_money(minor, currency, locale)
