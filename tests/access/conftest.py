"""Fixtures of the portal.access tests."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from portal.models import BillGroup
from tests.factories import make_bill_group


@pytest.fixture
def group(db: Session) -> BillGroup:
    """A committed bill group with an active contract, so rollbacks do not remove it."""
    bill_group = make_bill_group(db)
    db.commit()
    return bill_group
