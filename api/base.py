"""The API blueprint, its errors, key authentication, request bodies and pagination."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from functools import wraps
from itertools import accumulate
from typing import Any, NoReturn, TypeVar

from flask import Blueprint, Response, g, jsonify, request
from pydantic import BaseModel, ValidationError
from sqlalchemy import Select, tuple_
from werkzeug.exceptions import RequestEntityTooLarge

from portal import apikeys, audit, db, hygiene, throttle
from portal.actions import Actor
from portal.models import ApiKey, changes
from portal.models.changes import AFTER_ALL
from portal.sync.schemas import describe
from portal.web import MAX_ID

PREFIX = "/api/v1"
bp = Blueprint("api", __name__, url_prefix=PREFIX)

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# The schemas nest three deep (an invoice's lines' fields); Python's json recurses once
# per level and fails with RecursionError somewhere near 1,000.
MAX_JSON_DEPTH = 32

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code or ERROR_CODES.get(status, "error")
        self.errors = errors
        self.retry_after = retry_after


def error_response(exc: ApiError) -> Response:
    """The one error shape: {"error": {"code", "message", "field"}}; a 429 says in
    Retry-After how many seconds to wait."""
    body: dict[str, Any] = {"code": exc.code, "message": exc.message, "field": exc.field}
    if exc.errors:
        body["errors"] = exc.errors
    response = jsonify({"error": body})
    response.status_code = exc.status
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return error_response(exc)


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


# --- authentication -----------------------------------------------------------------


def _presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def requires(scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A valid, unrevoked key with `scope`: 401 without one, 403 without the scope, 429
    over its budget. Wrong keys are budgeted per client IP, like every secret check, and
    apart from valid ones: a flood of wrong keys from an address (a NAT, a proxy, the
    billing system's own host) must not lock out the valid key behind it. Keys are 256
    random bits, so the budget bounds the noise of guessing, not its odds."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            presented = _presented_key()
            key = apikeys.authenticate(db.session(), presented) if presented else None
            if key is None:
                ip = audit.client_ip() or "unknown"
                if not throttle.has_room("api-auth-failures", ip):
                    raise ApiError(
                        429,
                        "Too many failed attempts to authenticate. Wait and retry.",
                        retry_after=throttle.retry_after("api-auth-failures", ip),
                    )
                throttle.spend("api-auth-failures", ip)
                raise ApiError(
                    401,
                    "Send a valid API key: Authorization: Bearer bp_..."
                    if presented is None
                    else "That API key is not valid or has been revoked.",
                )
            if not throttle.within(("api-key", str(key.id))):
                raise ApiError(
                    429,
                    "This key has made too many requests. Wait and retry.",
                    retry_after=throttle.retry_after("api-key", str(key.id)),
                )
            if scope not in key.scope_set:
                raise ApiError(403, f"This key does not have the {scope} scope.")
            g.api_key = key
            return view(*args, **kwargs)

        wrapper.api_scope = scope  # type: ignore[attr-defined]
        return wrapper

    return decorator


def current_key() -> ApiKey:
    key: ApiKey = g.api_key
    return key


def acting_key() -> Actor:
    """The key making this request, as the actions (portal.actions) name it."""
    key = current_key()
    return Actor.api_key(key.name, key.hint)


def record(action: str, outcome: str, *, bill_group_id: int | None, detail: str) -> None:
    """Audit an API write in the caller's transaction: the key's name is the actor."""
    audit.record(
        db.session(),
        action,
        outcome,
        actor_type="api",
        actor=f"key {current_key().name} ({current_key().hint}…)",
        bill_group_id=bill_group_id,
        detail=detail[:500],
    )


# --- request bodies -----------------------------------------------------------------


def body(model: type[M]) -> M:
    """The JSON request body, validated by `model`: 415 if it is not JSON, 400 if it does
    not parse, 413 if too large, 422 with the field if a value is wrong."""
    if not request.is_json:
        raise ApiError(415, "Send the body as JSON, with Content-Type: application/json.")
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise ApiError(413, "The request body is too large.") from None
    if not raw.strip():
        raise ApiError(400, "The body is empty: send the record as a JSON object.")
    try:
        # RFC 8259: JSON between systems is UTF-8.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "The body is not valid JSON: it is not UTF-8 text.") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ApiError(
            400, f"The body is not valid JSON here: it nests deeper than {MAX_JSON_DEPTH} levels."
        )
    try:
        data = json.loads(
            text,
            parse_constant=_not_json,
            parse_float=_number,
            object_pairs_hook=_unique_keys,
        )
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}.") from None
    # NUL and lone surrogates can be neither stored nor encoded: refused before anything.
    # Other control characters go to the fields first, so a field with a rule of its own
    # answers with the same message as on the customer's form; any left over are refused.
    unstorable = hygiene.unclean_json_field(data, forbidden=hygiene.FORM_FORBIDDEN)
    if unstorable is not None:
        _unclean(unstorable)
    if not isinstance(data, dict):
        raise ApiError(422, "The body must be a JSON object.")
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None
    unclean = hygiene.unclean_json_field(data)
    if unclean is not None:
        _unclean(unclean)
    return parsed


# Python's json reads more than RFC 8259 allows, and what it adds could only surprise
# the sender: NaN and Infinity, 1e309 as infinity, and a repeated key as its last value.
def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not a JSON number")


def _number(literal: str) -> int | float:
    """A JSON number written with a fraction or exponent. JSON has one number type, and
    JSON Schema counts 1250.0 as the integer 1250: so does the API, read exactly from
    the text. Any other is a float, which every integer field refuses; one too large
    for a float is refused here."""
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"{literal[:40]} is too large for a number")
    if abs(number) <= 10**30:
        exact = Decimal(literal)
        if exact == exact.to_integral_value():
            return int(exact)
    return number


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key {key[:40]!r} appears twice in one object")
        found[key] = value
    return found


def _unclean(field: str) -> NoReturn:
    raise ApiError(
        400,
        "Text in the body contains a NUL, another control character or a lone surrogate.",
        field=field or None,
    )


_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest, counted without parsing, so that a body of
    100,000 "[" is refused before the recursive parser sees it. Brackets inside strings
    do not count; in a document that is not JSON the count is only an estimate, and
    json.loads refuses it anyway."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def invalid(exc: ValidationError) -> ApiError:
    errors = [{"field": field, "message": message} for field, message in describe(exc)]
    first = errors[0]
    return ApiError(422, str(first["message"]), field=first["field"], errors=errors)


# --- lists --------------------------------------------------------------------------


# ASCII digits only: str.isdigit() and int() also take "²" (which int() then refuses)
# and "١٢" (which it reads as 12), and int() refuses more than 4,300 digits.
_LIMIT = re.compile(r"[0-9]{1,3}")


def limit_arg() -> int:
    raw = request.args.get("limit", str(DEFAULT_LIMIT))
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_LIMIT}.", field="limit")
    return int(raw)


def datetime_arg(name: str) -> dt.datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise ApiError(
            400,
            f"{name} must be an ISO 8601 time with a zone, like 2026-11-30T09:00:00Z.",
            field=name,
        )
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is a time in year 0
        raise ApiError(
            400, f"{name} is outside the years 1 to 9999 once in UTC.", field=name
        ) from None


# What _encode_cursor gives out: URL-safe base64 without padding (empty: the first page).
CURSOR_PATTERN = r"^[A-Za-z0-9_-]*$"


def _encode_cursor(position: tuple[int, int]) -> str:
    raw = json.dumps(list(position)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    """A (change_seq, id) position this API gave out: after that row of that change."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        change, row_id = json.loads(raw)
        if not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= AFTER_ALL
            for n in (change, row_id)
        ):
            raise ValueError
        if not 1 <= row_id <= MAX_ID:  # beyond BIGINT the database would fail, not answer
            raise ValueError
    except (ValueError, TypeError, binascii.Error):
        raise ApiError(
            400,
            "That cursor is not one this API gave out; start again without it.",
            field="cursor",
        ) from None
    return change, row_id


def page(query: Select[Any], model: Any, serialize: Callable[[Any], dict[str, Any]]) -> Response:
    """One page of `query` in commit order, (change_seq, id): see portal.models.changes.

    next_cursor is set when more rows were waiting; resume_cursor always is, so that a
    client that keeps the last one and asks again (now or tomorrow, with an empty page in
    between) reads every change once it has committed, at least once and in commit order:
    a record changed again is read again, later. ?updated_since= only narrows the rows;
    a poll that resumes from its time instead of a cursor can miss what commits late."""
    limit = limit_arg()
    since = datetime_arg("updated_since")
    if since is not None:
        query = query.where(model.updated_at >= since)
    cursor = request.args.get("cursor")
    after = _decode_cursor(cursor) if cursor else (0, 0)
    session = db.session()
    # Read before the page: every change up to this one has committed, so the page
    # below sees all of them, and a page that reaches the end has read past them all.
    settled = (changes.last_change(session), AFTER_ALL)
    query = query.where(tuple_(model.change_seq, model.id) > tuple_(*after))
    rows = session.scalars(query.order_by(model.change_seq, model.id).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    last = (rows[-1].change_seq, rows[-1].id) if rows else after
    resume = last if more else max(last, settled)
    return jsonify(
        {
            "data": [serialize(row) for row in rows],
            "next_cursor": _encode_cursor(last) if more else None,
            "resume_cursor": _encode_cursor(resume),
        }
    )
