"""What goes over the wire. emails/transport.py has Flask-Mail's message written under
compat32 with CRLF line ends instead of policy.SMTP when every header is plain ASCII and
needs no folding (policy.SMTP's header registry cost over half an outbox worker's CPU);
these check, on a real SMTP server, that the bytes are still what SMTP and mail clients
need, and that they are the bytes policy.SMTP would have written."""

from __future__ import annotations

import email.policy
import email.utils
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

import pytest

from emails import outbox
from emails.render import render
from emails.transport import Sender, _Message, build
from portal.models import BillGroup, Entity
from tests.email_kinds import SELLER_CONTACT, STAFF_KINDS, Example, every_kind, template_kinds
from tests.settings import change_settings

SELLERS = {
    "ascii": "Northwind Cloud",
    # compat32 would fold this subject's encoded words onto a continuation line, and it
    # would arrive as " Your sign-in link ..." (tried).
    "non-ascii": "Zoë's Café – Ünïted Billing",
}


def _sign_in_email(seller: str):  # type: ignore[no-untyped-def]
    return render(
        "signin_link",
        "ap@acme.com",
        link="https://portal.example.test/p/PUBLICID/verify/TOKEN",
        code="1234-5678",
        minutes=15,
        portal_url="https://portal.example.test/p/PUBLICID",
        entity=Entity(name=seller, support_email="billing@seller.example"),
        bill_group=BillGroup(name="Acme – Zürich office"),
    )


@pytest.mark.parametrize("seller", SELLERS.values(), ids=SELLERS.keys())
def test_an_email_arrives_with_crlf_lines_and_every_text_intact(app, smtp, seller):
    with app.test_request_context():
        message = _sign_in_email(seller)
        with Sender() as sender:
            sender.deliver(message.to, message.subject, message.text, message.html)
    [received], [raw] = smtp.messages, smtp.raw
    assert message.subject == f"Your sign-in link for {seller}"
    assert received["Subject"] == message.subject
    assert received["To"] == "ap@acme.com"
    for subtype, sent in (("plain", message.text), ("html", message.html)):
        # On the wire every line ends in CRLF, the bodies' own line ends included.
        assert received.get_body((subtype,)).get_content() == sent.replace("\n", "\r\n")
    # SMTP wants CRLF and no line over 998 octets (RFC 5321 4.5.3.1.6, RFC 5322 2.1.1).
    lines = raw.split(b"\r\n")
    assert not any(b"\n" in line or b"\r" in line for line in lines)
    assert max(len(line) for line in lines) <= 998
    assert raw.split(b"\r\n\r\n", 1)[0].isascii()


BOUNDARY = re.compile(rb"={15}\d+==")
HEADERS = {
    "short ascii": ("ap@acme.com", "<1.2@portal.example>"),
    "long recipient": ("accounts-payable-" + "x" * 70 + "@acme.example", "<1.2@portal.example>"),
    # make_msgid() names the host: a long cloud hostname makes a long Message-ID.
    "long message id": ("ap@acme.com", f"<1.2@{'build-' * 15}host.example>"),
}


@pytest.mark.parametrize("to, msg_id", HEADERS.values(), ids=HEADERS.keys())
def test_the_bytes_are_what_policy_smtp_writes(app, to, msg_id):
    """Whichever policy writes it, a message comes out as Flask-Mail's policy.SMTP would
    write it (the MIME boundary aside: each build picks its own)."""
    with app.test_request_context():
        message = _sign_in_email(SELLERS["ascii"])
        mail = _Message(
            subject=message.subject, recipients=[to], body=message.text, html=message.html
        )
        mail.msgId, mail.date = msg_id, 1_796_000_000
        ours = mail.as_bytes()
        theirs = mail._message().as_bytes(policy=email.policy.SMTP)
    assert BOUNDARY.sub(b"-", ours) == BOUNDARY.sub(b"-", theirs)
    # One multipart/alternative: its boundary declared once, used per part and to close.
    assert len(BOUNDARY.findall(ours)) == 4


# --- every kind of email, as it arrives ----------------------------------------------

SENDER = "Northwind Cloud billing <billing@mail.northwind-cloud.com>"
# RFC 5322 3.3 date-time, as email.utils.formatdate writes it.
RFC5322_DATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$"
)
SPAM_LIMIT = 1.0
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture
def arrived(app, db, smtp) -> dict[str, tuple[Example, EmailMessage, bytes]]:
    """Every kind, queued in the outbox and sent by it to the test SMTP server:
    name -> (what was built, what arrived parsed, the bytes that arrived)."""
    change_settings(app, MAIL_DEFAULT_SENDER=SENDER)
    with app.test_request_context():
        examples = every_kind()
        for example in examples.values():
            outbox.queue(db, example.email)
        db.commit()
        assert outbox.send_due(db) == len(examples)
    assert len(smtp.messages) == len(examples)
    # The outbox sends oldest first: the order they were queued in.
    return {
        name: (example, received, raw)
        for (name, example), received, raw in zip(
            examples.items(), smtp.messages, smtp.raw, strict=True
        )
    }


def test_every_template_folder_has_an_example(app):
    with app.test_request_context():
        covered = {example.email.kind for example in every_kind().values()}
    assert covered == template_kinds(), "add the new kind to tests/email_kinds.py"


def test_every_kind_is_multipart_alternative_text_first(arrived):
    """multipart/alternative, plain text first; with attachments (a receipt PDF), that
    alternative first in a multipart/mixed, then each file."""
    for name, (example, received, _raw) in arrived.items():
        body = received
        if example.email.attachments:
            assert received.get_content_type() == "multipart/mixed", name
            body, *files = received.iter_parts()
            assert [(f.get_filename(), f.get_content_type()) for f in files] == [
                (a.filename, a.content_type) for a in example.email.attachments
            ], name
            assert [f.get_content() for f in files] == [a.data for a in example.email.attachments]
        assert body.get_content_type() == "multipart/alternative", name
        parts = [part.get_content_type() for part in body.iter_parts()]
        assert parts == ["text/plain", "text/html"], name
        assert received["Subject"] == example.email.subject, name


def test_every_kind_has_the_headers_of_automatic_mail_from_the_sender(arrived):
    for name, (example, received, _raw) in arrived.items():
        assert received["From"] == SENDER, name
        message_id = received["Message-ID"]
        assert re.fullmatch(r"<[^@<>\s]+@mail\.northwind-cloud\.com>", message_id), message_id
        assert RFC5322_DATE.match(received["Date"]), received["Date"]
        assert email.utils.parsedate_to_datetime(received["Date"]).tzinfo is not None
        assert received["Auto-Submitted"] == "auto-generated", name
        assert received["X-Auto-Response-Suppress"] == "All", name
        # Replies go to the seller's contact; staff email has no seller and no Reply-To.
        expected = None if name in STAFF_KINDS else SELLER_CONTACT
        assert received["Reply-To"] == expected, name
        assert example.email.reply_to == expected, name


def test_message_ids_are_unique(arrived):
    ids = [received["Message-ID"] for _example, received, _raw in arrived.values()]
    assert len(set(ids)) == len(ids)


def test_the_plain_text_part_says_everything_the_html_part_does(arrived):
    for name, (example, received, _raw) in arrived.items():
        text = received.get_body(("plain",)).get_content()
        html = received.get_body(("html",)).get_content()
        for fact in example.facts:
            assert fact in text, f"{name}: {fact!r} missing from the plain text"
            assert fact in html.replace("&amp;", "&"), f"{name}: {fact!r} missing from the HTML"


def test_no_tracking_remote_content_or_rewritten_links(arrived):
    """Nothing that reports an open or loads from elsewhere; every link is the portal's
    own (or a mailto:), exactly as it is in the plain text, not through a redirector."""
    for name, (_example, received, _raw) in arrived.items():
        html = received.get_body(("html",)).get_content()
        text = received.get_body(("plain",)).get_content()
        assert not re.search(r"<(img|link|script|iframe|object|embed)\b", html, re.I), name
        assert "url(" not in html and "@import" not in html, name
        for href in re.findall(r'href="([^"]+)"', html):
            if href.startswith("mailto:"):
                assert href.removeprefix("mailto:") in text, (name, href)
            else:
                assert href.startswith("https://portal.example.test/"), (name, href)
                assert href in text, (name, href)


def _spamassassin(raw: bytes) -> tuple[float, list[str]]:
    """SpamAssassin's score and the rules that fired (with their points): local rules only
    (-L, no network tests), no Bayes database (none to learn from, nothing written)."""
    with tempfile.TemporaryDirectory() as home:
        result = subprocess.run(
            ["spamassassin", "-L", "-t", "-p", f"{home}/user_prefs", "--cf", "use_bayes 0"],
            input=raw,
            capture_output=True,
            timeout=60,
            check=True,
            env={"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
    report = result.stdout.decode("utf-8", "replace")
    status = email.message_from_bytes(result.stdout)["X-Spam-Status"]
    assert status is not None, f"no X-Spam-Status in SpamAssassin's output:\n{report}"
    score = re.search(r"score=(-?\d+(?:\.\d+)?)", status)
    assert score, status
    rules = re.findall(r"^\s*(-?\d+\.\d) ([A-Z][A-Z0-9_]+)\s", report, re.M)
    return float(score.group(1)), [f"{name} {points}" for points, name in rules]


def test_spamassassin_scores_every_kind_at_most_1(arrived):
    if shutil.which("spamassassin") is None:
        reason = "spamassassin not installed: apt-get install -y spamassassin (CI installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {reason}", pytrace=False)
        pytest.skip(reason)
    with ThreadPoolExecutor(max_workers=len(arrived)) as pool:
        scored = dict(
            zip(
                arrived,
                pool.map(_spamassassin, (raw for _e, _r, raw in arrived.values())),
                strict=True,
            )
        )
    lines = [
        f"{name}: {score} ({', '.join(rules) or 'no rules'})"
        for name, (score, rules) in scored.items()
    ]
    print("SpamAssassin (-L):\n" + "\n".join(lines))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "spamassassin.txt").write_text("\n".join(lines) + "\n")
    high = {name: found for name, found in scored.items() if found[0] > SPAM_LIMIT}
    assert not high, f"SpamAssassin scores over {SPAM_LIMIT}: {high}"


def test_a_message_with_an_attachment_stays_mixed(app):
    """Receipts and statements will carry a PDF: then, and only then, multipart/mixed
    around the alternative."""
    with app.test_request_context():
        message = build("ap@acme.com", "Your receipt", "Thanks.", "<p>Thanks.</p>")
        message.attach("receipt.pdf", "application/pdf", b"%PDF-1.4\n")
        built = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert built.get_content_type() == "multipart/mixed"
    outer = [part.get_content_type() for part in built.iter_parts()]
    assert outer == ["multipart/alternative", "application/pdf"]
    [alternative, _pdf] = built.iter_parts()
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    assert built["Auto-Submitted"] == "auto-generated"


# --- RFC 8058 one-click unsubscribe headers (reminders) ----------------------------------

UNSUBSCRIBE_RE = re.compile(
    rb"\r\nList-Unsubscribe: <(https://portal\.example\.test/p/PUBLICID/unsubscribe/"
    rb"[A-Za-z0-9_.-]+)>\r\n"
)
NON_ESSENTIAL = {"reminder_upcoming", "reminder_due_soon"}


def test_non_essential_reminders_carry_one_click_unsubscribe_headers(arrived):
    """RFC 8058 section 3.1: one HTTPS URI in List-Unsubscribe, and List-Unsubscribe-Post
    exactly "List-Unsubscribe=One-Click"; each header on one line, the URL as written
    (a folded or RFC 2047-encoded URL is no URL to a mail client)."""
    for name, (example, received, raw) in arrived.items():
        if name not in NON_ESSENTIAL:
            assert received["List-Unsubscribe"] is None, name
            assert received["List-Unsubscribe-Post"] is None, name
            continue
        [url] = UNSUBSCRIBE_RE.findall(raw)
        assert received["List-Unsubscribe"] == f"<{url.decode()}>"
        assert received.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
        assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
        assert b"=?utf-8?" not in raw.split(b"\r\n\r\n", 1)[0].split(b"List-Unsubscribe")[1]
        # The same link is in both parts, for people.
        text = received.get_body(("plain",)).get_content()
        assert url.decode() in text, name
        assert dict(example.email.headers)["List-Unsubscribe"] == f"<{url.decode()}>"


@pytest.mark.parametrize("seller", SELLERS.values(), ids=SELLERS.keys())
def test_a_long_unsubscribe_header_stays_on_one_line_under_either_policy(app, seller):
    """A non-ASCII subject sends the message through policy.SMTP, which would fold the
    long URL into encoded words; the header is written as it is all the same."""
    url = "https://portal.example.test/p/PUBLICID/unsubscribe/" + "a" * 300
    headers = (
        ("List-Unsubscribe", f"<{url}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    )
    with app.test_request_context():
        raw = build("ap@acme.com", f"Reminder from {seller}", "x", "<p>x</p>", None, (), headers)
        data = raw.as_bytes()
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in data
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["List-Unsubscribe"] == f"<{url}>"
    assert parsed["Subject"] == f"Reminder from {seller}"


@pytest.mark.parametrize(
    "value",
    [
        "<https://x.example/\r\nBcc: victim@example.com>",
        "<https://x.example/ü>",
        "<" + "a" * 1000 + ">",
    ],
)
def test_an_unsubscribe_header_that_cannot_be_one_line_is_refused(app, value):
    with app.test_request_context(), pytest.raises(ValueError):
        build("ap@acme.com", "Reminder", "x", "<p>x</p>", None, (), (("List-Unsubscribe", value),))
