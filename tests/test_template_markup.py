"""Mistakes the Nu HTML Checker (tests/e2e) finds only on pages that happen to show
them, caught in every template: the CSRF field's fixed id="csrf_token" (two forms on
one page repeat it) and <time datetime> with microseconds (the HTML standard allows at
most three digits of a second)."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
PAGES = sorted(TEMPLATES.rglob("*.html"))


def test_the_templates_are_found():
    assert len(PAGES) > 30


def test_no_template_renders_the_csrf_field_with_its_id():
    bare = re.compile(r"\{\{\s*\w+\.csrf_token\s*\}\}")
    found = [str(p.relative_to(TEMPLATES)) for p in PAGES if bare.search(p.read_text())]
    assert not found, f"use csrf_field(form) from _macros.html (no id) in: {found}"


def test_time_elements_give_seconds_at_most():
    attribute = re.compile(r'datetime="\{\{[^}]*\}\}"')
    loose = [
        f"{p.relative_to(TEMPLATES)}: {match}"
        for p in PAGES
        for match in attribute.findall(p.read_text())
        if "isoformat(" in match and "timespec='seconds'" not in match
    ]
    assert not loose, "isoformat(timespec='seconds') in datetime attributes:\n" + "\n".join(loose)
