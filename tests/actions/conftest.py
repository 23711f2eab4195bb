"""The faces a rule can be driven through, for the per-rule tests of tests/actions:
the customer's form, the API and an import line. Each `*_refusal` helper returns what
the person (or the billing system) is told, field by field, as that face says it."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.models import AuditEvent, BillGroup, Contact, NoticeChange, WebhookEvent
from portal.sync import importer
from tests.admin.conftest import staff_client  # noqa: F401  (the staff face's client)
from tests.api.conftest import Api, make_key
from tests.portal.conftest import customer  # noqa: F401 (the fixtures the tests here use)
from tests.portal.conftest import group as group  # noqa: F401
from tests.portal.pages_helpers import field_errors, form_data

EXTERNAL_ID = "bg-actions"


@pytest.fixture(autouse=True)
def _stopped_clock(clock) -> None:
    """The customer's pages here run at the clock fixture's midday, as in tests/portal."""


@pytest.fixture
def api(app: Flask, client: FlaskClient, group: BillGroup, db: Session) -> Api:
    """The API, as the billing system, on the customer's bill group (given an external id)."""
    group.external_id = EXTERNAL_ID
    db.commit()
    return Api(app.test_client(), make_key(app))


def state(db: Session, group: BillGroup) -> dict[str, Any]:
    """Everything a refused write must leave as it was."""
    db.expire_all()
    contacts = db.scalars(select(Contact).where(Contact.bill_group_id == group.id)).all()
    return {
        "contacts": sorted(
            (c.kind.value, c.name, c.email, c.pending_email, c.phone, c.line1, c.country)
            for c in contacts
        ),
        "details": (group.po_number, group.vat_number, group.registration_number),
        # The import audits its run, whatever its lines did.
        "audit": db.scalar(
            select(func.count(AuditEvent.id)).where(AuditEvent.action != "import.run")
        ),
        "events": db.scalar(select(func.count(WebhookEvent.id))),
        "notices": db.scalar(select(func.count(NoticeChange.id))),
    }


def form_refusal(client: FlaskClient, page: str, fields: dict[str, Any]) -> dict[str, list[str]]:
    response = client.post(page, data=form_data(client, page, **fields))
    assert response.status_code == 400, response.status_code
    return {name: errors for name in fields if (errors := field_errors(response.text, name))}


def api_refusal(api: Api, path: str, body: dict[str, Any]) -> dict[str, list[str]]:
    response = api.put(path, body)
    assert response.status_code == 422, response.get_json()
    errors: dict[str, list[str]] = {}
    for error in response.get_json()["error"]["errors"]:
        errors.setdefault(error["field"], []).append(error["message"])
    return errors


def import_refusal(app: Flask, db: Session, line: dict[str, Any]) -> dict[str, list[str]]:
    with app.app_context():
        summary = importer.import_records(
            db, io.BytesIO((json.dumps(line) + "\n").encode()), source="actions.jsonl"
        )
    assert summary.rejected == 1, summary.describe()
    errors: dict[str, list[str]] = {}
    for field, message in summary.rejections[0].reasons:
        errors.setdefault((field or "").removeprefix("data."), []).append(message)
    return errors
