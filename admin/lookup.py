"""The row a staff URL names, or a 404: one lookup for every admin view."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import abort
from sqlalchemy import Select

from portal import db

T = TypeVar("T")


def get_or_404(model: type[T], ident: int, **options: Any) -> T:
    """`Session.get` of the request's session; options (with_for_update) pass through."""
    found = db.session().get(model, ident, **options)
    if found is None:
        abort(404)
    return found


def one_or_404(statement: Select[T]) -> T:
    """The one row the statement finds, such as a child scoped to its parent, or a 404."""
    found = db.session().scalar(statement)
    if found is None:
        abort(404)
    return found
