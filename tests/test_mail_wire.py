"""What goes over the wire. emails/transport.py has Flask-Mail's message written under
compat32 with CRLF line ends instead of policy.SMTP when every header is plain ASCII and
needs no folding (policy.SMTP's header registry cost over half an outbox worker's CPU);
these check, on a real SMTP server, that the bytes are still what SMTP and mail clients
need, and that they are the bytes policy.SMTP would have written."""

from __future__ import annotations

import email.policy
import re

import pytest

from emails.render import render
from emails.transport import Sender, _Message
from portal.models import BillGroup, Entity

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
    # Two multiparts: each boundary declared once and used per part and at the close.
    assert len(BOUNDARY.findall(ours)) == 7
