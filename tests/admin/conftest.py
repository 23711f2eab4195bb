"""Staff fixtures: users of each role, signed in through the real form."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from portal.models import StaffRole, StaffUser
from tests.conftest import csrf_token

PASSWORD = "correct horse battery staple"


def make_staff(db, role: StaffRole = StaffRole.ADMIN, email: str | None = None) -> StaffUser:
    user = StaffUser(email=email or f"{role.value}@staff.example.com", role=role)
    user.set_password(PASSWORD)
    db.add(user)
    db.commit()
    return user


def staff_sign_in(
    client: FlaskClient, email: str, password: str = PASSWORD, next: str | None = None
):
    """Through the real form: the sign-in page (with ?next= when given), then the POST."""
    page = client.get("/admin/sign-in", query_string=None if next is None else {"next": next})
    assert page.status_code == 200, page.status_code
    data = {"csrf_token": csrf_token(page.text), "email": email, "password": password}
    return client.post("/admin/sign-in", data=data | ({} if next is None else {"next": next}))


def post_form(client: FlaskClient, page: str, action: str | None = None, **data):
    """POST a form on `page` (to `action`, by default the page itself) with the CSRF token
    the page gave, as a browser would."""
    token = csrf_token(client.get(page).text)
    return client.post(action or page, data={"csrf_token": token, **data})


@pytest.fixture
def staff_client(app, db):
    """A factory: staff_client(role) -> a client signed in as a new user of that role."""

    def make(role: StaffRole = StaffRole.ADMIN) -> FlaskClient:
        user = make_staff(db, role, f"{role.value}-{db.query(StaffUser).count()}@staff.example.com")
        client = app.test_client()
        response = staff_sign_in(client, user.email)
        assert response.status_code == 303, response.text
        return client

    return make
