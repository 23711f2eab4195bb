"""portal.links.portal_url: every link to a portal comes from PORTAL_BASE_URL."""

from __future__ import annotations

from flask import Flask

from portal.links import portal_url
from portal.models import BillGroup


def _group(public_id: str = "AbCdEfGhIjKlMnOp") -> BillGroup:
    return BillGroup(public_id=public_id)


def test_the_link_comes_from_the_configured_base_url(app: Flask) -> None:
    with app.test_request_context("/", base_url="https://evil.example"):
        assert portal_url(_group()) == "https://portal.example.test/p/AbCdEfGhIjKlMnOp"


def test_a_path_goes_under_the_portal(app: Flask) -> None:
    with app.app_context():
        link = portal_url(_group(), "/verify/tok")
    assert link == "https://portal.example.test/p/AbCdEfGhIjKlMnOp/verify/tok"


def test_a_base_url_of_the_callers_own_is_used_as_given(app: Flask) -> None:
    with app.app_context():
        assert portal_url(_group(), base_url="") == "/p/AbCdEfGhIjKlMnOp"
        assert portal_url(_group(), base_url="http://x.test/") == "http://x.test/p/AbCdEfGhIjKlMnOp"
