"""The billing portal's core: the billing model, access rules, sign-in, the use-case
layer (portal.actions) and the parts every face shares. The faces are portal.customer
(the customers' pages), admin (staff) and api (the billing system); portal.app is the
factory that puts them together. The core never imports a face or the factory
(tests/test_boundaries.py)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# The checkout (pyproject.toml, templates/, migrations/); in an installed wheel only
# site-packages, so nothing at run time may rely on it: use resource_dir.
ROOT = PACKAGE.parent


def resource_dir(name: str) -> Path:
    """Where templates/ or migrations/ is: portal/<name> in an installed wheel (pyproject.toml
    maps them into the package), else <name> at the top of the checkout. Two places because
    setuptools' editable install (`pip install -e .`, its default lenient mode) maps only
    folders that hold Python packages, and leaves these where they are in the checkout."""
    packaged = PACKAGE / name
    return packaged if packaged.is_dir() else ROOT / name
