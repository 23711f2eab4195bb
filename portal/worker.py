"""The background worker: decides pending sign-in requests and sends the outbox.

`flask --app wsgi worker` runs it; the demo runs it in a thread of the web process.
"""

from __future__ import annotations

import logging
import secrets
import threading

from flask import Flask

from emails import outbox
from portal import db, signin

log = logging.getLogger(__name__)


def run_once(worker: str | None = None) -> tuple[int, int]:
    """One pass inside an app context: (requests decided, messages sent)."""
    session = db.session()
    decided = signin.evaluate_pending(session)
    sent = outbox.send_due(session, worker)
    return decided, sent


def run_forever(app: Flask, interval: float, stop: threading.Event | None = None) -> None:
    worker = secrets.token_hex(8)
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            with app.app_context():
                decided, sent = run_once(worker)
        except Exception:  # the database may be down: log, wait, try again
            log.exception("worker pass failed")
            decided = sent = 0
        if not (decided or sent):
            stop.wait(interval)


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
    if app.config["WORKER_IN_PROCESS"]:
        # Started by the first request, so the reloader's watcher process never runs it.
        @app.before_request
        def _start_worker() -> None:
            start_in_process(app)
