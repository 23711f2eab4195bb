"""The staff preview of the add-card page in Stripe mode: the page as the customer sees
it, disabled, and nothing made at Stripe or stored (no customer, no SetupIntent)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.models import StaffRole
from tests.localstripe import LocalStripe
from tests.portal.pages_helpers import portal_group
from tests.settings import change_settings
from tests.stripe_helpers import stripe_settings

pytestmark = pytest.mark.usefixtures("clock")


def test_the_preview_makes_nothing_at_stripe(
    app: Flask, db: Session, staff_client, localstripe: LocalStripe
) -> None:
    change_settings(app, **stripe_settings(localstripe))
    group = portal_group(db)
    db.commit()
    customers_before = len(localstripe.list_all("/v1/customers"))
    staff = staff_client(StaffRole.VIEWER)
    response = staff.get(f"/admin/preview/{group.public_id}/payment-methods/new")
    assert response.status_code == 200
    assert 'data-client-secret=""' in response.text
    assert "<fieldset disabled>" in response.text
    assert localstripe.js_url in response.text  # the same page, scripts and all
    db.expire_all()
    assert group.gateway_customer_ref is None
    customers = localstripe.list_all("/v1/customers")
    assert len(customers) == customers_before
    assert all(c["metadata"].get("bill_group") != group.public_id for c in customers)
