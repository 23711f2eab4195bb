"""The architecture, checked: the staff face and the API never import another face, and
the core and emails never import any face."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from portal import ROOT

FACES = ("portal.views", "admin", "api")


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def python_files(*parts: str) -> list[Path]:
    return sorted((ROOT.joinpath(*parts)).rglob("*.py"))


def forbidden(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        name
        for name in imports_of(path)
        if any(name == p or name.startswith(p + ".") for p in prefixes)
    )


CORE = [
    path
    for path in python_files("portal")
    if "views" not in path.parts and path.name != "__init__.py" or path.parent.name == "models"
]


@pytest.mark.parametrize("path", python_files("admin"), ids=str)
def test_admin_never_imports_the_customer_views(path):
    assert forbidden(path, ("portal.views", "api")) == []


@pytest.mark.parametrize("path", python_files("api"), ids=str)
def test_the_api_imports_no_other_face(path):
    assert forbidden(path, ("portal.views", "admin")) == []


@pytest.mark.parametrize("path", python_files("emails"), ids=str)
def test_emails_import_no_face(path):
    assert forbidden(path, FACES) == []


@pytest.mark.parametrize("path", CORE, ids=str)
def test_core_imports_no_face(path):
    assert forbidden(path, FACES) == []


def test_the_checks_see_the_files():
    assert len(CORE) >= 10
    assert "portal.views" in forbidden(ROOT / "portal" / "__init__.py", FACES)
    assert len(python_files("api")) >= 3
