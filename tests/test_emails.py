"""Emails against golden files: what the customer reads, word for word.

To accept a deliberate change: PORTAL_TEST_UPDATE_GOLDEN=1 pytest tests/test_emails.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from emails.render import render
from portal.models import BillGroup, Entity

GOLDEN = Path(__file__).parent / "golden"
CONTEXT = {
    "entity": Entity(name="Northwind Cloud", support_email="billing@northwind-cloud.com"),
    "bill_group": BillGroup(name="Acme UK operations"),
    "code": "1234-5678",
    "minutes": 15,
    "portal_url": "https://portal.example.test/p/PUBLICID",
}


def check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PORTAL_TEST_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; see the module docstring"


@pytest.mark.parametrize("variant", ["link", "code_only"])
def test_signin_email_matches_its_golden_files(app, variant):
    link = "https://portal.example.test/p/PUBLICID/verify/TOKEN" if variant == "link" else None
    with app.test_request_context():
        email = render("signin_link", "ap@acme.com", link=link, **CONTEXT)
    noun = "link" if variant == "link" else "code"
    assert email.subject == f"Your sign-in {noun} for Northwind Cloud"
    check(f"signin_{variant}.txt", email.text)
    check(f"signin_{variant}.html", email.html)
    assert ("/verify/" in email.text) is (variant == "link")
    assert "1234-5678" in email.text and "1234-5678" in email.html
    # Nothing that depends on remote images or styles.
    assert "<img" not in email.html and "<link" not in email.html


@pytest.mark.parametrize("kind", ["reminder_upcoming", "reminder_due_soon", "reminder_overdue"])
def test_reminder_emails_match_their_golden_files(app, kind):
    from tests.email_kinds import every_kind

    with app.test_request_context():
        email = every_kind()[kind].email
    # The unsubscribe token is signed with the test SECRET_KEY and a timestamp: masked.
    masked = {
        part: re.sub(r"/unsubscribe/[\w.-]+", "/unsubscribe/TOKEN", text)
        for part, text in (("txt", email.text), ("html", email.html))
    }
    check(f"{kind}.txt", masked["txt"])
    check(f"{kind}.html", masked["html"])
    assert ("/unsubscribe/" in email.text) is (kind != "reminder_overdue")
    assert "<img" not in email.html and "<link" not in email.html


@pytest.mark.parametrize("kind", ["details_changed", "invoice_copy_confirm", "invoice_issued"])
def test_change_alert_and_invoice_copy_emails_match_their_golden_files(app, kind):
    from tests.email_kinds import every_kind

    with app.test_request_context():
        email = every_kind()[kind].email
    check(f"{kind}.subject.txt", email.subject + "\n")
    check(f"{kind}.txt", email.text)
    check(f"{kind}.html", email.html)
    assert "<img" not in email.html and "<link" not in email.html
    # An invoice copy's recipient has no portal access: no link into the portal but the
    # one that stops the copies.
    if kind == "invoice_issued":
        portal_links = [w for w in email.text.split() if "/p/PUBLICID" in w]
        assert portal_links == ["https://portal.example.test/p/PUBLICID/invoice-copies/stop/TOKEN"]
        assert [a.filename for a in email.attachments] == ["INV-0042.pdf"]


def test_dispute_answer_email_matches_its_golden_files(app):
    from tests.email_kinds import every_kind

    with app.test_request_context():
        email = every_kind()["dispute_answered"].email
    assert email.subject == ("Your dispute about invoice INV-0042 is resolved (Northwind Cloud)")
    check("dispute_answered.txt", email.text)
    check("dispute_answered.html", email.html)
    assert "<img" not in email.html and "<link" not in email.html
