"""Fixtures of the portal tests: the bill group of the page tests and its signed-in customer."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.models import (
    BillGroup,
)
from tests.admin.conftest import staff_client  # noqa: F401  (previews: a staff member's client)
from tests.conftest import Inbox, sign_in
from tests.portal.pages_helpers import (
    ADDRESS,
    portal_group,
)


@pytest.fixture
def group(db: Session) -> BillGroup:
    return portal_group(db)


@pytest.fixture
def customer(app: Flask, client: FlaskClient, smtp: Inbox, group: BillGroup) -> FlaskClient:
    """The test client, signed in to `group` as ap@acme.com; the inbox emptied after."""
    response = sign_in(client, app, smtp, group.public_id, ADDRESS)
    assert response.status_code == 303, response.text
    smtp.clear()
    return client
