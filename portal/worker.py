"""The background worker: decides pending sign-in requests, queues reminders, sends the
outbox, delivers webhooks and settles payments the gateway is still processing.

`flask --app wsgi worker` runs it; the demo runs it in a thread of the web process.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

from flask import Flask, current_app

from emails import outbox
from portal import db, invoice_copies, notices, payments, receipts, reminders, signin, webhooks
from portal.config import settings, settings_of

log = logging.getLogger(__name__)


def run_once(worker: str | None = None) -> tuple[int, int]:
    """One pass inside an app context: (requests decided, messages sent). Webhooks
    too, last: see `deliver_webhooks`."""
    decided, sent = _email_pass(worker)
    deliver_webhooks(worker)
    settle_payments()
    return decided, sent


def _email_pass(worker: str | None) -> tuple[int, int]:
    session = db.session()
    decided = signin.evaluate_pending(session)
    # Notices whose window has closed, receipts and invoice copies join the outbox
    # first, so this pass sends them.
    notices.send_due(session)
    receipts.send_due(session)
    scan_reminders()
    invoice_copies.send_due(session)
    sent = outbox.send_due(session, worker)
    return decided, sent


def scan_reminders() -> int:
    """Queue the reminders due, at most once per REMINDER_SCAN_SECONDS in this process
    (a scan is a few indexed queries per seller, but there is no point in running it
    twice a second); several workers scanning at once is safe (portal.reminders)."""
    state = current_app.extensions.setdefault("portal.reminder_scan", {"at": None})
    now = time.monotonic()
    last = state["at"]
    if last is not None and now - last < settings().REMINDER_SCAN_SECONDS:
        return 0
    state["at"] = now
    return reminders.send_due(db.session())


def deliver_webhooks(worker: str | None = None) -> int:
    return webhooks.send_due(db.session(), worker)


def settle_payments() -> int:
    """Processing payments asked again, and confirms that died mid-charge finished (see
    portal.actions.paying.settle_pending); beside the webhooks, as a slow gateway must
    not hold up sign-in email either."""
    from portal.actions import paying  # late: the actions import the email templates

    if settings().PAYMENT_GATEWAY == "none":
        return 0
    return paying.settle_pending(db.session(), payments.get_gateway(settings()))


def _loop(
    app: Flask, interval: float, stop: threading.Event, one_pass: Callable[[], object]
) -> None:
    while not stop.is_set():
        try:
            with app.app_context():
                busy = one_pass()
        except Exception:  # the database may be down: log, wait, try again
            log.exception("worker pass failed")
            busy = False
        if not busy:
            stop.wait(interval)


def run_forever(app: Flask, interval: float, stop: threading.Event | None = None) -> None:
    """Sign-in email in this thread, webhooks in another: a slow or dead webhook
    receiver must never hold up someone's sign-in link."""
    worker = secrets.token_hex(8)
    stop = stop or threading.Event()
    hooks = threading.Thread(
        target=_loop,
        args=(app, interval, stop, lambda: deliver_webhooks(worker) + settle_payments()),
        name="portal-webhooks",
        daemon=True,
    )
    hooks.start()
    try:
        _loop(app, interval, stop, lambda: any(_email_pass(worker)))
    finally:
        stop.set()
        hooks.join(timeout=30)


_started = threading.Lock()


def start_in_process(app: Flask) -> None:
    """Run the worker in a daemon thread of this process (local development)."""
    if not _started.acquire(blocking=False):
        return
    thread = threading.Thread(
        target=run_forever, args=(app, 0.5), name="portal-worker", daemon=True
    )
    thread.start()
    log.info("worker running in process")


def init_app(app: Flask) -> None:
    if settings_of(app).WORKER_IN_PROCESS:
        # Started by the first request, so the reloader's watcher process never runs it.
        @app.before_request
        def _start_worker() -> None:
            start_in_process(app)
