"""Schemathesis hooks (schemathesis.toml names this module): the one check of our own.

schemathesis' positive_data_acceptance counts every 400 and 422 for a request the
document calls valid as a failure. Some refusals cannot be stated by any schema: a
reference to a record that does not exist, a VAT number's check digits, the email
rules (IDNA, the public suffix list, public and throwaway providers, overlapping
rules), a cursor the API did not give out, and rules across fields (dates in order,
totals that add up). schemathesis.toml lets positive_data_acceptance pass 400 and 422,
and this check fails every one of them that is not such a refusal, so "the document
could have said so" stays a failure.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

# (status, field, message): each pattern must match the whole field ("" for none) and
# the start of the message of the API's error.
BEYOND_THE_SCHEMA: tuple[tuple[int, str, str], ...] = (
    # Existence and ownership of other records.
    (
        422,
        r"(.+\.)?(account|entity|bill_group|product|invoice|payment_method|plan|plans\.\d+)",
        "There is no ",
    ),
    (422, r"(.+\.)?(product|invoice|payment_method)", r"(Product .* belongs|That .* belongs)"),
    (422, "currency", "The bill group is billed in "),
    # Check digits and the email rules (email-validator, IDNA, public suffix list).
    (422, "vat_number", ""),
    (422, r"email|support_email|value", ""),
    # A portal session's landing page and return origin: the portal's pages, the
    # invoices of that bill group, the origins an admin allowed.
    (422, r"path|return_url", ""),
    # A card number where a token or a name belongs (Luhn).
    (422, r"brand|holder_name|gateway_token", "That looks like a card number"),
    # Rules across fields (the models' own validators): no field, or the nested object's.
    (422, "", ""),
    (422, r"(.+\.)?allowed_changes", "quantity_min is above quantity_max"),
    (422, r"subscription", "end_date is before start_date"),
    # An opaque cursor that this API did not give out.
    (400, "cursor", "That cursor is not one this API gave out"),
)


def refusal_beyond_the_schema(status: int, error: dict[str, Any]) -> bool:
    field = error.get("field") or ""
    message = str(error.get("message", ""))
    return any(
        status == expected and re.fullmatch(fields, field) and re.match(start, message)
        for expected, fields, start in BEYOND_THE_SCHEMA
    )


@schemathesis.check
def refused_only_beyond_the_schema(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request the document calls valid is refused (400, 422) only for a reason the
    document cannot state."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 422):
        return None
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"{response.status_code} without the API's error body") from None
    if not refusal_beyond_the_schema(response.status_code, error):
        raise AssertionError(
            f"A schema-valid request was refused with {response.status_code} for a reason "
            f"the document could state: {error.get('field')}: {error.get('message')}"
        )
    return None
