"""The records: list, read and idempotent upsert by external id, for every resource the
billing system keeps; contacts by bill group and kind; invoice PDFs; portal links."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Response, jsonify, request, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.interfaces import LoaderOption

from api.base import ApiError, acting_key, body, bp, page, record, requires
from portal import clock, db, downloads, links
from portal.actions import ActionError, TooMany, invoice_copies
from portal.actions.contacts import update_contact
from portal.config import settings
from portal.models import Account, BillGroup, Contact, ContactKind
from portal.sync import records, schemas, serialize, upsert


def _base_url() -> str:
    return str(settings().PORTAL_BASE_URL)


# Asked for per record, as each record is serialised.
_CONTEXT = records.Context(today=clock.today, base_url=_base_url)


@dataclass(frozen=True)
class Resource:
    """One kind of record as the API exposes it under /api/v1/<name>."""

    record: records.Record
    schema: str  # the OpenAPI component name of the record
    # Query parameters naming a parent by external id: (parameter, parent model, column).
    filters: tuple[tuple[str, Any, Any], ...] = field(default=())

    @property
    def name(self) -> str:
        return self.record.resource

    @property
    def model(self) -> Any:
        return self.record.model

    @property
    def options(self) -> tuple[LoaderOption, ...]:
        return self.record.options

    @property
    def body(self) -> type[schemas.Body]:
        return self.record.body

    def serialize(self, row: Any) -> dict[str, Any]:
        return self.record.serialize(row, _CONTEXT)


def _in_group(record: records.Record, schema: str) -> Resource:
    """A resource that belongs to a bill group, and is listed by ?bill_group=."""
    return Resource(record, schema, (("bill_group", BillGroup, record.model.bill_group_id),))


_RECORDS = records.RECORDS
RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        Resource(_RECORDS["entity"], "Entity"),
        Resource(_RECORDS["account"], "Account"),
        Resource(
            _RECORDS["bill_group"], "BillGroup", (("account", Account, BillGroup.account_id),)
        ),
        Resource(_RECORDS["product"], "Product"),
        Resource(_RECORDS["plan"], "Plan"),
        _in_group(_RECORDS["subscription"], "Subscription"),
        _in_group(_RECORDS["invoice"], "Invoice"),
        _in_group(_RECORDS["payment"], "Payment"),
        _in_group(_RECORDS["payment_method"], "PaymentMethod"),
        _in_group(_RECORDS["credit_note"], "CreditNote"),
    )
}


def _external_id(external_id: str) -> str:
    if not schemas.is_external_id(external_id):
        raise ApiError(404, "No record has that external id: ids are 1-100 of A-Z a-z 0-9 . _ : -")
    return external_id


def _one(resource: Resource, external_id: str) -> Any:
    found = db.session().scalar(
        select(resource.model)
        .where(resource.model.external_id == _external_id(external_id))
        .options(*resource.options)
    )
    if found is None:
        what = re.sub(r"(?<!^)(?=[A-Z])", " ", resource.schema).lower()
        raise ApiError(404, f"There is no {what} with external id {external_id!r}.")
    return found


def parent_filter(parameter: str) -> str | None:
    """A ?bill_group= or ?account= value: an external id, or 400 (as documented)."""
    value = request.args.get(parameter)
    if value is not None and not schemas.is_external_id(value):
        raise ApiError(
            400,
            f"{parameter} must be an external id: 1-100 of A-Z a-z 0-9 . _ : -",
            field=parameter,
        )
    return value


def _filtered(resource: Resource) -> Any:
    query = select(resource.model).options(*resource.options)
    for parameter, parent, column in resource.filters:
        value = parent_filter(parameter)
        if value is None:
            continue
        parent_id = db.session().scalar(select(parent.id).where(parent.external_id == value))
        # An unknown parent is an empty list, not an error: it may simply not exist yet.
        query = query.where(column == (parent_id if parent_id is not None else -1))
    return query


def _bill_group_id(row: Any) -> int | None:
    if isinstance(row, BillGroup):
        return row.id
    return getattr(row, "bill_group_id", None)


def _write(action: str, detail: str, apply: Callable[[], upsert.Upserted]) -> upsert.Upserted:
    """Run an upsert and commit it with its audit row. A unique-key race with another
    request (the same new external id at once) is retried once, when it is an update."""
    session = db.session()
    for attempt in (1, 2):
        try:
            result = apply()
            if result.changed:
                record(
                    action,
                    "created" if result.created else "updated",
                    bill_group_id=_bill_group_id(result.record),
                    detail=detail,
                )
            session.commit()
            return result
        except upsert.SyncError as exc:
            session.rollback()
            status = 409 if exc.code == "conflict" else 422
            raise ApiError(status, exc.message, field=exc.field) from None
        except ActionError as exc:
            session.rollback()
            wait = exc.retry_after if isinstance(exc, TooMany) else None
            raise ApiError(exc.status, exc.message, field=exc.field, retry_after=wait) from None
        except IntegrityError:
            session.rollback()
            if attempt == 2:
                raise ApiError(409, "The record clashes with another one; retry.") from None
    raise AssertionError("unreachable")


def _upserted(resource: Resource, result: upsert.Upserted) -> tuple[Response, int]:
    session = db.session()
    session.expire_all()
    fresh = _one(resource, result.record.external_id)
    response = jsonify(resource.serialize(fresh))
    if result.created:
        response.headers["Location"] = url_for(
            "api.get_record", resource=resource.name, external_id=fresh.external_id
        )
    return response, 201 if result.created else 200


def _resource(name: str) -> Resource:
    found = RESOURCES.get(name)
    if found is None:
        raise ApiError(404, f"There is no resource {name!r} in this API.")
    return found


# One set of routes for every resource: /<resource> and /<resource>/<external_id>.
ANY_RESOURCE = "<any(" + ", ".join(f'"{name}"' for name in RESOURCES) + "):resource>"


@bp.get(f"/{ANY_RESOURCE}")
@requires("read")
def list_records(resource: str) -> Response:
    found = _resource(resource)
    return page(_filtered(found), found.model, found.serialize)


@bp.get(f"/{ANY_RESOURCE}/<external_id>")
@requires("read")
def get_record(resource: str, external_id: str) -> Response:
    found = _resource(resource)
    return jsonify(found.serialize(_one(found, external_id)))


@bp.put(f"/{ANY_RESOURCE}/<external_id>")
@requires("write")
def put_record(resource: str, external_id: str) -> tuple[Response, int]:
    found = _resource(resource)
    external_id = _external_id(external_id)
    data = body(found.body)
    result = _write(
        f"api.{found.name}.put",
        external_id,
        lambda: upsert.put(db.session(), acting_key(), found.name, external_id, data),
    )
    return _upserted(found, result)


# --- invoice PDFs ---------------------------------------------------------------------


@bp.get("/invoices/<external_id>/pdf")
@requires("read")
def invoice_pdf_download(external_id: str) -> Response:
    found = _one(RESOURCES["invoices"], external_id)
    return downloads.invoice_pdf_response(found, clock.today(), settings().LOCALE)


# --- bill groups: portal link and contacts --------------------------------------------


def bill_group_or_404(external_id: str) -> BillGroup:
    found: BillGroup = _one(RESOURCES["bill-groups"], external_id)
    return found


@bp.get("/bill-groups/<external_id>/portal-link")
@requires("read")
def portal_link(external_id: str) -> Response:
    group = bill_group_or_404(external_id)
    today = clock.today()
    return jsonify(
        {
            "url": links.portal_url(group),
            "available": bool(group.portal_available(today)),
            "portal_enabled": group.portal_enabled,
            "contract_active": bool(group.has_active_contract(today)),
        }
    )


@bp.get("/bill-groups/<external_id>/invoice-copy-recipients")
@requires("read")
def invoice_copy_recipients(external_id: str) -> Response:
    group = bill_group_or_404(external_id)
    rows = invoice_copies.recipients(db.session(), group)
    return jsonify(
        {"data": [serialize.invoice_copy_recipient(row) for row in rows], "next_cursor": None}
    )


CONTACT_OPTIONS = records.RECORDS["contact"].options


@bp.get("/contacts")
@requires("read")
def list_contacts() -> Response:
    query = select(Contact).options(*CONTACT_OPTIONS)
    value = parent_filter("bill_group")
    if value is not None:
        group_id = db.session().scalar(select(BillGroup.id).where(BillGroup.external_id == value))
        query = query.where(Contact.bill_group_id == (group_id if group_id is not None else -1))
    return page(query, Contact, serialize.contact)


def _kind(kind: str) -> str:
    if kind not in schemas.CONTACT_KINDS:
        raise ApiError(404, "Contacts are billing or shipping.")
    return kind


@bp.get("/bill-groups/<external_id>/contacts")
@requires("read")
def bill_group_contacts(external_id: str) -> Response:
    group = bill_group_or_404(external_id)
    rows = sorted(group.contacts, key=lambda c: c.kind.value)
    return jsonify({"data": [serialize.contact(row) for row in rows], "next_cursor": None})


@bp.get("/bill-groups/<external_id>/contacts/<kind>")
@requires("read")
def get_contact(external_id: str, kind: str) -> Response:
    group = bill_group_or_404(external_id)
    found = group.contact(ContactKind(_kind(kind)))
    if found is None:
        raise ApiError(404, f"This bill group has no {kind} contact.")
    return jsonify(serialize.contact(found))


def _contact(group: BillGroup, kind: ContactKind, data: schemas.ContactIn) -> upsert.Upserted:
    saved = update_contact(db.session(), acting_key(), group, kind, data.model_dump())
    return upsert.Upserted(saved.contact, saved.created, bool(saved.changed))


@bp.put("/bill-groups/<external_id>/contacts/<kind>")
@requires("write")
def put_contact(external_id: str, kind: str) -> tuple[Response, int]:
    group = bill_group_or_404(external_id)
    kind = _kind(kind)
    data = body(schemas.ContactIn)
    result = _write(
        f"api.contacts.{kind}.put",
        external_id,
        lambda: _contact(group, ContactKind(kind), data),
    )
    db.session().expire_all()
    fresh = bill_group_or_404(external_id).contact(ContactKind(kind))
    assert fresh is not None  # written just now
    response = jsonify(serialize.contact(fresh))
    if result.created:
        # As every other 201 does: where the new record is read from.
        response.headers["Location"] = url_for(
            "api.get_contact", external_id=external_id, kind=kind
        )
    return response, 201 if result.created else 200
