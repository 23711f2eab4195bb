"""The add-card page in Stripe mode, in Chromium, against localstripe: a portal of its
own (gunicorn, the demo data, PAYMENT_GATEWAY=stripe, STRIPE_API_BASE and STRIPE_JS_URL
on localstripe), whose page loads localstripe's stand-in Stripe.js, mounts its card
Element, confirms the SetupIntent and posts only the PaymentMethod id.

The journey runs with the app's Content-Security-Policy on (so it proves the policy
admits localstripe's script and API, and nothing inline is needed); the tour (shots at
1280 and 375 px, axe, the Nu HTML Checker) with bypass_csp, as test_accessibility.py's,
to inject axe. axe skips #card-element: inside it are the stand-in's own unlabelled
inputs, where Stripe renders its card Element in an iframe of its own (Stripe's
accessibility, not ours; only a Stripe test-mode account can show it)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Response, expect

from tests.e2e.conftest import (
    ACTION_TIMEOUT_MS,
    ARTIFACTS,
    AXE,
    DESKTOP,
    MOBILE,
    NAVIGATION_TIMEOUT_MS,
    SCREENSHOTS,
    Portal,
    PortTaken,
    free_port,
    parse_demo,
    portal_nav,
    require,
    require_chromium,
    run_flask,
    server_env,
    sign_in,
    start_gunicorn,
    stop,
)
from tests.e2e.nu import Batch, allowed_warnings
from tests.localstripe import LocalStripe
from tests.stripe_helpers import stripe_settings

pytestmark = pytest.mark.e2e

GROUP = "Acme UK operations"
AXE_RUN = """async () => {
  const results = await axe.run({ exclude: [["#card-element"]] }, { resultTypes: ["violations"] });
  return results.violations.map(v => ({
    id: v.id, impact: v.impact, targets: v.nodes.map(n => n.target.join(" ")),
  }));
}"""


def stripe_env(env: dict[str, str], localstripe: LocalStripe) -> dict[str, str]:
    return env | {f"PORTAL_{k}": str(v) for k, v in stripe_settings(localstripe).items()}


@pytest.fixture(scope="module")
def stripe_portal(tmp_path_factory, smtp_server, localstripe: LocalStripe) -> Iterator[Portal]:
    require_chromium()
    inbox, smtp_port = smtp_server
    folder = tmp_path_factory.mktemp("e2e-stripe")
    log = folder / "server.log"
    database_url = f"sqlite:///{folder / 'portal.db'}"
    port = free_port()
    env = stripe_env(server_env(database_url, port, smtp_port), localstripe)
    run_flask(["db", "upgrade"], env, log)
    groups, staff_email, staff_password = parse_demo(
        run_flask(["demo"], env, log), env["PORTAL_BASE_URL"]
    )
    process = None
    for attempt in range(3):
        try:
            process = start_gunicorn(env, port, log)
            break
        except PortTaken:
            if attempt == 2:
                raise
            port = free_port()
            env = stripe_env(server_env(database_url, port, smtp_port), localstripe)
    assert process is not None
    try:
        yield Portal(env["PORTAL_BASE_URL"], groups, staff_email, staff_password, inbox, log)
    finally:
        stop(process)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log, ARTIFACTS / "e2e-stripe-server.log")


@pytest.fixture
def contexts(browser: Browser, stripe_portal: Portal) -> Iterator[list[BrowserContext]]:
    made: list[BrowserContext] = []
    yield made
    for context in made:
        context.close()


def new_page(browser: Browser, portal: Portal, made: list[BrowserContext], **options) -> Page:
    context = browser.new_context(base_url=portal.base_url, viewport=DESKTOP, **options)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    made.append(context)
    return context.new_page()


def open_add_card(page: Page, portal: Portal) -> None:
    sign_in(page, portal, GROUP, portal.groups[GROUP].address)
    portal_nav(page, "Payment methods")
    page.get_by_role("link", name="Add a card").click()
    expect(page.get_by_role("heading", name="Add a card", level=1)).to_be_visible()
    # localstripe's stand-in Element: its inputs, placeholders as names, inside ours.
    expect(page.locator("#card-element input[placeholder=number]")).to_be_visible()


def fill_card(page: Page, number: str) -> None:
    element = page.locator("#card-element")
    element.locator("input[placeholder=number]").fill(number)
    element.locator("input[placeholder=exp_month]").fill("12")
    element.locator("input[placeholder=exp_year]").fill("31")
    element.locator("input[placeholder=cvc]").fill("123")
    element.locator("input[placeholder=postal_code]").fill("EC1A")


def test_a_card_is_saved_through_stripe_js(
    browser: Browser,
    stripe_portal: Portal,
    contexts: list[BrowserContext],
    localstripe: LocalStripe,
) -> None:
    page = new_page(browser, stripe_portal, contexts)  # the CSP on
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    posted: list[str] = []
    page.on(
        "request",
        lambda r: (
            posted.append(r.post_data or "")
            if r.method == "POST" and r.url.startswith(stripe_portal.base_url)
            else None
        ),
    )
    open_add_card(page, stripe_portal)
    page.get_by_label("Name on card (optional)").fill("Ann Example")
    fill_card(page, "4242424242424242")
    page.get_by_role("button", name="Add card").click()
    expect(page.get_by_text("Visa ending 4242 has been added.")).to_be_visible()
    expect(page.get_by_role("row", name="Visa ending 4242 12/31 Ann Example")).to_be_visible()
    assert not refused, refused
    # What reached the portal: the PaymentMethod id, never the card.
    [form] = [body for body in posted if "payment_method=" in body]
    assert "payment_method=pm_" in form and "4242424242424242" not in form
    assert "cvc" not in form and "exp_" not in form


def test_a_declined_card_is_told_in_the_page(
    browser: Browser, stripe_portal: Portal, contexts: list[BrowserContext]
) -> None:
    page = new_page(browser, stripe_portal, contexts)
    open_add_card(page, stripe_portal)
    fill_card(page, "4000000000000002")
    page.get_by_role("button", name="Add card").click()
    expect(page.get_by_role("alert")).to_have_text("Your card was declined.")
    expect(page.get_by_role("button", name="Add card")).to_be_enabled()  # try another


def test_the_stripe_pages_pass_axe_and_nu(
    browser: Browser, stripe_portal: Portal, contexts: list[BrowserContext]
) -> None:
    require(AXE, "axe-core", "run `npm ci` in the repository root (CI does)")
    batch = Batch(ARTIFACTS / "nu-stripe")
    page = new_page(browser, stripe_portal, contexts, bypass_csp=True)
    documents: dict[str, Response] = {}
    page.on(
        "response",
        lambda r: (
            documents.__setitem__(r.url, r)
            if r.request.resource_type == "document" and r.request.frame == page.main_frame
            else None
        ),
    )
    findings: dict[str, list[dict]] = {}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def tour(name: str, html: bool = True) -> None:
        page.wait_for_load_state("load")
        if html:
            batch.add(f"stripe-{name}", documents[page.url].body())
        for width, viewport in (("1280", DESKTOP), ("375", MOBILE)):
            page.set_viewport_size(viewport)
            shot = SCREENSHOTS / f"stripe-{name}-{width}.png"
            page.screenshot(path=str(shot), full_page=True, animations="disabled")
            if page.evaluate("typeof window.axe") == "undefined":
                page.add_script_tag(path=str(AXE))
            findings[f"{name} @{width}"] = page.evaluate(AXE_RUN)
        page.set_viewport_size(DESKTOP)

    open_add_card(page, stripe_portal)
    tour("add-card")
    fill_card(page, "4000000000000002")
    page.get_by_role("button", name="Add card").click()
    expect(page.get_by_role("alert")).to_have_text("Your card was declined.")
    tour("add-card-declined", html=False)  # the same document, the script's message shown
    fill_card(page, "4242424242424242")
    page.get_by_role("button", name="Add card").click()
    expect(page.get_by_text("Visa ending 4242 has been added.")).to_be_visible()
    tour("payment-methods")

    (ARTIFACTS / "axe-stripe.json").write_text(json.dumps(findings, indent=2))
    failing = [
        f"{f['impact']} {f['id']} {where}: {target}"
        for where, found in findings.items()
        for f in found
        if f["impact"] in ("serious", "critical")
        for target in f["targets"]
    ]
    assert not failing, "axe:\n" + "\n".join(failing)
    allowed = allowed_warnings()
    nu = [f for f in batch.check() if f.kind == "error" or f.message not in allowed]
    assert not nu, "Nu HTML Checker:\n" + "\n".join(map(str, nu))
