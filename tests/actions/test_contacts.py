"""Each contact field rule, driven through every face that can break it (the customer's
contact form, `PUT /api/v1/bill-groups/<id>/contacts/<kind>`, an import line): the same
message on the same field, and nothing written, audited, evented or announced."""

from __future__ import annotations

from typing import Any

import pytest

from portal.actions import Actor
from portal.actions.contacts import update_contact
from portal.details import InvalidFields
from portal.models import ContactKind
from tests.actions.conftest import (
    EXTERNAL_ID,
    api_refusal,
    form_refusal,
    import_refusal,
    state,
)
from tests.portal.pages_helpers import (
    BILLING_EMAIL,
    PHONE_ERROR,
    contact_fields,
    form_data,
    url,
)

# (the field, what is sent, what every face answers)
RULES = [
    ("name", "   ", "Enter a name."),
    ("name", "Jo\x01Bloggs", "The name contains characters that are not allowed."),
    ("company", "Acme\u202eGmbH", "The company contains characters that are not allowed."),
    (
        "email",
        "ap@acme.com, cfo@acme.com",
        "Add addresses one at a time: enter a single email address or domain.",
    ),
    ("email", "jo@", "There must be something after the @-sign."),
    ("phone", "call me", PHONE_ERROR),
    ("line1", " ", "Enter the first line of the address."),
    ("line1", "Haupt\nstraße 1", "The address contains characters that are not allowed."),
    ("city", "", "Enter the town or city."),
    ("country", "", "Choose a country from the list."),
]


def api_body(**changes: Any) -> dict[str, Any]:
    """The contact as the API takes it: empty optional fields left out."""
    return {key: value for key, value in contact_fields(**changes).items() if value != ""} | {
        key: value for key, value in changes.items()
    }


@pytest.mark.parametrize("kind", ["billing", "shipping"])
@pytest.mark.parametrize(("field", "value", "message"), RULES)
def test_a_contact_rule_is_the_same_on_every_face(
    app, db, group, customer, api, kind, field, value, message
):
    before = state(db, group)

    on_form = form_refusal(
        customer, url(group, f"/contacts/{kind}"), contact_fields(**{field: value})
    )
    on_api = api_refusal(
        api, f"/bill-groups/{EXTERNAL_ID}/contacts/{kind}", api_body(**{field: value})
    )
    on_import = import_refusal(
        app,
        db,
        {
            "type": "contact",
            "bill_group": EXTERNAL_ID,
            "kind": kind,
            "data": api_body(**{field: value}),
        },
    )

    assert on_form == on_api == on_import == {field: [message]}
    assert state(db, group) == before


def test_every_wrong_field_is_named_at_once(app, db, group, customer, api):
    wrong = {"email": "jo@", "phone": "12", "country": ""}
    expected = {
        "email": ["There must be something after the @-sign."],
        "phone": [PHONE_ERROR],
        "country": ["Choose a country from the list."],
    }
    before = state(db, group)

    on_form = form_refusal(customer, url(group, "/contacts/billing"), contact_fields(**wrong))
    on_api = api_refusal(api, f"/bill-groups/{EXTERNAL_ID}/contacts/billing", api_body(**wrong))

    assert on_form == on_api == expected
    assert state(db, group) == before


@pytest.mark.parametrize(("field", "limit"), [("name", 200), ("company", 200), ("postal_code", 20)])
def test_a_field_over_its_length_is_refused_on_every_face(
    app, db, group, customer, api, field, limit
):
    """The one limit; the form says it as WTForms does (its input's maxlength stops a
    browser first), the API and the import in the rule's words."""
    too_long = "A" * (limit + 1)
    before = state(db, group)

    on_form = form_refusal(
        customer, url(group, "/contacts/billing"), contact_fields(**{field: too_long})
    )
    on_api = api_refusal(
        api, f"/bill-groups/{EXTERNAL_ID}/contacts/billing", api_body(**{field: too_long})
    )

    assert on_form == {field: [f"Field cannot be longer than {limit} characters."]}
    assert list(on_api) == [field] and f"at most {limit} characters" in on_api[field][0]
    assert state(db, group) == before


def test_the_action_refuses_what_the_faces_refuse(app, db, group):
    """Called directly (as a future face would), the action checks by itself."""
    with app.app_context():
        for actor in (Actor.customer("ap@acme.com"), Actor.api_key("billing system")):
            with pytest.raises(InvalidFields) as refused:
                update_contact(
                    db, actor, group, ContactKind.BILLING, contact_fields(phone="call me")
                )
            assert refused.value.errors == {"phone": PHONE_ERROR}
            assert refused.value.status == 422


def test_the_billing_system_sets_the_address_as_confirmed_the_customer_names_it(
    app, db, group, customer, api
):
    """The same action, two degrees of trust (portal.billing_contact)."""
    response = customer.post(
        url(group, "/contacts/billing"),
        data={
            **form_data(customer, url(group, "/contacts/billing")),
            **contact_fields(email="new@acme.com"),
        },
    )
    assert response.status_code == 303
    db.expire_all()
    contact = group.contact(ContactKind.BILLING)
    assert contact is not None
    assert (contact.email, contact.pending_email) == (BILLING_EMAIL, "new@acme.com")

    response = api.put(
        f"/bill-groups/{EXTERNAL_ID}/contacts/billing", api_body(email="system@acme.com")
    )
    assert response.status_code == 200, response.get_json()
    db.expire_all()
    assert group.contact(ContactKind.BILLING).email == "system@acme.com"
