"""Reminders (portal.reminders): schedules parsed strictly; the current step of each
kind found for each target and sent once; never for a paid or void invoice, a disabled
portal, an ended contract or an address that stopped them; an invoice paid between the
scan and the queueing is not reminded; a crash leaves nothing half-written and the re-run
sends each once; two workers racing (PostgreSQL) send each once."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emails import outbox as outbox_module
from portal import db as portal_db
from portal import reminders
from portal.models import (
    InvoiceStatus,
    OutboxMessage,
    ReminderKind,
    ReminderOutcome,
    ReminderSent,
    ReminderUnsubscription,
    SubscriptionStatus,
)
from tests.conftest import run_worker
from tests.factories import TODAY, make_bill_group, make_contact, make_invoice, make_subscription
from tests.portal.signin_helpers import race
from tests.settings import change_settings

pytestmark = pytest.mark.usefixtures("clock")

DAY = dt.timedelta(days=1)


# --- schedules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "days"),
    [("", ()), ("  ", ()), ("1,7,14", (1, 7, 14)), (" 14, 1 ,7,7", (1, 7, 14)), ("365", (365,))],
)
def test_a_schedule_is_a_short_list_of_whole_days(raw, days):
    assert reminders.parse_schedule(raw) == days


@pytest.mark.parametrize(
    "raw",
    [
        "999999",
        "0",
        "366",
        "-1",
        "1.5",
        "1e3",
        "7,",
        ",7",
        "1;7",
        "one",
        "1,2,3,4,5,6",
        "٣",  # an Arabic-Indic three: a digit to str.isdigit, not to us
        "7\x00",
        "7\u202e",
        "\ud800",
        "9" * 100,
    ],
)
def test_anything_else_is_refused_with_a_reason(raw):
    with pytest.raises(reminders.BadSchedule) as refused:
        reminders.parse_schedule(raw)
    assert str(refused.value)


# --- what is due ------------------------------------------------------------------------


def seller_group(db: Session, **schedules: str):
    group = make_bill_group(db)
    for kind, days in schedules.items():
        setattr(group.entity, reminders.COLUMNS[ReminderKind(kind)], days)
    make_contact(db, group, email="Billing@Acme.com")
    return group


def queued(db: Session) -> list[tuple[str, str]]:
    db.expire_all()
    return sorted(
        (kind, to) for kind, to in db.execute(select(OutboxMessage.kind, OutboxMessage.to_address))
    )


def sent_rows(db: Session) -> list[tuple[str, int, int, str]]:
    db.expire_all()
    return sorted(
        (row.kind.value, row.target_id, row.step, row.outcome.value)
        for row in db.scalars(select(ReminderSent))
    )


def scan(app: Flask, db: Session) -> int:
    db.commit()
    with app.app_context():
        return reminders.send_due(db)


def test_due_soon_sends_the_nearest_step_reached_once(app, db, clock):
    group = seller_group(db, due_soon="7, 3")
    invoice = make_invoice(db, group, issue_date=TODAY - 10 * DAY, due_date=TODAY + 2 * DAY)
    assert scan(app, db) == 1
    # Step 7 was never sent on its day (the invoice was already within 3 days): only 3.
    assert sent_rows(db) == [("due_soon", invoice.id, 3, "queued")]
    assert queued(db) == [("reminder_due_soon", "Billing@Acme.com")]
    assert scan(app, db) == 0
    clock.advance(days=1)
    assert scan(app, db) == 0
    assert len(queued(db)) == 1


def test_due_soon_steps_go_out_one_after_the_other(app, db, clock):
    group = seller_group(db, due_soon="7,3")
    invoice = make_invoice(db, group, issue_date=TODAY - 10 * DAY, due_date=TODAY + 6 * DAY)
    assert scan(app, db) == 1
    clock.advance(days=2)
    assert scan(app, db) == 0  # 4 days before: step 7 already sent, 3 not reached
    clock.advance(days=1)
    assert scan(app, db) == 1
    clock.advance(days=3)  # the due date: no longer "due soon"
    assert scan(app, db) == 0
    assert [row[2] for row in sent_rows(db)] == [3, 7]
    assert all(row[1] == invoice.id for row in sent_rows(db))


def test_overdue_repeats_after_the_due_date(app, db, clock):
    group = seller_group(db, overdue="1, 7, 14")
    invoice = make_invoice(db, group, issue_date=TODAY - 40 * DAY, due_date=TODAY - 8 * DAY)
    assert scan(app, db) == 1  # 8 days late: the 7-day one (the 1-day one is past)
    clock.advance(days=5)
    assert scan(app, db) == 0
    clock.advance(days=1)  # 14 days late
    assert scan(app, db) == 1
    clock.advance(days=30)
    assert scan(app, db) == 0  # no step after 14
    assert sent_rows(db) == [
        ("overdue", invoice.id, 7, "queued"),
        ("overdue", invoice.id, 14, "queued"),
    ]


def test_overdue_leaves_invoices_long_past_their_last_step_alone(app, db):
    group = seller_group(db, overdue="1")
    make_invoice(db, group, issue_date=TODAY - 400 * DAY, due_date=TODAY - 300 * DAY)
    assert scan(app, db) == 0


def test_the_upcoming_invoice_before_each_renewal(app, db, clock):
    group = seller_group(db, upcoming="10")
    subscription = make_subscription(db, group)  # renews in 9 days
    assert scan(app, db) == 1
    assert queued(db) == [("reminder_upcoming", "Billing@Acme.com")]
    # The billing system moves it on a month: reminded again before the next renewal.
    subscription.renewal_date = TODAY + 40 * DAY
    db.commit()
    clock.advance(days=29)
    assert scan(app, db) == 0
    clock.advance(days=1)
    assert scan(app, db) == 1


@pytest.mark.parametrize(
    "change",
    ["cancelled", "paused", "ends_before", "no_renewal"],
)
def test_no_upcoming_reminder_for_a_subscription_that_will_not_renew(app, db, change):
    group = seller_group(db, upcoming="10")
    overrides = {
        "cancelled": {"status": SubscriptionStatus.CANCELLED},
        "paused": {"status": SubscriptionStatus.PAUSED},
        "ends_before": {"end_date": TODAY + 9 * DAY},
        "no_renewal": {"renewal_date": None},
    }[change]
    make_subscription(db, group, **overrides)
    assert scan(app, db) == 0


@pytest.mark.parametrize(
    "case", ["paid", "void", "draft", "portal_disabled", "contract_ended", "no_contact"]
)
def test_never_reminded(app, db, case):
    group = make_bill_group(db)
    group.entity.remind_due_soon_days = "7"
    group.entity.remind_overdue_days = "1"
    if case != "no_contact":
        make_contact(db, group)
    status = {"paid": InvoiceStatus.PAID, "void": InvoiceStatus.VOID, "draft": InvoiceStatus.DRAFT}
    kwargs = {"status": status[case]} if case in status else {}
    make_invoice(db, group, issue_date=TODAY - 9 * DAY, due_date=TODAY + 2 * DAY, **kwargs)
    make_invoice(db, group, issue_date=TODAY - 9 * DAY, due_date=TODAY - 2 * DAY, **kwargs)
    if case == "portal_disabled":
        group.portal_enabled = False
    if case == "contract_ended":
        group.contract_end = TODAY - DAY
    assert scan(app, db) == 0
    assert queued(db) == [] and sent_rows(db) == []


def test_an_invoice_paid_between_the_scan_and_the_queueing_is_not_reminded(app, db):
    group = seller_group(db, due_soon="7")
    invoice = make_invoice(db, group, issue_date=TODAY - 9 * DAY, due_date=TODAY + 2 * DAY)
    db.commit()
    with app.app_context():
        [due] = reminders.find_due(db)
        db.rollback()
        invoice = db.merge(invoice)
        invoice.amount_paid_minor = invoice.total_minor
        invoice.status = InvoiceStatus.PAID
        db.commit()
        assert reminders.queue_one(db, due) is False
        db.commit()
    assert queued(db) == [] and sent_rows(db) == []


def test_an_address_that_stopped_them_gets_none_and_is_not_scanned_again(app, db):
    group = seller_group(db, due_soon="7", overdue="1")
    db.add(
        ReminderUnsubscription(
            bill_group_id=group.id,
            address="billing@acme.com",
            kind=ReminderKind.DUE_SOON,
            created_by="test",
        )
    )
    soon = make_invoice(db, group, issue_date=TODAY - 9 * DAY, due_date=TODAY + 2 * DAY)
    late = make_invoice(db, group, issue_date=TODAY - 9 * DAY, due_date=TODAY - 2 * DAY)
    assert scan(app, db) == 1
    assert queued(db) == [("reminder_overdue", "Billing@Acme.com")]  # overdue is essential
    assert sent_rows(db) == sorted(
        [("due_soon", soon.id, 7, "unsubscribed"), ("overdue", late.id, 1, "queued")]
    )
    assert scan(app, db) == 0


def test_the_non_essential_kinds_carry_a_one_click_unsubscribe_and_overdue_does_not(app, db):
    group = seller_group(db, upcoming="10", due_soon="7", overdue="1")
    make_subscription(db, group)
    make_invoice(db, group, issue_date=TODAY - 9 * DAY, due_date=TODAY + 2 * DAY)
    make_invoice(db, group, issue_date=TODAY - 9 * DAY, due_date=TODAY - 2 * DAY)
    assert scan(app, db) == 3
    with app.app_context():
        headers = {
            row.kind: dict(outbox_module.unseal_headers(row.headers))
            for row in db.scalars(select(OutboxMessage))
        }
    assert headers["reminder_overdue"] == {}
    base = f"https://portal.example.test/p/{group.public_id}/unsubscribe/"
    for kind in ("reminder_upcoming", "reminder_due_soon"):
        value = headers[kind]["List-Unsubscribe"]
        assert value.startswith(f"<{base}") and value.endswith(">")
        assert headers[kind]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        token = value[len(base) + 1 : -1]
        with app.app_context():
            named = reminders.read_unsubscribe_token(token)
        assert named is not None
        assert (named.bill_group_id, named.address) == (group.id, "billing@acme.com")
        assert named.kinds == (ReminderKind(kind.removeprefix("reminder_")),)


# --- crashes, restarts and races --------------------------------------------------------


def test_a_crash_while_queueing_leaves_nothing_and_the_rerun_sends_once(app, db, monkeypatch):
    group = seller_group(db, due_soon="7")
    make_invoice(db, group, issue_date=TODAY - 9 * DAY, due_date=TODAY + 2 * DAY)

    def crash(*_args, **_kwargs):
        raise RuntimeError("the worker died here")

    monkeypatch.setattr(outbox_module, "queue", crash)
    assert scan(app, db) == 0
    assert queued(db) == [] and sent_rows(db) == []  # the reminder row rolled back too
    monkeypatch.undo()
    assert scan(app, db) == 1
    # A restarted worker (a new session, a new process) finds nothing more to do.
    db.close()
    with app.app_context(), Session(portal_db.engine()) as fresh:
        assert reminders.send_due(fresh) == 0
    assert len(queued(db)) == 1


def test_the_worker_scans_at_most_once_per_interval(app, db):
    group = seller_group(db, due_soon="7")
    make_invoice(db, group, issue_date=TODAY - 9 * DAY, due_date=TODAY + 2 * DAY)
    db.commit()
    run_worker(app)
    make_invoice(db, group, issue_date=TODAY - 9 * DAY, due_date=TODAY + 3 * DAY)
    db.commit()
    run_worker(app)  # within REMINDER_SCAN_SECONDS: not scanned again
    assert len(sent_rows(db)) == 1
    change_settings(app, REMINDER_SCAN_SECONDS=0)
    run_worker(app)
    assert len(sent_rows(db)) == 2


@pytest.mark.db
def test_racing_workers_send_each_reminder_once(app: Flask, db: Session) -> None:
    group = seller_group(db, due_soon="7", overdue="1", upcoming="10")
    for i in range(4):
        make_invoice(db, group, issue_date=TODAY - 9 * DAY, due_date=TODAY + (1 + i) * DAY)
        make_invoice(db, group, issue_date=TODAY - 19 * DAY, due_date=TODAY - (1 + i) * DAY)
    make_subscription(db, group)
    db.commit()
    db.close()

    def worker(_job: int) -> int:
        with app.app_context(), Session(portal_db.engine()) as session:
            return reminders.send_due(session)

    sent = race(list(range(4)), worker)
    assert sum(sent) == 9
    assert len(queued(db)) == 9
    keys = db.execute(
        select(ReminderSent.kind, ReminderSent.target_id, func.count()).group_by(
            ReminderSent.kind, ReminderSent.target_id
        )
    ).all()
    assert len(keys) == 9 and all(count == 1 for _k, _t, count in keys)
    assert {row[3] for row in sent_rows(db)} == {ReminderOutcome.QUEUED.value}
    # The outbox rows and the reminder rows are the same nine.
    assert json.dumps(sorted(k.value for k, _t, _c in keys)).count("overdue") == 4
