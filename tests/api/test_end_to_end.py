"""The integration journey: the billing system pushes a bill group through the API, its
customer signs in through the portal and changes the billing contact, the new address
confirms itself, and the billing system receives the signed contact.updated webhooks and
reads the change back."""

from __future__ import annotations

import json
import re

from portal import webhooks
from tests.api.conftest import CARD, push_bill_group
from tests.conftest import csrf_token, run_worker, sign_in


def test_push_sign_in_change_and_hear_back(app, db, smtp, receiver, api):
    from portal import db as portal_db

    with app.app_context():
        secret, _ = webhooks.create_endpoint(
            portal_db.session(), receiver.url, {"contact.updated"}, "admin@staff.example.com"
        )
        portal_db.session().commit()

    push_bill_group(api)
    assert api.put("/payment-methods/pm-1", CARD).status_code == 201
    assert (
        api.post(
            "/bill-groups/bg-1/access-rules", {"value": "acme.com", "role": "billing_manager"}
        ).status_code
        == 201
    )
    link = api.get("/bill-groups/bg-1/portal-link").get_json()
    assert link["available"] is True
    public_id = link["url"].rsplit("/", 1)[1]

    customer = app.test_client()
    assert sign_in(customer, app, smtp, public_id, "ap@acme.com").status_code == 303
    overview = customer.get(f"/p/{public_id}/overview").text
    assert "Acme EU" in overview and "INV-1001" in overview

    page = f"/p/{public_id}/contacts/billing"
    form = customer.get(page).text
    assert 'value="ap@acme.com"' in form
    fields = dict(re.findall(r'<input[^>]*name="(\w+)"[^>]*value="([^"]*)"', form))
    fields |= {
        "csrf_token": csrf_token(form),
        "email": "finance@acme.com",
        "name": "Finance team",
        "country": "IE",
    }
    response = customer.post(page, data=fields)
    assert response.status_code == 303, response.text
    run_worker(app)

    # The name changes at once; the new address waits for its mailbox to confirm it.
    [request] = receiver.requests
    assert webhooks.verify(secret, request["headers"]["Portal-Signature"], request["body"])
    event = json.loads(request["body"])
    assert event["type"] == "contact.updated"
    assert event["data"]["actor"] == {"type": "customer", "email": "ap@acme.com"}
    assert event["data"]["bill_group"]["external_id"] == "bg-1"
    assert event["data"]["object"]["email"] == "ap@acme.com"
    assert event["data"]["object"]["kind"] == "billing"
    assert event["data"]["changed"] == ["name"]

    [named] = smtp.to("finance@acme.com")
    text = named.get_body(preferencelist=("plain",)).get_content()
    path = re.search(r"https://portal\.example\.test(/p/\S+/confirm/\S+)", text).group(1)
    mailbox = app.test_client()
    page = mailbox.get(mailbox.get(path).headers["Location"])
    confirmed = mailbox.post(
        f"/p/{public_id}/billing-contact/confirm", data={"csrf_token": csrf_token(page.text)}
    )
    assert confirmed.status_code == 200
    run_worker(app)

    request = receiver.requests[-1]
    assert webhooks.verify(secret, request["headers"]["Portal-Signature"], request["body"])
    event = json.loads(request["body"])
    assert event["data"]["actor"] == {"type": "customer", "email": "finance@acme.com"}
    assert event["data"]["object"]["email"] == "finance@acme.com"
    assert event["data"]["changed"] == ["email"]

    # And the change reads back through the API's change feed.
    since = event["data"]["object"]["updated_at"]
    changed = api.get("/contacts", query_string={"updated_since": since}).get_json()["data"]
    assert [(c["bill_group"], c["email"]) for c in changed] == [("bg-1", "finance@acme.com")]
