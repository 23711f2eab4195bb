"""What goes over the wire. emails/transport.py has Flask-Mail's message written under
compat32 with CRLF line ends instead of policy.SMTP when its headers are all ASCII
(policy.SMTP's header registry cost over half an outbox worker's CPU); these check the
bytes are still what SMTP and mail clients need, on a real SMTP server, both ways."""

from __future__ import annotations

import email.policy

import pytest

from emails.render import render
from emails.transport import _WIRE, Sender, _Message
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


def test_with_ascii_headers_the_bytes_are_what_policy_smtp_writes(app):
    """Non-ASCII bodies (the bill group's name) included: only headers choose the policy."""
    with app.test_request_context():
        message = _sign_in_email(SELLERS["ascii"])
        built = _Message(
            subject=message.subject, recipients=[message.to], body=message.text, html=message.html
        )._message()
        # The first write picks the MIME boundary; both writes then share it.
        assert built.as_bytes(policy=email.policy.SMTP) == built.as_bytes(policy=_WIRE)
