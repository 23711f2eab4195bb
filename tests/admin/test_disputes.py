"""Questions and disputes on the staff side: the list and its filters, the thread on its
page and on the bill group's, answering (kept open, then resolved), the email the
customer gets; a viewer may read but not answer; a bad answer is a 400 with its reason."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.actions import Actor
from portal.actions.disputes import Upload, raise_dispute
from portal.models import Dispute, DisputeAttachment, DisputeState, OutboxMessage, StaffRole
from tests import files
from tests.admin.conftest import staff_client  # noqa: F401
from tests.conftest import csrf_token
from tests.factories import make_bill_group, make_contact, make_invoice


@pytest.fixture
def dispute(app, db) -> Dispute:
    group = make_bill_group(db, name="Acme Europe")
    make_contact(db, group, email="billing@acme.com")
    invoice = make_invoice(db, group, number="INV-55")
    with app.test_request_context():
        found = raise_dispute(
            db,
            Actor.customer("ap@acme.com"),
            group,
            invoice.id,
            kind="dispute",
            reason="duplicate",
            message="Billed twice for November.",
            upload=Upload("statement.png", files.png_bytes()),
        )
        db.commit()
    return found


def test_an_account_manager_answers_then_resolves(app, db, dispute, staff_client):  # noqa: F811
    staff = staff_client(StaffRole.ACCOUNT_MANAGER)
    listed = staff.get("/admin/disputes")
    assert listed.status_code == 200 and "INV-55" in listed.text
    assert "INV-55" not in staff.get("/admin/disputes?state=resolved").text
    assert "INV-55" in staff.get("/admin/disputes?state=any&kind=dispute").text
    assert "INV-55" not in staff.get("/admin/disputes?state=any&kind=question").text
    group_page = staff.get(f"/admin/bill-groups/{dispute.bill_group_id}").text
    assert f"/admin/disputes/{dispute.id}" in group_page

    page = staff.get(f"/admin/disputes/{dispute.id}")
    assert "Billed twice for November." in page.text and "Send answer" in page.text
    kept = db.scalar(select(DisputeAttachment))
    served = staff.get(f"/admin/disputes/{dispute.id}/files/{kept.id}")
    assert served.status_code == 200 and served.mimetype == "image/png"
    assert served.headers["Content-Disposition"].startswith("attachment;")

    path = f"/admin/disputes/{dispute.id}/answer"
    bad = staff.post(path, data={"csrf_token": csrf_token(page.text), "message": "bell \x07"})
    assert bad.status_code == 400
    assert "The answer contains characters that are not allowed." in bad.text
    kept_open = staff.post(path, data={"csrf_token": csrf_token(page.text), "message": "Checking."})
    assert kept_open.status_code == 303
    done = staff.post(
        path,
        data={"csrf_token": csrf_token(page.text), "message": "Refunded.", "resolve": "y"},
    )
    assert done.status_code == 303
    db.expire_all()
    found = db.get(Dispute, dispute.id)
    assert found.state == DisputeState.RESOLVED and found.invoice.open_dispute_kind is None
    mails = db.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    assert [(m.to_address, m.kind) for m in mails][-2:] == [
        ("ap@acme.com", "dispute_answered"),
        ("billing@acme.com", "dispute_answered"),
    ]
    assert "resolved" in mails[-1].subject
    again = staff.post(path, data={"csrf_token": csrf_token(page.text), "message": "Again"})
    assert again.status_code == 303  # told it is resolved, nothing written
    db.expire_all()
    assert len(db.get(Dispute, dispute.id).messages) == 3


def test_a_viewer_reads_but_may_not_answer(app, db, dispute, staff_client):  # noqa: F811
    staff = staff_client(StaffRole.VIEWER)
    page = staff.get(f"/admin/disputes/{dispute.id}")
    assert page.status_code == 200 and "Send answer" not in page.text
    refused = staff.post(
        f"/admin/disputes/{dispute.id}/answer",
        data={"csrf_token": csrf_token(page.text), "message": "Hi", "resolve": "y"},
    )
    assert refused.status_code == 403
    db.expire_all()
    assert db.get(Dispute, dispute.id).state == DisputeState.OPEN
