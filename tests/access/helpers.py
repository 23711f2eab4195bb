"""What the portal.access tests share: refusals read as sentences, stored rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.access import AccessError
from portal.models import AccessRule, BillGroup, RuleKind

STAFF = "am@seller.example.com"
EMAIL, DOMAIN = RuleKind.EMAIL, RuleKind.DOMAIN


def assert_sentence(message: str) -> None:
    """A message a person can read: one short line, ending like a sentence, no internals."""
    assert message.endswith("."), message
    assert " " in message and len(message) < 250, message
    assert "\n" not in message and "\r" not in message, message
    assert "Error" not in message and "Traceback" not in message, message


def refused(function: Callable[..., Any], raw: Any, **kwargs: Any) -> str:
    """The message of the AccessError that `function(raw)` raises (and check it reads well)."""
    with pytest.raises(AccessError) as caught:
        function(raw, **kwargs)
    message = caught.value.message
    assert str(caught.value) == message
    assert_sentence(message)
    return message


def stored(db: Session, bill_group: BillGroup) -> set[tuple[str, str, bool]]:
    rows = db.execute(
        select(AccessRule.kind, AccessRule.value, AccessRule.include_subdomains).where(
            AccessRule.bill_group_id == bill_group.id
        )
    ).all()
    return {(str(kind), value, subdomains) for kind, value, subdomains in rows}
