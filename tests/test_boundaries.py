"""The architecture, checked: three faces (the customers' pages in portal.customer, the
staff side in admin, the billing system's API in api) stand on one core (the rest of
portal, and emails); only the factory, portal.app, puts them together. No face imports
another face or the factory, and the core imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from portal import ROOT

FACES = {"customer": "portal.customer", "admin": "admin", "api": "api"}
FACTORY = "portal.app"


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


FACE_FILES = {
    "customer": python_files("portal", "customer"),
    "admin": python_files("admin"),
    "api": python_files("api"),
}
CORE = [
    path
    for path in python_files("portal") + python_files("emails")
    if "customer" not in path.relative_to(ROOT).parts and path != ROOT / "portal" / "app.py"
]


@pytest.mark.parametrize(
    ("face", "path"),
    [(face, path) for face, paths in FACE_FILES.items() for path in paths],
    ids=lambda value: str(value),
)
def test_a_face_imports_no_other_face_and_not_the_factory(face, path):
    others = tuple(prefix for name, prefix in FACES.items() if name != face) + (FACTORY,)
    assert forbidden(path, others) == []


@pytest.mark.parametrize("path", CORE, ids=str)
def test_the_core_imports_no_face_and_not_the_factory(path):
    assert forbidden(path, (*FACES.values(), FACTORY)) == []


def test_the_checks_see_the_files():
    assert len(CORE) >= 30
    assert ROOT / "portal" / "__init__.py" in CORE and ROOT / "emails" / "outbox.py" in CORE
    assert all(len(paths) >= 3 for paths in FACE_FILES.values())
    # The factory is the one place that imports every face.
    assert {"portal.customer", "admin", "api"} <= {
        name.split(".")[0] if not name.startswith("portal.") else ".".join(name.split(".")[:2])
        for name in imports_of(ROOT / "portal" / "app.py")
    }
