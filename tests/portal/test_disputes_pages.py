"""Questions and disputes in the portal: the form on an invoice, a PDF sent with it, the
thread and the badge on the invoice and in the list, the reply, the file served back
only to its bill group. And the refusals, each writing nothing: a file that lies about
its type, too large (by the form's rule, by the body's, by a lying Content-Length, in
chunks), empty; another bill group's invoice; bad messages; the preview; a customer who
may not manage billing; no CSRF token."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from portal import attachments
from portal.models import (
    AuditEvent,
    Dispute,
    DisputeAttachment,
    DisputeMessage,
    Invoice,
    WebhookEvent,
)
from tests import files
from tests.admin.conftest import staff_client  # noqa: F401  (the preview test)
from tests.conftest import csrf_token
from tests.factories import make_bill_group, make_invoice
from tests.portal.pages_helpers import flashes, url

pytestmark = pytest.mark.usefixtures("clock")
MIB = 1024 * 1024


@pytest.fixture
def invoice(db, group) -> Invoice:
    found = make_invoice(db, group, number="INV-900")
    db.commit()
    return found


def written(db) -> tuple[int, int, int, int]:
    db.expire_all()
    return tuple(  # type: ignore[return-value]
        db.scalar(select(func.count()).select_from(model)) or 0
        for model in (Dispute, DisputeMessage, DisputeAttachment, WebhookEvent)
    )


def form_path(group, invoice) -> str:
    return url(group, f"/invoices/{invoice.id}/question")


def raise_one(client, group, invoice, upload: tuple[bytes, str] | None = None, **fields: Any):
    page = client.get(form_path(group, invoice))
    assert page.status_code == 200, page.text
    data: dict[str, Any] = {
        "csrf_token": csrf_token(page.text),
        "kind": "dispute",
        "reason": "wrong_amount",
        "message": "We ordered 5 seats, not 50.",
    } | fields
    if upload is not None:
        data["attachment"] = FileStorage(io.BytesIO(upload[0]), upload[1])
    return post_multipart(client, form_path(group, invoice), data)


SURROGATE = "@@surrogate@@"  # stands for the bytes of an encoded lone surrogate


def post_multipart(client, path: str, data: dict[str, Any]):
    """The body built in memory (the test client would spool a large one to a temporary
    file it never closes), with SURROGATE written as the bytes UTF-8 does not allow."""
    boundary, body = encode_multipart(data)
    body = body.replace(SURROGATE.encode(), b"\xed\xa0\x80")
    return client.post(path, data=body, content_type=f"multipart/form-data; boundary={boundary}")


def test_raise_a_dispute_with_a_pdf_see_the_thread_the_badge_and_the_file(
    db, customer, group, invoice
):
    form = customer.get(form_path(group, invoice))
    assert 'enctype="multipart/form-data"' in form.text
    assert "The amount is wrong" in form.text
    pdf = files.pdf_bytes()
    done = raise_one(customer, group, invoice, (pdf, "order confirmation.pdf"))
    assert done.status_code == 303, done.text
    assert done.headers["Location"].endswith(f"/invoices/{invoice.id}#thread")
    page = customer.get(url(group, f"/invoices/{invoice.id}"))
    assert any(m.startswith("Sent. The billing team will answer") for m in flashes(page.text))
    assert "In dispute" in page.text
    assert "We ordered 5 seats, not 50." in page.text
    assert "Dispute: The amount is wrong" in page.text
    assert "Send reply" in page.text
    overview = customer.get(url(group, "/overview")).text
    assert "1 question or dispute is waiting for the billing team" in overview
    listing = customer.get(url(group, "/invoices")).text
    assert re.search(r"INV-900.*?In dispute", listing, re.S)

    (kept,) = db.scalars(select(DisputeAttachment)).all()
    link = url(group, f"/question-files/{kept.id}")
    assert link in page.text
    served = customer.get(link)
    assert served.status_code == 200 and served.data == pdf
    assert served.mimetype == "application/pdf"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert served.headers["Content-Disposition"].startswith("attachment;")
    assert "order_confirmation.pdf" in served.headers["Content-Disposition"]

    # A second raise while it is open: told to use the conversation, nothing written.
    assert customer.get(form_path(group, invoice)).status_code == 303  # to the thread
    before = written(db)
    again = customer.post(
        form_path(group, invoice),
        data={"csrf_token": csrf_token(page.text), "kind": "question", "message": "Hi"},
        content_type="multipart/form-data",
    )
    assert again.status_code == 303 and written(db) == before


def test_reply_while_open(db, customer, group, invoice):
    raise_one(customer, group, invoice, kind="question", reason="")
    dispute = db.scalar(select(Dispute))
    page = customer.get(url(group, f"/invoices/{invoice.id}"))
    assert "Question open" in page.text
    reply_path = url(group, f"/invoices/{invoice.id}/question/{dispute.id}/reply")
    sent = customer.post(
        reply_path,
        data={
            "csrf_token": csrf_token(page.text),
            "message": "And a screenshot.",
            "attachment": (io.BytesIO(files.png_bytes()), "shot.png"),
        },
        content_type="multipart/form-data",
    )
    assert sent.status_code == 303
    db.expire_all()
    assert [m.body for m in db.scalar(select(Dispute)).messages][-1] == "And a screenshot."
    bad = customer.post(
        reply_path,
        data={"csrf_token": csrf_token(page.text), "message": "bell \x07"},
        content_type="multipart/form-data",
    )
    assert bad.status_code == 400
    assert "The message contains characters that are not allowed." in bad.text


LIARS = {
    "html named .pdf": (files.HTML, "invoice.pdf"),
    "svg with a script": (files.SVG, "logo.svg"),
    "pdf header on a web page": (files.POLYGLOT, "scan.pdf"),
    "png header on garbage": (files.png_then_garbage(), "photo.png"),
    "empty": (b"", "empty.pdf"),
    "just over the limit": (b"%PDF-1.4\n" + b"0" * attachments.MAX_BYTES, "big.pdf"),
}


@pytest.mark.parametrize("name", list(LIARS))
def test_a_file_that_lies_or_is_empty_or_too_large_is_refused(db, customer, group, invoice, name):
    before = written(db)
    refused = raise_one(customer, group, invoice, LIARS[name])
    assert refused.status_code == 400, refused.text[:300]
    message = re.search(r'class="error-message" id="attachment-error">([^<]+)<', refused.text)
    assert message, refused.text[:2000]
    assert written(db) == before
    assert "We ordered 5 seats" in refused.text  # what was typed is kept


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("bell \x07", "The message contains characters that are not allowed."),
        ("x" * 100_000, "The message can be at most 5000 characters."),
        ("", "Enter a message."),
    ],
)
def test_a_bad_message_is_a_400_with_its_reason(db, customer, group, invoice, message, expected):
    before = written(db)
    refused = raise_one(customer, group, invoice, message=message)
    assert refused.status_code == 400
    assert expected in refused.text
    assert written(db) == before


@pytest.mark.parametrize("value", ["nul \x00", f"lone {SURROGATE}"])
def test_nul_or_a_lone_surrogate_is_refused_before_any_view(db, customer, group, invoice, value):
    before = written(db)
    refused = raise_one(customer, group, invoice, message=value)
    assert refused.status_code == 400
    assert "control characters" in refused.text
    assert written(db) == before


def test_a_body_over_the_limit_is_a_clear_413(db, customer, group, invoice):
    before = written(db)
    too_large = raise_one(customer, group, invoice, (b"%PDF-" + b"0" * (6 * MIB), "huge.pdf"))
    assert too_large.status_code == 413
    assert "Files can be at most 5 MB" in too_large.text
    assert "Traceback" not in too_large.text
    assert written(db) == before


def test_a_lying_content_length_or_a_chunked_body_is_refused(db, customer, group, invoice):
    page = customer.get(form_path(group, invoice))
    token = csrf_token(page.text)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
        + token.encode()
        + b'\r\n--b\r\nContent-Disposition: form-data; name="attachment"; filename="a.pdf"'
        + b"\r\nContent-Type: application/pdf\r\n\r\n"
        + b"%PDF-"
        + b"0" * (6 * MIB)
        + b"\r\n--b--\r\n"
    )
    multipart = "multipart/form-data; boundary=b"
    before = written(db)
    # Says it is small, is not: read to one byte past the limit, then refused.
    chunked = customer.post(
        form_path(group, invoice),
        input_stream=io.BytesIO(body),
        headers={"Transfer-Encoding": "chunked", "Content-Type": multipart},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert chunked.status_code == 413
    # Says it is larger than the limit: refused before reading.
    declared = customer.post(
        form_path(group, invoice),
        input_stream=io.BytesIO(body[:1000]),
        headers={"Content-Type": multipart},
        environ_overrides={"CONTENT_LENGTH": str(len(body))},
    )
    assert declared.status_code == 413
    # Says more than it sends (under the limit): cut short.
    short = customer.post(
        form_path(group, invoice),
        input_stream=io.BytesIO(body[:1000]),
        headers={"Content-Type": multipart},
        environ_overrides={"CONTENT_LENGTH": "5000"},
    )
    assert short.status_code == 400
    assert written(db) == before


def test_another_groups_invoice_and_file_are_not_found(db, customer, group, invoice, app):
    other = make_bill_group(db, name="Other")
    theirs = make_invoice(db, other, number="THEIRS-1")
    db.commit()
    page = customer.get(form_path(group, invoice))
    before = written(db)
    forged = customer.post(
        url(group, f"/invoices/{theirs.id}/question"),
        data={"csrf_token": csrf_token(page.text), "kind": "question", "message": "Hi"},
        content_type="multipart/form-data",
    )
    assert forged.status_code == 404
    assert customer.get(url(group, f"/invoices/{theirs.id}/question")).status_code == 404
    assert written(db) == before
    # A file in another group's thread is as absent as none.
    from portal.actions import Actor
    from portal.actions.disputes import Upload, raise_dispute

    with app.test_request_context():
        raise_dispute(
            db,
            Actor.customer("ap@other.com"),
            other,
            theirs.id,
            kind="question",
            reason=None,
            message="Theirs",
            upload=Upload("x.png", files.png_bytes()),
        )
        db.commit()
    kept = db.scalar(select(DisputeAttachment))
    assert customer.get(url(group, f"/question-files/{kept.id}")).status_code == 404
    assert "Theirs" not in customer.get(url(group, f"/invoices/{invoice.id}")).text


def test_no_csrf_token_is_a_400(db, customer, group, invoice):
    refused = customer.post(
        form_path(group, invoice),
        data={"kind": "question", "message": "Hi"},
        content_type="multipart/form-data",
    )
    assert refused.status_code == 400
    assert written(db) == (0, 0, 0, 0)


def test_a_customer_who_may_not_manage_billing_is_refused(
    db, customer, group, invoice, monkeypatch
):
    from portal.customer import disputes as pages

    monkeypatch.setattr(pages, "may_manage_billing", lambda viewer: False)
    page = customer.get(form_path(group, invoice))
    assert "only billing managers can question or dispute it" in page.text
    assert "disabled" in page.text
    refused = customer.post(
        form_path(group, invoice),
        data={"csrf_token": csrf_token(page.text), "kind": "question", "message": "Hi"},
        content_type="multipart/form-data",
    )
    assert refused.status_code == 403
    assert written(db) == (0, 0, 0, 0)
    assert db.scalar(
        select(AuditEvent).where(AuditEvent.action == "dispute", AuditEvent.outcome == "forbidden")
    )


def test_the_preview_shows_the_pages_read_only(app, db, customer, group, invoice, staff_client):  # noqa: F811
    staff = staff_client()
    raise_one(customer, group, invoice, (files.png_bytes(), "shot.png"))
    preview = f"/admin/preview/{group.public_id}"
    page = staff.get(f"{preview}/invoices/{invoice.id}")
    assert page.status_code == 200
    assert "In dispute" in page.text and "We ordered 5 seats" in page.text
    assert "disabled" in page.text
    kept = db.scalar(select(DisputeAttachment))
    assert staff.get(f"{preview}/question-files/{kept.id}").status_code == 200
    before = written(db)
    form = staff.get(f"{preview}/invoices/{invoice.id}/question")
    assert form.status_code in (200, 303)
    dispute = db.scalar(select(Dispute))
    for path in (
        f"/invoices/{invoice.id}/question",
        f"/invoices/{invoice.id}/question/{dispute.id}/reply",
    ):
        app.config["WTF_CSRF_ENABLED"] = False  # the preview's refusal, not CSRF's, on trial
        posted = staff.post(f"{preview}{path}", data={"message": "x"})
        assert posted.status_code == 403
    assert written(db) == before
