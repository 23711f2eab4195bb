"""The faces' fixtures, for tests that drive one rule through every face."""

from tests.admin.conftest import staff_client  # noqa: F401  (the staff face's client)
