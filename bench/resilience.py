#!/usr/bin/env python3
"""Resilience under load and faults: the app under gunicorn with production settings,
a `flask worker` beside it, an SMTP sink and a Redis of its own, all on loopback.

    .venv/bin/python bench/resilience.py [--quick] [--smtp-outage SECONDS]
    .venv/bin/python bench/resilience.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Four scenarios, each bounded in time, each printing what it checked, PASS or FAIL, and
the numbers:

1. PostgreSQL restarted in the middle of a steady client loop (needs --database-url;
   skipped on SQLite). Answers during the outage are the branded 503 page, the app
   recovers without a gunicorn restart, and the audit rows, sign-in challenges, outbox
   messages and emails match the requests that were answered with success, one for one.
2. The SMTP server down for --smtp-outage seconds (60; --quick: 10) while people ask
   for sign-in links: the pages do not change, and every email is delivered once after
   it comes back.
3. The rate-limit storage (Redis) down: sign-in answers the same page and sends nothing
   (fails closed); the signed-in overview and /healthz keep answering.
4. A burst of 500 sign-in requests for one address, each from its own client IP: at most
   the per-address budget of emails goes out.
5. The floods of issue 14, with the per-domain and global budgets at their defaults (the
   app and worker restarted so, the budgets emptied): 300 requests from 30 IPs for
   domains without access, 30 for invented addresses at the customer's domain from 3 IPs,
   and 100 from one IPv6 /64; after each, the admitted person still gets an email.

It builds its own data in a throwaway database (a SQLite file, or a database of its own
on the --database-url server, dropped at the end), and exits non-zero if a check fails.
PostgreSQL is restarted with `--pg-restart` (by default this machine's pg_ctlcluster):
stopped, kept down for OUTAGE (2) seconds, started.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import hashlib
import http.client
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOST = "billing.bench.test"
BASE_URL = f"https://{HOST}"
COOKIE = "__Host-session"  # the session cookie's name outside local development
UNAVAILABLE_TITLE = "<title>The service is unavailable</title>"
CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
HTTP_TIMEOUT = 15.0
RECOVERY_LIMIT = 10.0  # seconds after PostgreSQL is back by which requests succeed again
# Budgets the bench raises so that its many distinct addresses at acme.com are not all
# throttled by the per-domain and global budgets; the per-address and per-IP budgets
# keep their defaults (scenario 4 is about the per-address one).
RAISED_BUDGETS = {
    "PORTAL_SIGNIN_LIMIT_PER_DOMAIN": "100000 per 15 minutes",
    "PORTAL_SIGNIN_LIMIT_GLOBAL": "100000 per 15 minutes",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# --- the SMTP sink: a process of its own, so it can be stopped and started again -------


def run_sink(port: int, path: str) -> None:
    """`resilience.py _sink PORT FILE`: an aiosmtpd server appending one JSON line per
    message (recipient, subject, SHA-256 of the plain-text body) to FILE."""
    from aiosmtpd.controller import Controller

    lock = threading.Lock()
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the process's life)

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            part = message.get_body(preferencelist=("plain",))
            text = part.get_content() if part is not None else ""
            record = {
                "to": list(envelope.rcpt_tos),
                "subject": str(message["Subject"]),
                "sha": hashlib.sha256(text.encode()).hexdigest(),
                "at": time.time(),
            }
            with lock:
                out.write(json.dumps(record) + "\n")
                out.flush()
            return "250 OK"

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    stop.wait(timeout=3600)  # bounded even if nobody stops it
    controller.stop()
    out.close()


class Sink:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.path = folder / "sink.jsonl"
        self.path.touch()
        self.log = folder / "sink.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, __file__, "_sink", str(self.port), str(self.path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_for(lambda: port_open(self.port), 15):
            raise RuntimeError(f"the SMTP sink did not start on port {self.port}")

    def stop(self) -> None:
        stop_process(self.process, grace=10)
        self.process = None
        if not wait_for(lambda: not port_open(self.port), 10):
            raise RuntimeError("the SMTP sink's port still answers after it was stopped")

    def messages(self) -> list[dict]:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def count_to(self) -> Counter[str]:
        return Counter(to for m in self.messages() for to in m["to"])


# --- Redis of our own ------------------------------------------------------------------


class OwnRedis:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
                + ["--save", "", "--appendonly", "no", "--dir", str(self.folder)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_for(self.ping, 15):
            raise RuntimeError(f"redis-server did not start on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # down hard, as a crash would
            self.process.wait(timeout=10)
        self.process = None


# --- the app: gunicorn and the worker --------------------------------------------------


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 15) -> None:
    """SIGTERM, and SIGKILL to its process group (each is started in a session of its
    own) if it has not exited within `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own process group, started by us
        process.wait(timeout=10)


class Server:
    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.port = free_port()
        self.gunicorn: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.log = folder / "gunicorn.log"
        self.worker_log = folder / "worker.log"

    def flask(self, *args: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stdout}{result.stderr}")

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.gunicorn = subprocess.Popen(
                # gunicorn.conf.py (workers, redacted access log) with our own port.
                [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{self.port}"]
                + ["--graceful-timeout", "5"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self.worker_log.open("ab") as log:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--interval", "0.5"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_for(lambda: get(self.port, "/healthz", "10.255.255.1").status == 200, 40):
            raise RuntimeError(f"gunicorn did not become healthy; see {self.log}")

    def stop(self) -> None:
        stop_process(self.worker)
        stop_process(self.gunicorn)

    def alive(self) -> tuple[bool, bool]:
        return (
            self.gunicorn is not None and self.gunicorn.poll() is None,
            self.worker is not None and self.worker.poll() is None,
        )


# --- HTTP ----------------------------------------------------------------------------


@dataclass
class Answer:
    status: int  # 0: no answer at all (connection refused, reset or timed out)
    body: str
    cookie: str | None
    started: float
    ended: float
    error: str = ""


def request(
    port: int,
    method: str,
    path: str,
    ip: str,
    cookie: str | None = None,
    form: dict[str, str] | None = None,
) -> Answer:
    """One request as the TLS proxy in front of the app would pass it on."""
    headers = {
        "Host": HOST,
        "X-Forwarded-For": ip,
        "X-Forwarded-Proto": "https",
        "User-Agent": "bench-resilience",
        "Connection": "close",
    }
    if cookie:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    body = None
    if form is not None:
        body = urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Referer"] = BASE_URL + "/"  # what Referrer-Policy: strict-origin sends
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        jar = None
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            if name.strip() == COOKIE:
                jar = rest.split(";", 1)[0]
        return Answer(response.status, text, jar, started, time.monotonic())
    except (OSError, http.client.HTTPException) as exc:
        return Answer(0, "", None, started, time.monotonic(), f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()


def get(port: int, path: str, ip: str, cookie: str | None = None) -> Answer:
    return request(port, "GET", path, ip, cookie)


_ips = itertools.count(1)
_ips_lock = threading.Lock()


def new_ip() -> str:
    """A client IP never used before in this run (10.0.0.1, 10.0.0.2, ...)."""
    with _ips_lock:
        n = next(_ips)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def ask_for_link(
    port: int, public_id: str, address: str, ip: str | None = None
) -> tuple[Answer, Answer | None]:
    """The real flow: the sign-in page (nonce and CSRF token in the session cookie), then
    the email form. Both requests from one client IP (a new one unless told)."""
    ip = ip or new_ip()
    page = get(port, f"/p/{public_id}", ip)
    token = CSRF_RE.search(page.body) if page.status == 200 else None
    if token is None or page.cookie is None:
        return page, None
    form = {"csrf_token": token.group(1), "email": address, "next": ""}
    return page, request(port, "POST", f"/p/{public_id}/sign-in", ip, page.cookie, form)


def masked(html: str, address: str) -> str:
    html = CSRF_RE.sub('name="csrf_token" type="hidden" value="X"', html)
    return html.replace(address, "ADDRESS")


def branded_503(answer: Answer) -> bool:
    return (
        answer.status == 503
        and UNAVAILABLE_TITLE in answer.body
        and "Traceback" not in answer.body
        and "psycopg" not in answer.body.lower()
    )


# --- reporting -------------------------------------------------------------------------


@dataclass
class Report:
    results: list[tuple[str, str, bool | None]] = field(default_factory=list)

    def heading(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def info(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def check(self, scenario: str, ok: bool, text: str) -> bool:
        self.results.append((scenario, text, ok))
        print(f"   {'PASS' if ok else 'FAIL'}  {text}", flush=True)
        return ok

    def skip(self, scenario: str, text: str) -> None:
        self.results.append((scenario, text, None))
        print(f"   SKIP  {text}", flush=True)

    @property
    def failed(self) -> int:
        return sum(1 for _s, _t, ok in self.results if ok is False)


def statuses(answers: list[Answer]) -> str:
    counted = Counter(a.status for a in answers)
    return ", ".join(f"{code or 'no answer'} ×{n}" for code, n in sorted(counted.items()))


# --- the data ---------------------------------------------------------------------------


@dataclass
class Data:
    public_id: str
    bill_group_id: int
    customer_email: str
    customer_cookie: str
    staff_cookie: str


def build_data(config: dict[str, str]) -> tuple[object, Data]:
    """A bill group with an access rule for acme.com and one invoice, a customer session
    and a (viewer) staff session, each as the session cookie the app would have set."""
    from portal import db as portal_db
    from portal import sessions, staffauth
    from portal.access import add_rule
    from portal.actions.staff import complete_sign_in
    from portal.app import create_app
    from portal.models import StaffRole, StaffUser
    from tests.factories import make_bill_group, make_invoice

    app = create_app(config)
    customer = "ap@acme.com"
    with app.app_context(), app.test_request_context("/", headers={"User-Agent": "bench"}):
        db = portal_db.session()
        group = make_bill_group(db, name="Resilience bench", currency="GBP")
        add_rule(db, group, "acme.com", created_by="bench")
        make_invoice(db, group)
        sid, _row = sessions.create(db, group, customer)
        staff = StaffUser(email="viewer@seller.example.com", role=StaffRole.VIEWER)
        staff.set_password(secrets.token_urlsafe(24))
        db.add(staff)
        staff_sid = complete_sign_in(db, staff, "password").sid
        db.commit()
        serializer = app.session_interface.get_signing_serializer(app)
        assert serializer is not None
        data = Data(
            public_id=group.public_id,
            bill_group_id=group.id,
            customer_email=customer,
            customer_cookie=serializer.dumps({"_user_id": sessions.PREFIX + sid, "_fresh": False}),
            staff_cookie=serializer.dumps(
                {"_user_id": staffauth.PREFIX + staff_sid, "_fresh": False}
            ),
        )
    return app, data


class Database:
    """Counting what the app wrote, from the bench's own connection."""

    def __init__(self, app: object, bill_group_id: int) -> None:
        from portal.config import settings_of
        from portal.db import make_engine

        self.engine = make_engine(settings_of(app).DATABASE_URL)  # type: ignore[arg-type]
        self.bill_group_id = bill_group_id

    def audit(self, after: int = 0) -> list[tuple[int, str, str, str | None, str | None]]:
        from sqlalchemy import select

        from portal.models import AuditEvent as A

        with self.engine.connect() as c:
            rows = c.execute(
                select(A.id, A.action, A.outcome, A.actor, A.detail)
                .where(A.bill_group_id == self.bill_group_id, A.id > after)
                .order_by(A.id)
            )
            return [tuple(row) for row in rows]  # type: ignore[misc]

    def last_audit_id(self) -> int:
        rows = self.audit()
        return rows[-1][0] if rows else 0

    def challenges(self) -> list[tuple[str, bool]]:
        from sqlalchemy import select

        from portal.models import SignInChallenge as C

        with self.engine.connect() as c:
            rows = c.execute(select(C.email, C.evaluated_at.is_not(None)))
            return [(email_, bool(done)) for email_, done in rows]

    def outbox(self) -> list[dict]:
        from sqlalchemy import select

        from portal.models import OutboxMessage as O

        columns = (O.id, O.to_address, O.sent_at, O.discarded_at, O.attempts, O.last_error)
        with self.engine.connect() as c:
            return [dict(row._mapping) for row in c.execute(select(*columns).order_by(O.id))]

    def drained(self) -> bool:
        """Every request decided and every message sent or dropped."""
        try:
            return all(done for _e, done in self.challenges()) and all(
                m["sent_at"] or m["discarded_at"] for m in self.outbox()
            )
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def wait_drained(db: Database, sink: Sink, timeout: float) -> float | None:
    """Seconds until the worker had decided and sent everything (and the sink has it)."""
    started = time.monotonic()
    if not wait_for(db.drained, timeout, 0.25):
        return None
    sent = sum(1 for m in db.outbox() if m["sent_at"])
    wait_for(lambda: len(sink.messages()) >= sent, 5, 0.1)
    return time.monotonic() - started


# --- 1. PostgreSQL restarted under load -----------------------------------------------


@dataclass
class Op:
    kind: str  # "signin" (admitted or not), "overview", "preview"
    key: str  # the address asked for, or the preview's unique query
    answers: list[Answer]
    admitted: bool = False

    @property
    def ok(self) -> bool:
        return all(a.status in (200, 303) for a in self.answers) and (
            self.kind != "signin" or len(self.answers) == 2
        )

    @property
    def started(self) -> float:
        return self.answers[0].started

    @property
    def ended(self) -> float:
        return self.answers[-1].ended


# How long PostgreSQL stays down. A plain `restart` is down for a fraction of a second,
# which 4 clients pacing 0.25 s could all miss: one run saw no 503 at all.
OUTAGE = 2.0


def restart_postgres(command: list[str]) -> tuple[float, float, str]:
    """Restart PostgreSQL: a command with a "restart" word is run as "stop", then, after
    OUTAGE seconds, "start"; any other command is run as it is. Always leaves it
    running. (start, back, output)."""
    started = time.monotonic()
    output = ""
    steps = [command]
    if "restart" in command:
        steps = [[verb if c == "restart" else c for c in command] for verb in ("stop", "start")]
    try:
        for number, step in enumerate(steps):
            if number:
                time.sleep(OUTAGE)
            result = subprocess.run(step, capture_output=True, text=True, timeout=60, check=False)
            said = f"`{' '.join(step)}`: exit {result.returncode}"
            said += f" {(result.stdout + result.stderr).strip()}".rstrip()
            output = f"{output}; {said}" if output else said
    finally:
        if not wait_for(pg_ready, 20, 0.1):
            start = [c if c != "restart" else "start" for c in command]
            subprocess.run(start, capture_output=True, timeout=60, check=False)
            wait_for(pg_ready, 30, 0.2)
    return started, time.monotonic(), output


PG_SERVER = {"host": "127.0.0.1", "port": "5432"}  # from --database-url, in main()


def pg_ready() -> bool:
    command = ["pg_isready", "-q", "-h", PG_SERVER["host"], "-p", PG_SERVER["port"]]
    return subprocess.run(command, timeout=10, check=False).returncode == 0


def scenario_postgres(
    report: Report, args: argparse.Namespace, server: Server, sink: Sink, db: Database, data: Data
) -> None:
    name = "1. PostgreSQL restarted under load"
    report.heading(name)
    if not args.database_url:
        report.skip(name, "SQLite: nothing to restart (run with --database-url to try it)")
        return
    command = shlex.split(args.pg_restart)
    before, after = (4.0, 10.0) if args.quick else (8.0, 20.0)
    clients, pace = 4, 0.25  # each client: one operation every 0.25 s at most
    mark = db.last_audit_id()
    outbox_before = {m["id"] for m in db.outbox()}
    sink_before = sink.count_to()
    pid = data.public_id
    ops: list[Op] = []
    ops_lock = threading.Lock()
    counter = itertools.count()
    stop = threading.Event()
    deadline = time.monotonic() + before + after + 60  # bounded however the restart goes

    def client() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            tick = time.monotonic()
            n = next(counter)
            kind = n % 4
            if kind in (0, 3):
                admitted = kind == 0
                address = f"pg-{n}@{'acme.com' if admitted else 'other-corp.com'}"
                page, post = ask_for_link(server.port, pid, address)
                op = Op("signin", address, [page] + ([post] if post else []), admitted)
            elif kind == 1:
                ip = new_ip()
                op = Op(
                    "overview",
                    "",
                    [get(server.port, f"/p/{pid}/overview", ip, data.customer_cookie)],
                )
            else:
                path = f"/overview?r={n}"
                answer = get(
                    server.port, f"/admin/preview/{pid}{path}", new_ip(), data.staff_cookie
                )
                op = Op("preview", path, [answer])
            with ops_lock:
                ops.append(op)
            stop.wait(max(0.0, pace - (time.monotonic() - tick)))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(before)
    restart_start, restart_end, output = restart_postgres(command)
    time.sleep(after)
    stop.set()
    for thread in threads:
        thread.join(timeout=HTTP_TIMEOUT + 5)
    elapsed = time.monotonic() - t0
    answers = [a for op in ops for a in op.answers]
    report.info(
        f"{clients} clients for {elapsed:.1f} s: {len(ops)} operations, {len(answers)} "
        f"requests ({statuses(answers)}); PostgreSQL restarted {restart_start - t0:.1f} s "
        f"in, ready again {restart_end - restart_start:.1f} s later ({output})"
    )

    # Every answer that is not a success is the branded 503 page.
    bad = [a for a in answers if a.status not in (200, 303) and not branded_503(a)]
    unavailable = [a for a in answers if a.status == 503]
    tracebacks = sum(1 for a in answers if "Traceback" in a.body)
    report.check(
        name,
        not bad and tracebacks == 0,
        f"every answer was 200/303 or the branded 503 page: {len(unavailable)} × 503 with "
        f"its title, {tracebacks} tracebacks, {len(bad)} others"
        + (f" (e.g. {bad[0].status} {bad[0].error or bad[0].body[:120]!r})" if bad else ""),
    )
    report.check(
        name,
        bool(unavailable),
        f"the outage was seen by clients: {len(unavailable)} requests answered 503",
    )
    # Recovery: after PostgreSQL is back, requests succeed again, without a restart.
    failures = [op for op in ops if not op.ok]
    last_failure = max((op.ended for op in failures), default=restart_end)
    after_back = [op for op in ops if op.started > last_failure]
    recovered = last_failure - restart_end
    gunicorn_alive, worker_alive = server.alive()
    when = f"{recovered:.1f} s after" if recovered >= 0 else f"{-recovered:.1f} s before"
    report.check(
        name,
        recovered <= RECOVERY_LIMIT and len(after_back) > 0 and gunicorn_alive,
        f"recovered without restarting gunicorn (pool pre-ping): the last failed request "
        f"ended {when} PostgreSQL was ready (limit: {RECOVERY_LIMIT:.0f} s after); all "
        f"{len(after_back)} operations started since succeeded",
    )
    during = [a for a in answers if restart_start <= a.started <= restart_end]
    slowest = max((a.ended - a.started for a in during), default=0.0)
    report.info(
        f"{len(during)} requests started while PostgreSQL restarted ({statuses(during)}); "
        f"the slowest took {slowest:.2f} s"
    )
    logged = server.log.read_text(errors="replace").count("database unavailable")
    passes = server.worker_log.read_text(errors="replace").count("worker pass failed")
    report.info(
        f"logged: {logged} 'database unavailable' by gunicorn's workers, {passes} failed "
        "worker passes (each retried)"
    )

    drained = wait_drained(db, sink, 40)
    report.check(
        name,
        drained is not None and worker_alive and server.alive()[1],
        "the worker survived the outage and then decided every request and sent every "
        + (f"message ({drained:.1f} s after the load)" if drained is not None else "message")
        + ("" if drained is not None else f": NOT within 40 s; {pending(db, sink)}"),
    )

    # Rows against answers. Each sign-in POST writes one "signin.request" audit row and one
    # challenge; the worker then writes one "signin.link" row (sent or not_admitted) and,
    # for an admitted address, one outbox message, which reaches the sink once. Each
    # preview view writes one "preview.view" row naming its (unique) path. The customer's
    # overview writes no audit row.
    audit = db.audit(mark)
    requests_rows = Counter(r[3] for r in audit if r[1] == "signin.request")
    queued = Counter(r[3] for r in audit if r[1] == "signin.request" and r[2] == "queued")
    links = Counter(r[3] for r in audit if r[1] == "signin.link")
    sent_rows = Counter(r[3] for r in audit if r[1] == "signin.link" and r[2] == "sent")
    previews = Counter(r[4] for r in audit if r[1] == "preview.view")
    challenges = Counter(e for e, _done in db.challenges())
    outbox = Counter(m["to_address"] for m in db.outbox() if m["id"] not in outbox_before)
    delivered = sink.count_to() - sink_before
    customer_rows = [r for r in audit if r[3] == data.customer_email]

    lost, duplicated, in_doubt = [], [], []
    for op in ops:
        if op.kind == "signin":
            admitted = 1 if op.admitted else 0
            got = (
                requests_rows[op.key],
                queued[op.key],
                challenges[op.key],
                links[op.key],
                sent_rows[op.key],
                outbox[op.key],
                delivered[op.key],
            )
            full = (1, 1, 1, 1, admitted, admitted, admitted)
            none = (0,) * 7
        elif op.kind == "preview":
            got, full, none = (previews[op.key],), (1,), (0,)
        else:
            continue
        if any(g > f for g, f in zip(got, full, strict=True)):
            duplicated.append((op.key, got))
        elif op.ok and got != full:
            lost.append((op.key, got))
        elif not op.ok and got not in (none, full):
            lost.append((op.key, got))  # half-written
        elif not op.ok and got == full:
            in_doubt.append(op.key)
    signins = [op for op in ops if op.kind == "signin"]
    ok_signins = sum(1 for op in signins if op.ok)
    ok_previews = sum(1 for op in ops if op.kind == "preview" and op.ok)
    report.check(
        name,
        not lost,
        f"none lost: {ok_signins} of {len(signins)} sign-in requests answered 200, each "
        "with its request row, challenge, decision row and (admitted: "
        f"{sum(1 for op in signins if op.ok and op.admitted)}) outbox message and email; "
        f"{ok_previews} preview views answered 200, each with its audit row"
        + (f"; LOST or half-written: {lost[:5]}" if lost else ""),
    )
    report.check(
        name,
        not duplicated,
        f"none duplicated: {sum(requests_rows.values())} request rows, "
        f"{sum(challenges.values())} challenges, {sum(outbox.values())} outbox messages, "
        f"{sum(delivered.values())} emails, {sum(previews.values())} preview rows"
        + (f"; DUPLICATED: {duplicated[:5]}" if duplicated else ""),
    )
    report.check(
        name,
        not customer_rows,
        f"the signed-in overview wrote nothing and its session survived: "
        f"{sum(1 for op in ops if op.kind == 'overview' and op.ok)} answered 200, "
        f"{len(customer_rows)} audit rows for the customer",
    )
    report.info(
        f"requests answered 503 whose writes had committed in full (the commit went "
        f"through, a later statement did not): {len(in_doubt)}"
        + (f" {in_doubt[:5]}" if in_doubt else "")
    )


def pending(db: Database, sink: Sink) -> str:
    """What the worker has not done, and which unsent messages have in fact arrived (they
    would go a second time when their lease runs out)."""
    try:
        waiting = sum(1 for _e, done in db.challenges() if not done)
        outbox = db.outbox()
        unsent = [m for m in outbox if not (m["sent_at"] or m["discarded_at"])]
        errors = Counter(m["last_error"] for m in unsent)
        sent = Counter(m["to_address"] for m in outbox if m["sent_at"])
        arrived = sink.count_to()
        early = [
            m["to_address"] for m in unsent if arrived[m["to_address"]] > sent[m["to_address"]]
        ]
        return (
            f"{waiting} requests undecided, {len(unsent)} messages unsent ({dict(errors)}), "
            f"of which {len(early)} already delivered but not recorded as sent {early[:5]}"
        )
    except Exception as exc:
        return f"cannot read the database: {type(exc).__name__}"


# --- 2. SMTP down -----------------------------------------------------------------------


def scenario_smtp(
    report: Report, args: argparse.Namespace, server: Server, sink: Sink, db: Database, data: Data
) -> None:
    from emails.outbox import MAX_BACKOFF

    outage = args.smtp_outage
    name = f"2. SMTP down for {outage:.0f} s"
    report.heading(name)
    pid = data.public_id
    admitted = [f"smtp-{i}@acme.com" for i in range(4)]
    refused = [f"smtp-{i}@other-corp.com" for i in range(4)]
    # Each admitted address twice (its budget is 3 per 15 minutes), the others once.
    plan = [a for a in admitted for _ in range(2)] + refused
    plan = [plan[i] for i in sorted(range(len(plan)), key=lambda i: (i * 7) % len(plan))]
    before = sink.count_to()
    reference_address = "smtp-reference@other-corp.com"
    _page, reference = ask_for_link(server.port, pid, reference_address)
    assert reference is not None
    reference_page = (reference.status, masked(reference.body, reference_address))

    sink.stop()
    down_at = time.monotonic()
    answers: list[tuple[str, Answer | None, Answer]] = []
    spread = outage * 0.6  # requests over the first 60% of the outage, so some wait long
    for i, address in enumerate(plan):
        due = down_at + spread * i / len(plan)
        time.sleep(max(0.0, due - time.monotonic()))
        page, post = ask_for_link(server.port, pid, address)
        answers.append((address, post, page))
    time.sleep(max(0.0, down_at + outage - time.monotonic()))
    tried = [m for m in db.outbox() if m["to_address"] in admitted]
    attempts = sum(m["attempts"] for m in tried)
    sink.start()
    back_at = time.monotonic()
    report.info(
        f"sink stopped for {back_at - down_at:.1f} s; {len(plan)} sign-in requests during it "
        f"({len(admitted)} admitted addresses twice each, {len(refused)} others once); the "
        f"worker tried {attempts} times to send {len(tried)} messages meanwhile"
    )

    same = [
        post is not None and (post.status, masked(post.body, address)) == reference_page
        for address, post, _page in answers
    ]
    report.check(
        name,
        all(same),
        f"every page answered the same as with SMTP up ({reference_page[0]}, body identical "
        f"but for the echoed address): {sum(same)} of {len(same)}",
    )
    # The outbox's own backoff (5 s doubling, at most 15 minutes): a message first tried
    # at t is retried at t+5, t+15, t+35, t+75 ... s, so the retry after SMTP is back comes
    # at most about one outage later (less the closer t is to the end); plus a margin.
    bound = min(outage, MAX_BACKOFF.total_seconds()) + 20
    drained = wait_drained(db, sink, bound)
    delivered = sink.count_to() - before
    wanted = Counter(a for a in plan if a in admitted)
    messages = [m for m in sink.messages() if set(m["to"]) & set(admitted)]
    distinct = len({m["sha"] for m in messages})
    ok = (
        drained is not None
        and all(delivered[a] == wanted[a] for a in admitted)
        and not any(delivered[a] for a in refused)
        and distinct == len(messages)
    )
    report.check(
        name,
        ok,
        f"every admitted request's email arrived exactly once after SMTP came back: "
        f"{sum(delivered[a] for a in admitted)} of {sum(wanted.values())} "
        f"({distinct} distinct), {sum(delivered[a] for a in refused)} to the others, "
        + (
            f"the last {drained:.1f} s after its return (bound {bound:.0f} s, from the "
            "outbox's backoff)"
            if drained is not None
            else f"NOT all within {bound:.0f} s: {pending(db, sink)}"
        ),
    )


# --- 3. Redis down ----------------------------------------------------------------------


def scenario_redis(
    report: Report, server: Server, redis: OwnRedis, sink: Sink, db: Database, data: Data
) -> None:
    name = "3. Redis (rate-limit storage) down"
    report.heading(name)
    pid = data.public_id
    reference_address = "redis-reference@other-corp.com"
    _page, reference = ask_for_link(server.port, pid, reference_address)
    assert reference is not None
    reference_page = (reference.status, masked(reference.body, reference_address))
    wait_drained(db, sink, 15)
    before = sink.count_to()
    mark = db.last_audit_id()

    redis.stop()
    report.info(f"killed the bench's redis-server on port {redis.port}")
    addresses = [f"redis-{i}@acme.com" for i in range(3)] + ["redis-x@other-corp.com"]
    posts = []
    for address in addresses:
        page, post = ask_for_link(server.port, pid, address)
        posts.append((address, page, post))
    same = [
        post is not None and (post.status, masked(post.body, address)) == reference_page
        for address, _page, post in posts
    ]
    slowest = max((p.ended - g.started) for _a, g, p in posts if p is not None)
    report.check(
        name,
        all(same),
        f"sign-in answered the same page as with Redis up ({reference_page[0]}): "
        f"{sum(same)} of {len(same)} (statuses "
        f"{[p.status if p else g.status for _a, g, p in posts]}; slowest {slowest:.2f} s)",
    )
    plain = [get(server.port, f"/p/{pid}/overview", new_ip(), data.customer_cookie)]
    plain += [get(server.port, f"/p/{pid}/invoices", new_ip(), data.customer_cookie)]
    plain += [get(server.port, "/healthz", new_ip()) for _ in range(3)]
    report.check(
        name,
        all(a.status == 200 for a in plain),
        f"pages that need no limit kept answering: overview, invoices, /healthz ×3: "
        f"{[a.status for a in plain]}",
    )
    time.sleep(3)  # several worker polls
    wait_drained(db, sink, 10)
    sent = sink.count_to() - before
    rows = [r for r in db.audit(mark) if r[3] in addresses]
    outcomes = Counter((r[1], r[2]) for r in rows)
    challenges = sum(1 for e, _d in db.challenges() if e in addresses)
    report.check(
        name,
        sum(sent[a] for a in addresses) == 0
        and challenges == 0
        and outcomes == Counter({("signin.request", "throttled"): len(addresses)}),
        f"no email was sent (fails closed): {sum(sent[a] for a in addresses)} emails, "
        f"{challenges} challenges, audit {dict(outcomes)}",
    )
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sentence = next(
        (s.strip() for s in re.split(r"(?<=\.)\s", readme) if "fails closed" in s.lower()), ""
    )
    report.check(
        name,
        bool(sentence),
        "README says so: " + (repr(" ".join(sentence.split())) if sentence else "NOT FOUND"),
    )

    redis.start()
    back_address = "redis-back@acme.com"
    _page, post = ask_for_link(server.port, pid, back_address)
    arrived = wait_for(lambda: (sink.count_to() - before)[back_address] == 1, 15)
    report.check(
        name,
        post is not None and post.status == 200 and arrived,
        f"with Redis back on port {redis.port}, sign-in sends email again without a restart: "
        f"{(sink.count_to() - before)[back_address]} email",
    )


# --- 4. a burst for one address ----------------------------------------------------------


def scenario_burst(
    report: Report, args: argparse.Namespace, server: Server, sink: Sink, db: Database, data: Data
) -> None:
    from limits import parse_many

    from portal.config import DEFAULTS

    total, clients, limit_s = 500, 16, 60.0
    name = f"4. A burst of {total} sign-in requests for one address"
    report.heading(name)
    address = "burst@acme.com"
    budget = min(item.amount for item in parse_many(DEFAULTS["SIGNIN_LIMIT_PER_ADDRESS"]))
    pid = data.public_id
    before = sink.count_to()
    mark = db.last_audit_id()
    todo = iter(range(total))
    todo_lock = threading.Lock()
    posts: list[Answer] = []
    deadline = time.monotonic() + limit_s

    def client() -> None:
        while time.monotonic() < deadline:
            with todo_lock:
                if next(todo, None) is None:
                    return
            page, post = ask_for_link(server.port, pid, address)
            posts.append(post if post is not None else page)

    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=limit_s + HTTP_TIMEOUT + 5)
    elapsed = time.monotonic() - started
    report.info(
        f"{len(posts)} sign-in requests (page + form, each from its own IP) in {elapsed:.1f} s "
        f"with {clients} clients: {statuses(posts)}"
    )
    first = masked(posts[0].body, address) if posts else ""
    same = sum(1 for a in posts if a.status == 200 and masked(a.body, address) == first)
    report.check(
        name,
        len(posts) == total and same == total,
        f"all {total} answered 200 with the same page: {same}",
    )
    drained = wait_drained(db, sink, 30)
    sent = (sink.count_to() - before)[address]
    outcomes = Counter(r[2] for r in db.audit(mark) if r[3] == address and r[1] == "signin.request")
    report.check(
        name,
        drained is not None and 1 <= sent <= budget,
        f"at most the per-address budget ({DEFAULTS['SIGNIN_LIMIT_PER_ADDRESS']!r}: {budget}) "
        f"of emails went out: {sent}; requests queued {outcomes['queued']}, throttled "
        f"{outcomes['throttled']}",
    )


# --- 5. the floods of issue 14 -----------------------------------------------------------


def flood(
    port: int, public_id: str, asks: list[tuple[str, str]], clients: int = 16
) -> list[Answer]:
    """Every (address, client IP) asked for once, `clients` at a time; the form answers."""
    todo = iter(asks)
    lock = threading.Lock()
    answers: list[Answer] = []

    def client() -> None:
        while True:
            with lock:
                ask = next(todo, None)
            if ask is None:
                return
            page, post = ask_for_link(port, public_id, ask[0], ask[1])
            answers.append(post if post is not None else page)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


def scenario_floods(
    report: Report, server: Server, redis: OwnRedis, sink: Sink, db: Database, data: Data
) -> Server:
    """Returns the server now running (restarted with the default budgets)."""
    from portal.config import DEFAULTS

    name = "5. Floods that used to stop everyone's sign-in email"
    report.heading(name)
    server.stop()
    env = {k: v for k, v in server.env.items() if k not in RAISED_BUDGETS}
    server = Server(server.folder, env)
    with socket.create_connection(("127.0.0.1", redis.port), 2) as conn:
        conn.sendall(b"FLUSHDB\r\n")  # the budgets the scenarios above spent
        conn.recv(16)
    server.start()
    report.info(
        f"restarted with the default budgets: per domain {DEFAULTS['SIGNIN_LIMIT_PER_DOMAIN']!r}"
        f", global {DEFAULTS['SIGNIN_LIMIT_GLOBAL']!r}, per client "
        f"{DEFAULTS['SIGNIN_LIMIT_PER_IP']!r}; {data.customer_email} has signed in before"
    )
    pid, person = data.public_id, data.customer_email

    def admitted_person_gets_email(after: str, first_timer: str | None = None) -> None:
        before = sink.count_to()
        _page, post = ask_for_link(server.port, pid, person)
        if first_timer:
            ask_for_link(server.port, pid, first_timer)
        wait_drained(db, sink, 30)
        got = (sink.count_to() - before)[person]
        report.check(
            name,
            post is not None and post.status == 200 and got == 1,
            f"after {after}, {person} asks and gets {got} email",
        )
        if first_timer:
            got = (sink.count_to() - before)[first_timer]
            report.check(
                name,
                got == 1,
                f"and {first_timer}, a first sign-in (domain and global budgets), gets {got}",
            )

    started = time.monotonic()
    asks = [(f"user{i}@nowhere{i % 7}.example", f"10.200.0.{i % 30 + 1}") for i in range(300)]
    before = sink.count_to()
    answers = flood(server.port, pid, asks)
    wait_drained(db, sink, 60)
    report.info(
        f"global flood: {len(answers)} requests from 30 IPs for domains without access in "
        f"{time.monotonic() - started:.1f} s: {statuses(answers)}; "
        f"{sum((sink.count_to() - before).values())} emails sent"
    )
    admitted_person_gets_email("the global flood", "first-after-global@acme.com")

    started = time.monotonic()
    asks = [(f"invented{i}@acme.com", f"10.201.0.{i % 3 + 1}") for i in range(30)]
    before = sink.count_to()
    answers = flood(server.port, pid, asks)
    wait_drained(db, sink, 60)
    invented = sum(n for a, n in (sink.count_to() - before).items() if a.startswith("invented"))
    report.info(
        f"domain flood: {len(answers)} requests from 3 IPs for invented addresses at acme.com "
        f"(a domain rule: they are admitted) in {time.monotonic() - started:.1f} s: "
        f"{statuses(answers)}; {invented} emails to them (the domain budget, less one)"
    )
    admitted_person_gets_email("the domain flood")

    started = time.monotonic()
    asks = [(f"v6user{i}@nowhere.example", f"2001:db8:77:1::{i + 1:x}") for i in range(100)]
    mark = db.last_audit_id()
    answers = flood(server.port, pid, asks)
    queued = sum(1 for r in db.audit(mark) if r[1] == "signin.request" and r[2] == "queued")
    report.check(
        name,
        queued <= 10,
        f"IPv6 flood: {len(answers)} requests from 100 addresses of one /64 in "
        f"{time.monotonic() - started:.1f} s: {statuses(answers)}; {queued} stored "
        f"(the per-client budget, 10)",
    )
    admitted_person_gets_email("the IPv6 flood")
    return server


# --- main -------------------------------------------------------------------------------


def postgres_database(url: str) -> tuple[str, Callable[[], None]]:
    """A database of our own on that server, and how to drop it."""
    from sqlalchemy import make_url, text

    from portal.db import make_engine

    name = f"portal_resilience_{os.getpid()}_{secrets.token_hex(3)}"
    server = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        wait_for(pg_ready, 30, 0.2)
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()

    return make_url(url).set(database=name).render_as_string(hide_password=False), drop


def default_pg_restart() -> str:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    version = versions[-1] if versions else "15"
    return f"pg_ctlcluster --skip-systemctl-redirect {version} main restart"


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "_sink":
        run_sink(int(sys.argv[2]), sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a PostgreSQL server to make a database on")
    parser.add_argument("--smtp-outage", type=float, default=60.0, help="seconds (60)")
    parser.add_argument("--quick", action="store_true", help="shorter: a 10 s SMTP outage")
    parser.add_argument("--pg-restart", default=default_pg_restart(), help="restart command")
    parser.add_argument("--only", default="1,2,3,4,5", help="scenarios to run, e.g. 2,4")
    args = parser.parse_args()
    if args.quick and "--smtp-outage" not in sys.argv:
        args.smtp_outage = 10.0
    only = {int(n) for n in args.only.split(",")}

    folder = Path(tempfile.mkdtemp(prefix="portal-resilience-"))
    report = Report()
    with contextlib.ExitStack() as cleanup:
        if args.database_url:
            from sqlalchemy import make_url

            server_url = make_url(args.database_url)
            PG_SERVER.update(host=server_url.host or "127.0.0.1", port=str(server_url.port or 5432))
            database_url, drop = postgres_database(args.database_url)
            cleanup.callback(drop)
        else:
            database_url = f"sqlite:///{folder / 'portal.db'}"
        redis = OwnRedis(folder)
        redis.start()
        cleanup.callback(redis.stop)
        sink = Sink(folder)
        sink.start()
        cleanup.callback(sink.stop)
        secret = secrets.token_urlsafe(36)  # 48 characters
        config = {
            "DATABASE_URL": database_url,
            "SECRET_KEY": secret,
            "PORTAL_BASE_URL": BASE_URL,
            "RATELIMIT_STORAGE_URI": redis.url,
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(sink.port),
            "MAIL_TIMEOUT": "5",
            "PROXY_FIX_X_FOR": "1",
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "FLASK_"))}
        env |= {f"PORTAL_{k}": v for k, v in config.items()} | RAISED_BUDGETS
        env["PYTHONUNBUFFERED"] = "1"
        server = Server(folder, env)
        server.flask("db", "upgrade")
        app, data = build_data(
            config
            | {"MAIL_PORT": sink.port, "PROXY_FIX_X_FOR": 1}  # type: ignore[dict-item]
            | {k.removeprefix("PORTAL_"): v for k, v in RAISED_BUDGETS.items()}
        )
        db = Database(app, data.bill_group_id)
        cleanup.callback(db.dispose)
        server.start()
        cleanup.callback(server.stop)
        backend = "PostgreSQL" if args.database_url else "SQLite"
        print(
            f"backend: {backend}; gunicorn on 127.0.0.1:{server.port} (gunicorn.conf.py "
            f"workers, production settings, Host {HOST}, PROXY_FIX_X_FOR=1) and a flask worker; "
            f"SMTP sink on {sink.port}; redis-server on {redis.port}; per-domain and global "
            f"sign-in budgets raised, per-address and per-IP at their defaults; logs in {folder}",
            flush=True,
        )
        scenarios: dict[int, Callable[[], None]] = {
            1: lambda: scenario_postgres(report, args, server, sink, db, data),
            2: lambda: scenario_smtp(report, args, server, sink, db, data),
            3: lambda: scenario_redis(report, server, redis, sink, db, data),
            4: lambda: scenario_burst(report, args, server, sink, db, data),
        }
        for number, run in scenarios.items():
            if number in only:
                run()
        if 5 in only:  # last: it restarts the app with other budgets
            restarted = scenario_floods(report, server, redis, sink, db, data)
            cleanup.callback(restarted.stop)
        with app.app_context():  # type: ignore[attr-defined]
            from portal import db as portal_db

            portal_db.engine().dispose()
    failed = report.failed
    passed = sum(1 for _s, _t, ok in report.results if ok)
    skipped = sum(1 for _s, _t, ok in report.results if ok is None)
    print(f"\n{passed} checks passed, {failed} failed, {skipped} skipped")
    if failed:
        print(f"logs kept in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
