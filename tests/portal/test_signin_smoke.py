"""The sign-in journey end to end, through a real SMTP server."""

from portal.access import add_rule
from tests.conftest import CSRF_RE, link_and_code, request_link, run_worker, sign_in
from tests.factories import make_bill_group


def test_the_journey(app, client, db, smtp):
    group = make_bill_group(db)
    add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    response = sign_in(client, app, smtp, group.public_id, "AP@acme.com")
    assert response.status_code == 303
    assert response.headers["Location"] == f"/p/{group.public_id}/overview"
    overview = client.get(response.headers["Location"])
    assert overview.status_code == 200
    assert "ap@acme.com" in overview.text
    message = smtp.to("ap@acme.com")[0]
    assert message["Subject"].startswith("Your sign-in link")
    assert message.get_body(preferencelist=("html",)) is not None


def test_an_unknown_address_gets_the_same_page_and_no_email(app, client, db, smtp):
    group = make_bill_group(db)
    add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    known = request_link(client, group.public_id, "ap@acme.com")
    unknown = request_link(app.test_client(), group.public_id, "ap@other.com")
    assert known.status_code == unknown.status_code == 200

    def page(response, address):
        return CSRF_RE.sub("csrf", response.text).replace(address, "X")

    assert page(known, "ap@acme.com") == page(unknown, "ap@other.com")
    assert run_worker(app) == (2, 1)
    assert [m["To"] for m in smtp.messages] == ["ap@acme.com"]
    path, code = link_and_code(smtp.messages[0])
    assert path.startswith(f"/p/{group.public_id}/verify/") and len(code) == 9
