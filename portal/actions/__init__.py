"""The use-case layer: every write the portal makes, written once.

An action is a function `verb(db, actor, ...)` in a module of this package (rules,
accounts, details, contacts, payment_methods, signin, imports). It validates with the one
rule for that write, takes the lock the write needs, writes, records the audit row,
queues the webhook event and the notice, and returns a result, or raises an
`ActionError` (a subclass says which kind) whose message is written for the person who
asked. Faces (customer views, `admin/`, `api/`, the importer) only parse a form or JSON,
call the action, turn an `ActionError` into a flash message, a 4xx JSON error or an
import-line rejection, and commit.

The transaction belongs to the face: an action never commits. Its writes, audit rows,
events and notices go into the caller's session together, so they commit together or not
at all; on an ActionError the action has written nothing that the face could commit by
mistake (it raises before writing, or rolls back to its savepoint). The database session
is called `db` everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

ActorKind = Literal["customer", "staff", "api", "import", "system"]


class AuditActor(TypedDict):
    """The actor_type and actor columns of an audit row, as audit.record takes them."""

    actor_type: str
    actor: str


@dataclass(frozen=True)
class Actor:
    """Who asks for a write: a signed-in customer (their verified address), a staff
    member (their address), an API key (its name), an import run (its label), or the
    portal itself (the worker, the CLI)."""

    kind: ActorKind
    name: str
    # How the audit trail names this actor when it is not just `name`: an API key is
    # recorded with its hint ("key billing (pk_ab12…)") so a rotated key can be told apart.
    audited_as: str | None = field(default=None, compare=False)

    @classmethod
    def customer(cls, email: str) -> Actor:
        return cls("customer", email)

    @classmethod
    def staff(cls, email: str) -> Actor:
        return cls("staff", email)

    @classmethod
    def api_key(cls, name: str, hint: str | None = None) -> Actor:
        return cls("api", name, None if hint is None else f"key {name} ({hint}…)")

    @classmethod
    def import_run(cls, label: str) -> Actor:
        return cls("import", label)

    @classmethod
    def system(cls, name: str = "portal") -> Actor:
        return cls("system", name)

    @property
    def label(self) -> str:
        """How rows record who made them (`created_by`): `api:billing-sync`, an email."""
        return (self.name if self.kind in ("customer", "staff") else f"{self.kind}:{self.name}")[
            :254
        ]

    def audit(self) -> AuditActor:
        """The actor_type and actor of an audit row."""
        return {"actor_type": self.kind, "actor": (self.audited_as or self.name)[:254]}

    def event(self) -> dict[str, Any]:
        """The `actor` of a webhook event, as the API documents it."""
        if self.kind == "api":
            return {"type": "api", "key": self.name}
        if self.kind in ("customer", "staff"):
            return {"type": self.kind, "email": self.name}
        return {"type": self.kind, "name": self.name}


class ActionError(ValueError):
    """A write that cannot be made as asked. `message` is for the person who asked,
    `field` names the input it is about (None: the whole request), `code` is a stable
    machine-readable name for the API, and `status` the HTTP status a face should answer
    with."""

    status = 422
    code = "invalid"

    def __init__(self, message: str, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class Invalid(ActionError):
    """The input breaks a rule (a malformed address, a currency a bill group with
    invoices may not change to)."""


class Conflict(ActionError):
    """The input clashes with what is already there (a duplicate or overlapping rule)."""

    status = 409
    code = "conflict"


class NotFound(ActionError):
    """The record to change does not exist (or not for this actor)."""

    status = 404
    code = "not_found"


class Forbidden(ActionError):
    """This actor may not make this write."""

    status = 403
    code = "forbidden"


class TooMany(ActionError):
    """Over a limit that protects someone else (e.g. addresses named per day);
    `retry_after` is how many seconds until it has room again (a 429's Retry-After)."""

    status = 429
    code = "too_many"

    def __init__(self, message: str, field: str | None = None, *, retry_after: int) -> None:
        super().__init__(message, field)
        self.retry_after = retry_after
