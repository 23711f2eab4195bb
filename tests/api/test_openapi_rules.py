"""The document's text rules are the rules: for any string, the field's schema in the
OpenAPI document accepts it exactly when portal.details' rule and the body's hygiene
check do (the patterns are built from them, and this holds them to it). Strings are
Unicode text: a lone surrogate cannot be sent as UTF-8, only as a JSON escape, and the
body's hygiene check refuses it before any rule (the document says so in its info)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from api.openapi import document
from portal import details, hygiene

# Text that reaches the edges of the rules: spaces the trim removes, controls the
# hygiene check refuses, format characters, separators, and ordinary letters.
EDGES = "\t\n\r\x0b\x0c\x1c\x85\xa0\u1680\u2000\u2028\u2029\u200b\u00ad\ufeff\x00\x7f "
TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(EDGES), st.sampled_from("aZ09.-/#()+ _"), st.characters(codec="utf-8")
    ),
    max_size=45,
)


def _field_schema(component: str, field: str) -> dict[str, Any]:
    schema = document()["components"]["schemas"][component]["properties"][field]
    return {**schema, "components": document()["components"]}


def _documented(component: str, field: str, value: str) -> bool:
    validator = jsonschema.Draft202012Validator(_field_schema(component, field))
    return validator.is_valid(value)


def _ruled(rule: details.Rule, value: str) -> bool:
    if hygiene.unclean_json_field(value) is not None:
        return False
    try:
        clean = rule.check(value)
    except details.DetailError:
        return False
    return clean is not None or not rule.required


# (component, field, rule); lengths shortened below so that generated text reaches them.
FIELDS = [
    ("ContactIn", "name", details.CONTACT["name"]),
    ("ContactIn", "company", details.CONTACT["company"]),
    ("ContactIn", "city", details.CONTACT["city"]),
    ("ContactIn", "postal_code", details.CONTACT["postal_code"]),
    ("ContactIn", "phone", details.CONTACT["phone"]),
    ("BillGroupIn", "po_number", details.BILLING_DETAILS["po_number"]),
]


@pytest.mark.parametrize(("component", "field", "rule"), FIELDS, ids=[f for _, f, _ in FIELDS])
@settings(max_examples=400, derandomize=True, deadline=None)
@given(value=TEXT)
@example(value=" " * 30)
@example(value="  Acme  ")
@example(value="a\tb")
@example(value="a\n")
@example(value="\u200bAcme")
@example(value="+44 20 7946 0000 ")
@example(value="PO-1 ")
def test_the_document_accepts_what_the_rule_accepts(component, field, rule, value):
    assert _documented(component, field, value) == _ruled(rule, value), (
        f"{component}.{field}: {value!r}"
    )


@pytest.mark.parametrize(("component", "field", "rule"), FIELDS, ids=[f for _, f, _ in FIELDS])
def test_the_documented_length_is_the_rules(component, field, rule):
    schema = _field_schema(component, field)
    branch = next(b for b in schema.get("anyOf", [schema]) if b.get("type") == "string")
    assert branch["maxLength"] == rule.max_length
    assert branch.get("minLength") == (1 if rule.required else None)
    too_long = "A" * (rule.max_length + 1)
    assert not _documented(component, field, too_long) and not _ruled(rule, too_long)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2", True),
        ("1.5", True),
        ("0.0001", True),
        ("99999999999999.9999", True),
        ("0", False),
        ("0.0000", False),
        ("1.23456", False),
        ("02", False),
        ("1e2", False),
        (" 2", False),
        ("100000000000000", False),
        (2, False),
        (2.5, False),
    ],
)
def test_quantity_is_one_type_with_one_pattern(value, valid):
    from pydantic import ValidationError

    from portal.sync.schemas import InvoiceLineIn

    line = {"description": "x", "quantity": value, "unit_price_minor": 1, "amount_minor": 1}
    assert _documented("InvoiceLineIn", "quantity", value) is valid
    try:
        InvoiceLineIn.model_validate(line)
    except ValidationError:
        accepted = False
    else:
        accepted = True
    assert accepted is valid
