"""The customer pays through the pages, against the sandbox gateway: the pay buttons, the
pay form, the review page, the confirm (PRG), each outcome page, the 3-D Secure step and
back, the payment history with its CSV and receipt PDFs, and the receipt email."""

from __future__ import annotations

import datetime as dt
import io
import re
from urllib.parse import unquote

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from portal import payments
from portal.models import (
    BillGroup,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAttempt,
    PaymentStatus,
    SandboxCharge,
)
from portal.payments import GatewayUnavailable
from tests.admin.conftest import staff_client  # noqa: F401, F811  (the preview test)
from tests.conftest import csrf_token, run_worker
from tests.factories import TODAY, add_payment, make_bill_group, make_invoice, make_payment_method
from tests.portal.pages_helpers import ADDRESS, BILLING_EMAIL, csv_rows, flashes, url
from tests.settings import change_settings

pytestmark = pytest.mark.usefixtures("clock")

KEY_RE = re.compile(r'name="key" type="hidden" value="([^"]+)"')
AMOUNT_RE = re.compile(r'name="amount_minor" type="hidden" value="([^"]+)"')


@pytest.fixture
def bills(db, group):
    older = make_invoice(db, group, number="INV-OLD", issue_date=TODAY - dt.timedelta(days=40))
    newer = make_invoice(db, group, number="INV-NEW", lines=[("Support", "1", 5000, 2000)])
    paid = make_invoice(db, group, number="INV-PAID", status=InvoiceStatus.PAID)
    card = make_payment_method(db, group, gateway_token="sandbox_pm_good", is_default=True)
    db.commit()
    return {"older": older.id, "newer": newer.id, "paid": paid.id, "card": card.id}


def card(db, group: BillGroup, token: str) -> int:
    method = make_payment_method(db, group, gateway_token=token, last4="3184", brand="visa")
    db.commit()
    return method.id


def review(customer, group, *invoice_ids: int, **fields: str):
    """Open the pay form for these invoices, post it; returns the review page."""
    query = "&".join(f"invoice={i}" for i in invoice_ids)
    form = customer.get(url(group, "/pay" + (f"?{query}" if query else "")))
    assert form.status_code == 200, form.text
    data = {"csrf_token": csrf_token(form.text), "currency": group.currency, **fields}
    data.setdefault(
        "method",
        re.search(
            r'<input checked id="method-\d+" name="method" type="radio" value="(\d+)"', form.text
        )[1],
    )
    data["invoice"] = [str(i) for i in invoice_ids]
    posted = customer.post(url(group, "/pay"), data=data)
    assert posted.status_code == 303, posted.text
    page = customer.get(posted.headers["Location"])
    assert page.status_code == 200
    return page


def confirm_form(page_html: str) -> dict[str, str]:
    return {
        "csrf_token": csrf_token(page_html),
        "key": KEY_RE.search(page_html)[1],
        "amount_minor": AMOUNT_RE.search(page_html)[1],
    }


def pay(customer, group, page_html: str, **override: str):
    return customer.post(url(group, "/pay/confirm"), data=confirm_form(page_html) | override)


def charges(db) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(SandboxCharge)) or 0


def invoice_state(db, invoice_id: int) -> tuple[int, str]:
    db.expire_all()
    invoice = db.get(Invoice, invoice_id)
    return invoice.amount_paid_minor, invoice.status.value


# --- the buttons ----------------------------------------------------------------------------


def test_every_page_offers_its_way_to_pay(customer, group, bills):
    overview = customer.get(url(group, "/overview")).text
    assert "Pay outstanding balance" in overview
    listing = customer.get(url(group, "/invoices")).text
    assert "Pay selected" in listing
    boxes = re.findall(r'name="invoice" value="(\d+)"', listing)
    assert sorted(map(int, boxes)) == sorted([bills["older"], bills["newer"]])  # not the paid one
    assert "Pay this invoice" in customer.get(url(group, f"/invoices/{bills['older']}")).text
    assert "Pay this invoice" not in customer.get(url(group, f"/invoices/{bills['paid']}")).text
    nav = re.search(r'<nav class="portal-nav".*?</nav>', overview, re.S)[0]
    assert f'href="{url(group, "/payments")}"' in nav and ">Payments<" in nav


def test_the_pay_form_lists_the_chosen_invoices_with_the_default_method_chosen(
    customer, group, bills
):
    page = customer.get(url(group, f"/pay?invoice={bills['newer']}")).text
    assert "INV-NEW" in page and "INV-OLD" not in page
    assert "€60.00" in page
    assert re.search(rf'<input checked [^>]*value="{bills["card"]}"', page)
    link = re.search(r'href="([^"]*payment-methods/new[^"]*)"', page)[1]
    assert unquote(link.replace("&amp;", "&")).endswith(
        f"next=/p/{group.public_id}/pay?invoice={bills['newer']}"
    )


def test_add_a_new_card_comes_back_to_the_pay_form(customer, group, bills):
    back = f"/p/{group.public_id}/pay?invoice={bills['older']}"
    page = customer.get(url(group, f"/payment-methods/new?next={back}"))
    assert "Back to the payment" in page.text
    response = customer.post(
        url(group, f"/payment-methods/new?next={back}"),
        data={
            "csrf_token": csrf_token(page.text),
            "holder_name": "Ada",
            "number": "4242 4242 4242 4242",
            "exp_month": "12",
            "exp_year": "2030",
            "cvc": "123",
        },
    )
    assert response.status_code == 303 and response.headers["Location"] == back
    # Elsewhere than this portal: back to the payment methods instead.
    page = customer.get(url(group, "/payment-methods/new?next=https://evil.example/"))
    assert "Back to the payment" not in page.text


# --- paying ---------------------------------------------------------------------------------


def test_pay_two_invoices_once_however_often_the_button_is_pressed(
    app, db, customer, group, bills, smtp
):
    page = review(customer, group, bills["older"], bills["newer"])
    assert "Review your payment" in page.text
    assert "Pay €180.00" in page.text and "Visa ending 4242" in page.text
    assert page.text.index("INV-OLD") < page.text.index("INV-NEW")
    first = pay(customer, group, page.text)
    assert first.status_code == 303
    outcome = customer.get(first.headers["Location"])
    assert "Payment received" in outcome.text and "€180.00" in outcome.text
    assert invoice_state(db, bills["older"]) == (12000, "paid")
    assert invoice_state(db, bills["newer"]) == (6000, "paid")

    # Double click, back button and retried POST, reload: the same outcome, no new charge.
    again = pay(customer, group, page.text)
    assert again.status_code == 303 and again.headers["Location"] == first.headers["Location"]
    assert customer.get(first.headers["Location"]).status_code == 200
    back = customer.get(page.request.path)
    assert back.status_code == 303 and back.headers["Location"] == first.headers["Location"]
    assert charges(db) == 1
    assert db.scalar(select(func.count()).select_from(Payment)) == 1

    # The receipt: to the customer and to the billing contact, with the PDF.
    run_worker(app)
    for address in (ADDRESS, BILLING_EMAIL):
        [message] = smtp.to(address)
        assert "Receipt for your payment of €180.00" in message["Subject"]
        text = message.get_body(preferencelist=("plain",)).get_content()
        assert "INV-OLD" in text and "INV-NEW" in text and "€180.00" in text
        [attachment] = list(message.iter_attachments())
        assert attachment.get_content_type() == "application/pdf"
        pdf_text = PdfReader(io.BytesIO(attachment.get_content())).pages[0].extract_text()
        assert "Payment receipt" in pdf_text and "INV-OLD" in pdf_text and "€180.00" in pdf_text


def test_a_part_payment_from_the_amount_field(db, customer, group, bills):
    page = review(customer, group, amount="150.00")
    assert "Pay €150.00" in page.text
    pay(customer, group, page.text)
    assert invoice_state(db, bills["older"]) == (12000, "paid")
    assert invoice_state(db, bills["newer"]) == (3000, "open")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"amount": "180.01"}, "more than the balance"),
        ({"amount": "0.50"}, "at least €1.00"),
        ({"amount": "abc"}, "Enter an amount"),
        ({"amount": "1.234"}, "Enter an amount"),
        ({"currency": "USD"}, "in EUR, not USD"),
    ],
)
def test_a_bad_amount_or_currency_is_explained_and_nothing_is_made(
    db, customer, group, bills, fields, message
):
    form = customer.get(url(group, "/pay"))
    data = {"csrf_token": csrf_token(form.text), "currency": "EUR", "method": bills["card"]}
    response = customer.post(url(group, "/pay"), data=data | fields)
    assert response.status_code == 400
    assert message in response.text.replace("&#39;", "'")
    assert db.scalar(select(func.count()).select_from(PaymentAttempt)) == 0


def test_another_groups_invoice_or_a_paid_one_cannot_be_paid(db, customer, group, bills):
    other = make_bill_group(db)
    theirs = make_invoice(db, other)
    db.commit()
    form = customer.get(url(group, "/pay"))
    for invoice_id, message in ((theirs.id, "No such invoice"), (bills["paid"], "already paid")):
        data = {
            "csrf_token": csrf_token(form.text),
            "currency": "EUR",
            "method": bills["card"],
            "invoice": [str(invoice_id)],
        }
        response = customer.post(url(group, "/pay"), data=data)
        assert response.status_code == 400 and message in response.text
    assert db.scalar(select(func.count()).select_from(PaymentAttempt)) == 0


def test_a_tampered_amount_charges_nothing(db, customer, group, bills):
    page = review(customer, group)
    response = pay(customer, group, page.text, amount_minor="100")
    assert response.status_code == 303
    again = customer.get(response.headers["Location"])
    assert "does not match" in " ".join(flashes(again.text))
    assert charges(db) == 0


def test_a_stale_review_page_says_so_and_charges_nothing(app, db, customer, group, bills):
    page = review(customer, group)
    app.extensions["portal.clock"].advance(minutes=16)
    response = pay(customer, group, page.text)
    follow = customer.get(response.headers["Location"])
    assert "out of date" in " ".join(flashes(follow.text))
    assert charges(db) == 0


def test_another_groups_key_and_attempt_are_not_found(db, customer, group, bills):
    other = make_bill_group(db)
    make_invoice(db, other)
    method = make_payment_method(db, other)
    db.commit()

    attempt = PaymentAttempt(
        bill_group_id=other.id,
        key="theirs-" + "k" * 36,
        amount_minor=12000,
        currency="EUR",
        payment_method_id=method.id,
        created_by="x@other.example",
        expires_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    )
    db.add(attempt)
    db.commit()
    page = customer.get(url(group, "/pay"))
    response = customer.post(
        url(group, "/pay/confirm"),
        data={"csrf_token": csrf_token(page.text), "key": attempt.key, "amount_minor": "12000"},
    )
    assert response.status_code == 404
    assert customer.get(url(group, f"/pay/attempts/{attempt.id}")).status_code == 404
    assert customer.get(url(group, f"/pay/review/{attempt.key}")).status_code == 404
    assert charges(db) == 0


# --- outcomes ---------------------------------------------------------------------------------


def test_a_declined_card_says_why_and_offers_another_method(db, customer, group, bills):
    method = card(db, group, "sandbox_pm_decline.x")
    page = review(customer, group, method=str(method))
    outcome = customer.get(pay(customer, group, page.text).headers["Location"])
    assert "Payment declined" in outcome.text
    assert "Your card was declined." in outcome.text and "Nothing was charged" in outcome.text
    assert "Try another payment method" in outcome.text
    assert invoice_state(db, bills["older"]) == (0, "open")
    history = customer.get(url(group, "/payments")).text
    assert "Failed" in history and "receipt.pdf" not in history


@pytest.mark.parametrize(
    ("decision", "heading"), [("approve", "Payment received"), ("fail", "Payment declined")]
)
def test_3ds_goes_to_the_check_and_back(db, customer, group, bills, decision, heading):
    method = card(db, group, "sandbox_pm_3ds.x")
    page = review(customer, group, method=str(method))
    response = pay(customer, group, page.text)
    step = response.headers["Location"]
    assert step.startswith("/sandbox/authenticate/sandbox_ch_")
    check = customer.get(step)
    assert check.status_code == 200 and "Approve" in check.text and "€180.00" in check.text
    # The portal page, meanwhile, says what is awaited and links to the step.
    attempt = db.scalar(select(PaymentAttempt))
    waiting = customer.get(url(group, f"/pay/attempts/{attempt.id}")).text
    assert "Security check needed" in waiting
    back = customer.post(
        step,
        data={
            "csrf_token": csrf_token(check.text),
            "decision": decision,
            "return_to": re.search(r'name="return_to" value="([^"]+)"', check.text)[1],
        },
    )
    assert back.status_code == 303 and back.headers["Location"].endswith("/return")
    shown = customer.get(customer.get(back.headers["Location"]).headers["Location"])
    assert heading in shown.text
    assert invoice_state(db, bills["older"])[1] == ("paid" if decision == "approve" else "open")
    assert charges(db) == 1


def test_the_sandbox_step_never_sends_the_browser_elsewhere(db, customer, group, bills):
    method = card(db, group, "sandbox_pm_3ds.x")
    page = review(customer, group, method=str(method))
    step = pay(customer, group, page.text).headers["Location"].split("?")[0]
    check = customer.get(step + "?return_to=https://evil.example/")
    assert "evil.example" not in check.text
    back = customer.post(
        step,
        data={
            "csrf_token": csrf_token(check.text),
            "decision": "approve",
            "return_to": "//evil.example/",
        },
    )
    assert back.status_code == 303 and "evil" not in back.headers["Location"]


def test_processing_shows_pending_then_the_worker_settles_it(app, db, customer, group, bills):
    method = card(db, group, "sandbox_pm_slow.x")
    page = review(customer, group, method=str(method))
    outcome_url = pay(customer, group, page.text).headers["Location"]
    pending = customer.get(outcome_url).text
    assert "Payment being processed" in pending and "Check again" in pending
    assert "Pending" in customer.get(url(group, "/payments")).text
    app.extensions["portal.clock"].advance(seconds=6)
    run_worker(app)
    assert invoice_state(db, bills["older"]) == (12000, "paid")
    done = customer.get(outcome_url).text
    assert "Payment received" in done and "Check again" not in done


class Down:
    name = "sandbox"
    is_sandbox = True
    collects_card_details = True

    def charge(self, request):
        raise GatewayUnavailable("no answer")

    def retrieve(self, reference):
        raise GatewayUnavailable("no answer")


def test_a_gateway_that_does_not_answer_is_said_and_the_retry_charges_once(
    app, db, customer, group, bills
):
    payments._GATEWAYS["down"] = lambda config: Down()  # type: ignore[assignment]
    try:
        page = review(customer, group)
        change_settings(app, PAYMENT_GATEWAY="down")
        outcome = customer.get(pay(customer, group, page.text).headers["Location"])
        assert "did not answer" in outcome.text and "Nothing was applied" in outcome.text
        assert invoice_state(db, bills["older"]) == (0, "open") and charges(db) == 0
        change_settings(app, PAYMENT_GATEWAY="sandbox")
        retried = pay(customer, group, outcome.text)  # the page's "Try again" button
        assert "Payment received" in customer.get(retried.headers["Location"]).text
        assert charges(db) == 1
    finally:
        payments._GATEWAYS.pop("down", None)


# --- history --------------------------------------------------------------------------------


def test_history_lists_every_payment_filters_by_date_and_downloads(db, customer, group, bills):
    bank = make_invoice(db, group, number="発票-7")
    add_payment(db, bank, 5000, reference='=HYPERLINK("x")', method_description="Bank transfer")
    db.commit()
    pay(customer, group, review(customer, group, bills["older"]).text)
    page = customer.get(url(group, "/payments")).text
    assert "Bank transfer" in page and "発票-7" in page and "Visa ending 4242" in page
    assert page.count("Succeeded") == 2
    only_old = customer.get(url(group, "/payments?from=2026-11-01&to=2026-11-16")).text
    assert "Bank transfer" in only_old and "Visa ending 4242" not in only_old
    bad = customer.get(url(group, "/payments?from=not-a-date"))
    assert bad.status_code == 400 and "Not a valid date value." in bad.text
    backwards = customer.get(url(group, "/payments?from=2026-12-01&to=2026-01-01"))
    assert backwards.status_code == 400 and "on or after the start date" in backwards.text

    rows = csv_rows(customer.get(url(group, "/payments.csv"), buffered=True).text)
    assert rows[0] == ["date", "amount", "currency", "method", "reference", "invoices", "status"]
    assert rows[1][1:3] == ["120.00", "EUR"] and rows[1][3] == "Visa ending 4242"
    assert rows[2] == [
        "2026-11-15",
        "50.00",
        "EUR",
        "Bank transfer",
        '\'=HYPERLINK("x")',
        "発票-7",
        "succeeded",
    ]

    bank_payment = db.scalar(select(Payment).where(Payment.method_description == "Bank transfer"))
    receipt = customer.get(url(group, f"/payments/{bank_payment.id}/receipt.pdf"))
    assert receipt.mimetype == "application/pdf"
    disposition = receipt.headers["Content-Disposition"]
    assert "filename*=UTF-8''" in disposition and disposition.isascii()
    text = PdfReader(io.BytesIO(receipt.data)).pages[0].extract_text()
    assert "Payment receipt" in text and "€50.00" in text


def test_no_receipt_for_a_failed_payment_or_another_groups(db, customer, group, bills):
    failed = add_payment(db, db.get(Invoice, bills["older"]), 100, status=PaymentStatus.FAILED)
    other = make_bill_group(db)
    theirs = add_payment(db, make_invoice(db, other), 100)
    db.commit()
    assert customer.get(url(group, f"/payments/{failed.id}/receipt.pdf")).status_code == 404
    assert customer.get(url(group, f"/payments/{theirs.id}/receipt.pdf")).status_code == 404


def test_the_preview_shows_the_pay_buttons_disabled(db, group, bills, staff_client):  # noqa: F811
    staff = staff_client()
    page = staff.get(f"/admin/preview/{group.public_id}/overview").text
    assert re.search(r'<button type="submit" class="button" disabled>Pay outstanding balance', page)
    form = staff.get(f"/admin/preview/{group.public_id}/pay").text
    assert "<fieldset disabled>" in form
    response = staff.post(
        f"/admin/preview/{group.public_id}/pay",
        data={"csrf_token": csrf_token(form), "method": bills["card"], "currency": "EUR"},
    )
    assert response.status_code == 403
    assert db.scalar(select(func.count()).select_from(PaymentAttempt)) == 0
