"""Browser tests: the real app under gunicorn, a real SMTP server, Debian's Chromium.

One server for the whole session (tests/e2e only starts it when an e2e test runs):

- a fresh SQLite database in a temporary folder, migrated with `flask db upgrade` and
  filled with `flask demo`, whose printed output gives the portal links and addresses;
- gunicorn on a free loopback port with ONE worker process (and 4 threads): the in-process
  sign-in worker thread and the memory:// rate-limit storage live in that process, so
  every request sees the same ones;
- mail over SMTP to aiosmtpd on another free loopback port (tests.conftest.smtp_server);
  tests read what a person would read: the plain-text part of the email.

FLASK_DEBUG=1 is deliberate: it is "local development", where the session cookie is sent
over plain http (no Secure flag, no __Host- prefix) and the sandbox payment gateway is
allowed. The base URL is http://127.0.0.1:<port>, which Chromium treats as a secure
context, so the clipboard API works too.

Chromium is Debian's (/usr/bin/chromium). Without it the e2e tests skip with a reason,
except under CI (the CI environment variable is set, as .ci/run does), where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import Inbox, free_port
from tests.e2e.nu import Batch

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
FAILURES = ARTIFACTS / "e2e-failures"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"

DESKTOP = {"width": 1280, "height": 800}
MOBILE = {"width": 375, "height": 800}

# Every wait is bounded. Actions and assertions: 10 s; page loads: 15 s; email: 20 s.
ACTION_TIMEOUT_MS = 10_000
NAVIGATION_TIMEOUT_MS = 15_000
EMAIL_TIMEOUT_S = 20.0
SERVER_START_TIMEOUT_S = 40.0

expect.set_options(timeout=ACTION_TIMEOUT_MS)

# Budgets far above anything the suite spends, so that no test trips a rate limit
# (they are tested in tests/portal with the test client). Values are "N per period".
GENEROUS_LIMITS = {
    "PORTAL_SECRET_ENDPOINT_LIMIT": "10000 per minute",
    "PORTAL_SIGNIN_LIMIT_PER_ADDRESS": "1000 per 15 minutes",
    "PORTAL_SIGNIN_LIMIT_PER_DOMAIN": "1000 per 15 minutes",
    "PORTAL_SIGNIN_LIMIT_PER_IP": "1000 per 15 minutes",
    "PORTAL_SIGNIN_LIMIT_GLOBAL": "10000 per 15 minutes",
    "PORTAL_CODE_FAILURE_LIMIT_PER_ADDRESS": "1000 per day",
    # Notices are merged over a window (tests/portal/test_notices.py): here, sent at once.
    "PORTAL_NOTICE_WINDOW_MINUTES": "0",
}


def require(path: str | Path, what: str, how: str) -> None:
    """Fail loudly under CI when a prerequisite is missing; skip with the reason locally."""
    if Path(path).exists():
        return
    message = f"{what} not found at {path}: {how}"
    if os.environ.get("CI"):
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message)


def require_chromium() -> None:
    require(CHROMIUM, "Chromium", "apt-get install -y chromium (CI installs it)")


# --- the server ---------------------------------------------------------------------


@dataclass(frozen=True)
class DemoGroup:
    account: str
    name: str
    path: str  # /p/<public id>
    address: str  # an address the demo says has access
    available: bool

    @property
    def public_id(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class Portal:
    base_url: str
    groups: dict[str, DemoGroup]
    staff_email: str
    staff_password: str
    inbox: Inbox
    log: Path

    def url(self, path: str) -> str:
        return self.base_url + path

    def link(self, group: str) -> str:
        return self.url(self.groups[group].path)

    # Mail: what arrived at an address, and waiting (bounded) for the next message.

    def mail_count(self, address: str) -> int:
        return len(self.inbox.to(address))

    def next_email(
        self, address: str, after: int, subject: str = "", timeout: float = EMAIL_TIMEOUT_S
    ) -> EmailMessage:
        """The first message to `address`, beyond the `after` already there, whose subject
        contains `subject`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.inbox.to(address)[after:]:
                if subject in str(message["Subject"]):
                    return message
            time.sleep(0.1)
        raise AssertionError(
            f"no email to {address} within {timeout:.0f} s "
            f"(the inbox has {len(self.inbox.messages)} messages in all); "
            f"server log tail:\n{log_tail(self.log)}"
        )

    def no_email(self, address: str, after: int, timeout: float) -> None:
        """Wait `timeout` seconds and check nothing beyond `after` arrived for `address`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.mail_count(address) == after, f"an email reached {address}"
            time.sleep(0.1)
        assert self.mail_count(address) == after, f"an email reached {address}"


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


GROUP_RE = re.compile(
    r"^(?P<account>.+?) — (?P<name>.+?)(?P<state>  \(not available: [^)]*\))?\n"
    r"  portal link:\s+(?P<link>\S+)\n"
    r"  sign in as:\s+(?P<address>\S+)$",
    re.MULTILINE,
)
STAFF_RE = re.compile(r"^Staff sign-in: (?P<url>\S+)\s+(?P<email>\S+) / (?P<password>\S+)$", re.M)


def parse_demo(output: str, base_url: str) -> tuple[dict[str, DemoGroup], str, str]:
    groups = {}
    for match in GROUP_RE.finditer(output):
        link = match["link"]
        assert link.startswith(base_url + "/p/"), f"demo link {link} is not under {base_url}"
        groups[match["name"]] = DemoGroup(
            account=match["account"],
            name=match["name"],
            path=link.removeprefix(base_url),
            address=match["address"],
            available=not match["state"],
        )
    staff = STAFF_RE.search(output)
    assert groups and staff, f"could not read the demo's output:\n{output}"
    return groups, staff["email"], staff["password"]


def server_env(database_url: str, port: int, smtp_port: int) -> dict[str, str]:
    # Nothing from the caller's PORTAL_* or FLASK_* settings (PORTAL_CONFIG, say) leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "FLASK_"))}
    env.update(
        {
            "PORTAL_DATABASE_URL": database_url,
            "PORTAL_SECRET_KEY": "e2e-secret-key-" + "k" * 25,  # 40 characters
            "PORTAL_BASE_URL": f"http://127.0.0.1:{port}",
            "PORTAL_MAIL_SERVER": "127.0.0.1",
            "PORTAL_MAIL_PORT": str(smtp_port),
            "PORTAL_MAIL_TIMEOUT": "5",
            # Debug mode would print email to the log; this suite reads it from SMTP.
            "PORTAL_MAIL_TRANSPORT": "smtp",
            # The sign-in worker as a thread of the (single) gunicorn worker process.
            "PORTAL_WORKER_IN_PROCESS": "true",
            # Local development: http cookies without Secure, the sandbox gateway.
            "FLASK_DEBUG": "1",
            "PYTHONUNBUFFERED": "1",
            **GENEROUS_LIMITS,
        }
    )
    return env


def run_flask(args: list[str], env: dict[str, str], log: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    with log.open("a") as out:
        out.write(f"$ flask {' '.join(args)}\n{result.stdout}{result.stderr}\n")
    if result.returncode:
        pytest.fail(
            f"flask {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}",
            pytrace=False,
        )
    return result.stdout


# Straight to the loopback server, whatever HTTP_PROXY says.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PortTaken(RuntimeError):
    """Another process bound the port between free_port() and gunicorn."""


def healthy(base_url: str) -> bool:
    try:
        with DIRECT.open(base_url + "/healthz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM gunicorn (it stops its worker gracefully), then SIGKILL its process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def start_gunicorn(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    base_url = f"http://127.0.0.1:{port}"
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "wsgi:app",
                "--bind",
                f"127.0.0.1:{port}",
                # One worker process: the sign-in worker thread and the memory://
                # rate-limit storage are per process, so every request must reach this one.
                "--workers",
                "1",
                "--threads",
                "4",
                "--timeout",
                "60",
                "--graceful-timeout",
                "5",
            ],
            cwd=ROOT,  # gunicorn.conf.py: the redacting access log
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown can end it all
        )
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if healthy(base_url):
            return process
        time.sleep(0.2)
    stop(process)
    with log.open("rb") as written:
        written.seek(start)
        output = written.read().decode(errors="replace")
    if "in use" in output.lower():
        raise PortTaken(port)
    raise RuntimeError(f"gunicorn did not become healthy on {base_url}:\n{log_tail(log)}")


@pytest.fixture(scope="session")
def portal(tmp_path_factory, smtp_server) -> Iterator[Portal]:
    """The app under gunicorn with the demo data, mailing the session's SMTP inbox."""
    require_chromium()
    inbox, smtp_port = smtp_server
    folder = tmp_path_factory.mktemp("e2e")
    log = folder / "server.log"
    database_url = f"sqlite:///{folder / 'portal.db'}"
    port = free_port()
    env = server_env(database_url, port, smtp_port)
    run_flask(["db", "upgrade"], env, log)
    groups, staff_email, staff_password = parse_demo(
        run_flask(["demo"], env, log), env["PORTAL_BASE_URL"]
    )
    process = None
    for attempt in range(3):  # another process may take the free port before gunicorn does
        try:
            process = start_gunicorn(env, port, log)
            break
        except PortTaken:
            if attempt == 2:
                raise
            port = free_port()
            env = server_env(database_url, port, smtp_port)
    assert process is not None
    try:
        yield Portal(
            base_url=env["PORTAL_BASE_URL"],
            groups=groups,
            staff_email=staff_email,
            staff_password=staff_password,
            inbox=inbox,
            log=log,
        )
    finally:
        stop(process)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log, ARTIFACTS / "e2e-server.log")


@pytest.fixture(scope="session")
def nu_batch() -> Batch:
    """The HTML of every page and email the tests collect, for one Nu HTML Checker run
    (tests/e2e/nu.py; the last test of test_accessibility.py runs it)."""
    return Batch(ARTIFACTS / "html")


# --- the browser --------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.rmtree(FAILURES, ignore_errors=True)  # only this run's failures
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    # Lets fixtures see whether the test failed (for failure screenshots).
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


NewContext = Callable[..., BrowserContext]


@pytest.fixture
def new_context(browser: Browser, portal: Portal, request) -> Iterator[NewContext]:
    """new_context(**options) -> a fresh browser context (its own cookies), 1280 wide by
    default, with bounded timeouts. All are closed after the test; if the test failed,
    each open page is first saved to artifacts/e2e-failures/."""
    contexts: list[BrowserContext] = []

    def make(**options) -> BrowserContext:
        options.setdefault("viewport", DESKTOP)
        context = browser.new_context(base_url=portal.base_url, **options)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
        contexts.append(context)
        return context

    try:
        yield make
    finally:
        report = getattr(request.node, "rep_call", None)
        failed = report is not None and report.failed
        for number, context in enumerate(contexts):
            if failed:
                FAILURES.mkdir(parents=True, exist_ok=True)
                for index, page in enumerate(context.pages):
                    name = f"{request.node.name}-{number}-{index}.png"
                    try:
                        page.screenshot(path=str(FAILURES / name), full_page=True, timeout=5_000)
                    except Exception as exc:  # a screenshot must not hide the failure
                        print(f"could not save {name}: {exc}")
            context.close()


# --- what a person does -------------------------------------------------------------

SIGN_IN_SUBJECT = "Your sign-in"
LINK_RE = re.compile(r"https?://\S+/verify/\S+")
CODE_RE = re.compile(r"\b(\d{4}-\d{4})\b")


def link_and_code(message: EmailMessage) -> tuple[str, str]:
    """The sign-in link and code, read from the plain-text part as a person reads them."""
    text = message.get_body(preferencelist=("plain",)).get_content()
    link, code = LINK_RE.search(text), CODE_RE.search(text)
    assert link and code, f"no link or code in:\n{text}"
    return link.group(0), code.group(1)


def ask_for_link(page: Page, portal: Portal, group: str, address: str) -> int:
    """Open the portal link, enter the address, press the button; returns how many
    emails the address had before, for next_email."""
    before = portal.mail_count(address)
    page.goto(portal.link(group))
    expect(page.get_by_role("heading", name="Sign in to your billing portal")).to_be_visible()
    page.get_by_label("Work email address").fill(address)
    page.get_by_role("button", name="Email me a sign-in link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    return before


def sign_in(page: Page, portal: Portal, group: str, address: str) -> None:
    """The whole customer sign-in: ask, open the emailed link here, press Continue."""
    before = ask_for_link(page, portal, group, address)
    link, _code = link_and_code(portal.next_email(address, before, SIGN_IN_SUBJECT))
    page.goto(link)
    expect(page.get_by_role("heading", name=f"Sign in to {group}")).to_be_visible()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()


def portal_nav(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Portal").get_by_role("link", name=name).click()


def staff_sign_in(page: Page, portal: Portal) -> None:
    page.goto(portal.url("/admin/"))
    page.wait_for_url(re.compile(r"/admin/sign-in"))
    page.get_by_label("Email address").fill(portal.staff_email)
    page.get_by_label("Password").fill(portal.staff_password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Billing portal staff")).to_be_visible()


def open_bill_group(page: Page, account: str, group: str) -> None:
    """From anywhere in /admin: Accounts, the account, the bill group."""
    page.get_by_role("navigation", name="Staff").get_by_role("link", name="Accounts").click()
    page.get_by_role("link", name=account, exact=True).click()
    page.get_by_role("link", name=group, exact=True).click()
    expect(page.get_by_role("heading", name=group, level=1)).to_be_visible()
