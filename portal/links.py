"""Links to a bill group's portal, as emails, staff pages, the API and the CLI show them.

Always built from PORTAL_BASE_URL (which the config stores without a trailing slash),
never from the request's Host: a link built from a poisoned Host header would send a
customer's sign-in token to whoever forged it.
"""

from __future__ import annotations

from portal.config import settings
from portal.models import BillGroup


def portal_url(group: BillGroup, path: str = "", *, base_url: str | None = None) -> str:
    """The absolute link to the bill group's portal, or to `path` under it ("/verify/x").
    `base_url` stands in for PORTAL_BASE_URL where the caller has its own (the API's
    serialisers, the demo's description)."""
    base = settings().PORTAL_BASE_URL if base_url is None else base_url
    return f"{str(base).rstrip('/')}/p/{group.public_id}{path}"
