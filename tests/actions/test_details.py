"""Each billing details rule (PO, VAT and registration numbers), driven through every
face that can break it: the customer's form, `PUT /api/v1/bill-groups/<id>` and an
import line. The same message on the same field, and nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from tests.actions.conftest import EXTERNAL_ID, api_refusal, form_refusal, import_refusal, state
from tests.api.conftest import ACCOUNT, BILL_GROUP, ENTITY
from tests.portal.pages_helpers import DETAIL_RULES, url


def bill_group_body(**changes: Any) -> dict[str, Any]:
    return {**BILL_GROUP, **changes}


@pytest.mark.parametrize(("field", "value", "message"), DETAIL_RULES)
def test_a_billing_details_rule_is_the_same_on_every_face(
    app, db, group, customer, api, field, value, message
):
    for path, body in (("/entities/ent-1", ENTITY), ("/accounts/acc-1", ACCOUNT)):
        assert api.put(path, body).status_code == 201
    before = state(db, group)

    on_form = form_refusal(customer, url(group, "/billing-details"), {field: value})
    on_api = api_refusal(api, f"/bill-groups/{EXTERNAL_ID}", bill_group_body(**{field: value}))
    on_import = import_refusal(
        app,
        db,
        {
            "type": "bill_group",
            "external_id": EXTERNAL_ID,
            "data": bill_group_body(**{field: value}),
        },
    )

    assert on_form == on_api == on_import == {field: [message]}
    assert state(db, group) == before
