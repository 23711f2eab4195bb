"""Stripe mode in Chromium, against localstripe: a portal of its own (gunicorn, the demo
data, PAYMENT_GATEWAY=stripe, STRIPE_API_BASE and STRIPE_JS_URL on localstripe). The
add-card page loads localstripe's stand-in Stripe.js, mounts its card Element, confirms
the SetupIntent and posts only the PaymentMethod id. Paying: ticked invoices paid with a
saved card (a PaymentIntent localstripe holds, the invoices paid, the history's row); a
3-D Secure card (Stripe's redirect_to_url, to the launcher's stand-in for Stripe's
hosted check and back to the portal's return URL), passed and failed; a declined card.

The journeys run with the app's Content-Security-Policy on (so they prove the policy
admits localstripe's script and API, that nothing inline is needed, and that no form's
POST is redirected where form-action refuses it); the tour (the add-card and paying
pages, shots at 1280 and 375 px, axe, the Nu HTML Checker) with bypass_csp, as
test_accessibility.py's, to inject axe. axe skips #card-element: inside it are the
stand-in's own unlabelled inputs, where Stripe renders its card Element in an iframe of
its own (Stripe's accessibility, not ours; only a Stripe test-mode account can show
it), and the tour leaves out the 3-D Secure check, which is Stripe's page."""

from __future__ import annotations

import json
import re
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
from tests.stripe_helpers import DECLINED_ON_CHARGE, GOOD, THREE_D_SECURE, stripe_settings

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


# --- paying through Stripe (issue 17): each test signs in with an address of its own
# (acme.com admits them all) and pays from the group's three open invoices: two ticked
# here, part payments (oldest first) in the others, so each leaves some to the next. ---


def watch_csp(page: Page) -> list[str]:
    """What the browser refused under the Content-Security-Policy (console messages)."""
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    return refused


def add_card_from_pay_form(page: Page, number: str, three_d_secure: bool = False) -> None:
    """From the pay form: "Add a new card", the card through Stripe.js, and back; a
    3-D Secure card answers the stand-in Stripe.js's check of the SetupIntent."""
    page.get_by_role("link", name="Add a new card").click()
    expect(page.locator("#card-element input[placeholder=number]")).to_be_visible()
    fill_card(page, number)
    page.get_by_role("button", name="Add card").click()
    if three_d_secure:
        page.get_by_role("button", name="Complete authentication").click()
    expect(page.get_by_role("heading", name="Pay", exact=True)).to_be_visible()
    expect(page.get_by_text(f"Visa ending {number[-4:]} has been added.")).to_be_visible()


def choose_newest(page: Page, last4: str) -> None:
    # The demo's own "Visa ending 4242" (a sandbox token) comes first: the newest is ours.
    page.get_by_role("radio", name=f"Visa ending {last4}", exact=True).last.check()


def review_and_pay(page: Page) -> str:
    """From the filled pay form to the review page's button pressed: the amount paid."""
    page.get_by_role("button", name="Review payment").click()
    expect(page.get_by_role("heading", name="Review your payment")).to_be_visible()
    button = page.get_by_role("button", name=re.compile(r"^Pay \S*\d"))
    amount = button.inner_text().removeprefix("Pay ")
    button.click()
    return amount


def continue_to_check(page: Page) -> None:
    expect(page.get_by_role("heading", name="Security check needed")).to_be_visible()
    page.get_by_role("link", name="Continue to the security check").click()


def balances(page: Page) -> list[str]:
    """The invoices' balances in the table of the page (pay form: "Balance"; outcome:
    "Balance now")."""
    cells = page.locator("main table tbody td[data-label^=Balance]")
    return [text.strip() for text in cells.all_inner_texts()]


def test_a_customer_pays_two_invoices_through_stripe(
    browser: Browser,
    stripe_portal: Portal,
    contexts: list[BrowserContext],
    localstripe: LocalStripe,
) -> None:
    page = new_page(browser, stripe_portal, contexts)  # the CSP on
    refused = watch_csp(page)
    sign_in(page, stripe_portal, GROUP, "payer@acme.com")
    portal_nav(page, "Invoices")
    boxes = page.get_by_role("checkbox", name=re.compile(r"^Pay invoice "))
    assert boxes.count() >= 3  # two for this test, the others for the next ones
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.get_by_role("button", name="Pay selected").click()
    expect(page.get_by_role("heading", name="Pay", exact=True)).to_be_visible()
    numbers = page.locator("main table tbody th").all_inner_texts()
    assert len(numbers) == 2
    add_card_from_pay_form(page, GOOD)
    choose_newest(page, "4242")
    amount = review_and_pay(page)
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible()
    expect(page.get_by_role("status").first).to_contain_text(
        f"{amount} was paid with Visa ending 4242"
    )
    expect(page.locator("main table tbody tr")).to_have_count(2)
    expect(page.locator("main table .badge-paid")).to_have_count(2)
    assert page.locator("main table tbody th").all_inner_texts() == numbers

    portal_nav(page, "Invoices")
    for number in numbers:
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=number))
        expect(row.locator(".badge")).to_have_text("Paid")

    portal_nav(page, "Payments")
    row = page.locator("main table tbody tr").first
    expect(row).to_contain_text(amount)
    expect(row).to_contain_text("Visa ending 4242")
    expect(row.locator("td[data-label=Status]")).to_have_text("Succeeded")
    for number in numbers:
        expect(row.get_by_role("link", name=number)).to_be_visible()
    # The reference is Stripe's: a PaymentIntent localstripe holds, succeeded, that amount.
    reference = row.locator("td[data-label=Reference]").inner_text().strip()
    assert reference.startswith("pi_"), reference
    intent = localstripe.get(f"/v1/payment_intents/{reference}")
    assert intent["status"] == "succeeded" and intent["currency"] == "gbp"
    assert amount.endswith(f"{intent['amount'] // 100:,}.{intent['amount'] % 100:02d}")
    assert not refused, refused


def test_3d_secure_goes_to_the_card_s_check_and_back(
    browser: Browser,
    stripe_portal: Portal,
    contexts: list[BrowserContext],
    localstripe: LocalStripe,
) -> None:
    """Stripe's 3-D Secure redirect: the confirm lands on the outcome page ("Security
    check needed": a form's POST may not be redirected off the portal under the CSP's
    form-action 'self'), whose link goes to the card's check (the launcher's stand-in
    for Stripe's hosted page, on localstripe's origin), which sends the browser back to
    the portal's return URL; the portal asks Stripe and shows the outcome. Then once
    more with the check failed: declined, nothing applied."""
    page = new_page(browser, stripe_portal, contexts)  # the CSP on
    refused = watch_csp(page)
    sign_in(page, stripe_portal, GROUP, "threeds@acme.com")
    page.get_by_role("button", name="Pay outstanding balance").click()
    expect(page.get_by_role("heading", name="Pay", exact=True)).to_be_visible()
    add_card_from_pay_form(page, THREE_D_SECURE, three_d_secure=True)
    check = re.compile(re.escape(localstripe.url + "/hooks.stripe.com/3d_secure/pi_"))

    choose_newest(page, "3184")
    page.get_by_label("Amount to pay").fill("5.00")
    assert review_and_pay(page) == "£5.00"
    continue_to_check(page)
    page.wait_for_url(check)
    expect(page.get_by_role("heading", name="3D Secure test page")).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # the stand-in's page, not ours: no axe
    page.screenshot(path=str(SCREENSHOTS / "stripe-3ds-check-1280.png"), animations="disabled")
    page.get_by_role("button", name="Complete authentication").click()
    page.wait_for_url(re.compile(r"/pay/attempts/\d+$"))
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible()
    expect(page.get_by_role("status").first).to_contain_text("£5.00 was paid")
    before = balances(page)

    page.get_by_role("link", name="Payment history").click()
    row = page.locator("main table tbody tr").first
    expect(row).to_contain_text("£5.00")
    expect(row.locator("td[data-label=Status]")).to_have_text("Succeeded")

    portal_nav(page, "Overview")
    page.get_by_role("button", name="Pay outstanding balance").click()
    choose_newest(page, "3184")
    page.get_by_label("Amount to pay").fill("5.00")
    review_and_pay(page)
    continue_to_check(page)
    page.wait_for_url(check)
    page.get_by_role("button", name="Fail authentication").click()
    expect(page.get_by_role("heading", name="Payment declined")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_text(
        "The provided PaymentMethod has failed authentication. "
        "Nothing was charged and nothing was applied to your invoices."
    )
    # What the first payment left is what is left.
    assert balances(page)[: len(before)] == before
    assert not refused, refused


def test_a_declined_charge_says_why_and_applies_nothing(
    browser: Browser, stripe_portal: Portal, contexts: list[BrowserContext]
) -> None:
    page = new_page(browser, stripe_portal, contexts)  # the CSP on
    refused = watch_csp(page)
    sign_in(page, stripe_portal, GROUP, "declined@acme.com")
    portal_nav(page, "Invoices")
    row = page.locator("main table tbody tr").filter(has=page.get_by_role("checkbox")).first
    row.get_by_role("link").first.click()
    page.get_by_role("button", name="Pay this invoice").click()
    expect(page.get_by_role("heading", name="Pay", exact=True)).to_be_visible()
    add_card_from_pay_form(page, DECLINED_ON_CHARGE)  # saves; every charge declined
    before = balances(page)
    choose_newest(page, "0341")
    review_and_pay(page)
    expect(page.get_by_role("heading", name="Payment declined")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_text(
        "Your card was declined. Nothing was charged and nothing was applied to your invoices."
    )
    assert balances(page) == before
    expect(page.locator("main table .badge-paid")).to_have_count(0)
    page.get_by_role("link", name="Try another payment method").click()
    expect(page.get_by_role("heading", name="Pay", exact=True)).to_be_visible()
    assert balances(page) == before

    portal_nav(page, "Payments")
    failed = page.locator("main table tbody tr").first
    expect(failed.locator("td[data-label=Status]")).to_contain_text("Failed")
    expect(failed.locator("td[data-label=Status]")).to_contain_text("Your card was declined.")
    expect(failed.locator("td[data-label=Invoices]")).to_have_text("—")
    expect(failed.get_by_role("link", name=re.compile("^Receipt"))).to_have_count(0)
    assert not refused, refused


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

    # Paying in Stripe mode (the pay form and the history are the sandbox's pages, toured
    # in test_accessibility.py): the review, a payment received, one declined, one
    # waiting for its 3-D Secure check.
    portal_nav(page, "Overview")
    page.get_by_role("button", name="Pay outstanding balance").click()
    expect(page.get_by_role("heading", name="Pay", exact=True)).to_be_visible()
    choose_newest(page, "4242")
    page.get_by_label("Amount to pay").fill("1.00")
    page.get_by_role("button", name="Review payment").click()
    expect(page.get_by_role("heading", name="Review your payment")).to_be_visible()
    tour("pay-review")
    page.get_by_role("button", name="Pay £1.00").click()
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible()
    tour("pay-received")
    portal_nav(page, "Overview")
    page.get_by_role("button", name="Pay outstanding balance").click()
    add_card_from_pay_form(page, DECLINED_ON_CHARGE)
    choose_newest(page, "0341")
    page.get_by_label("Amount to pay").fill("1.00")
    review_and_pay(page)
    expect(page.get_by_role("heading", name="Payment declined")).to_be_visible()
    tour("pay-declined")
    page.get_by_role("link", name="Try another payment method").click()
    add_card_from_pay_form(page, THREE_D_SECURE, three_d_secure=True)
    choose_newest(page, "3184")
    page.get_by_label("Amount to pay").fill("1.00")
    review_and_pay(page)
    expect(page.get_by_role("heading", name="Security check needed")).to_be_visible()
    tour("pay-security-check")  # the check itself is Stripe's page (here, the stand-in)

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
