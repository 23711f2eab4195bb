"""Staff pages for accounts and bill groups: search, overview, create and edit, the bill
group page with its portal link, and switching the portal on and off."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets

import pytest
from sqlalchemy import event, func, select

from portal import db as portal_db
from portal.access import add_rule
from portal.models import Account, AuditEvent, BillGroup, CustomerSession, StaffRole
from tests.conftest import csrf_token
from tests.factories import make_account, make_bill_group, make_entity, make_invoice

UTC = dt.UTC


def submit(client, url, data):
    """Open the form page and post it with its CSRF token, as a browser would."""
    page = client.get(url)
    assert page.status_code == 200, page.text
    return client.post(url, data={"csrf_token": csrf_token(page.text), **data})


def audit_rows(db, action=None):
    db.expire_all()
    query = select(AuditEvent).order_by(AuditEvent.id)
    if action:
        query = query.where(AuditEvent.action == action)
    return db.scalars(query).all()


def count(db, model):
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model))


def account_names(html):
    return re.findall(r'<th scope="row" data-label="Account"><a href="[^"]+">([^<]+)</a>', html)


def group_form(entity, **overrides):
    return {
        "entity_id": str(entity),
        "name": "Acme EUR monthly",
        "currency": "eur",
        "billing_frequency": "quarterly",
        "next_billing_date": "2026-12-01",
        "auto_pay": "y",
        "contract_start": "2026-01-01",
        "contract_end": "",
        "portal_enabled": "y",
    } | overrides


# --- search --------------------------------------------------------------------------


def test_search_is_a_case_insensitive_substring_match_newest_first(db, staff_client):
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    for days, name in enumerate(["Acme Ltd", "Beta GmbH", "ACME Holdings", "Nacmed"]):
        make_account(db, name=name, created_at=start + dt.timedelta(days=days))
    db.commit()
    client = staff_client(StaffRole.VIEWER)

    response = client.get("/admin/accounts?q=acme")
    assert response.status_code == 200
    assert account_names(response.text) == ["Nacmed", "ACME Holdings", "Acme Ltd"]
    assert "3 accounts matching “acme”" in response.text
    assert account_names(client.get("/admin/accounts").text) == [
        "Nacmed",
        "ACME Holdings",
        "Beta GmbH",
        "Acme Ltd",
    ]
    assert "No accounts match “zeta”" in client.get("/admin/accounts?q=zeta").text


def test_search_treats_percent_and_underscore_literally(db, staff_client):
    for name in ["Beta_Co", "BetaXCo", "Save 100% Ltd", "Save 100 Ltd", "Back\\slash"]:
        make_account(db, name=name)
    db.commit()
    client = staff_client(StaffRole.VIEWER)
    assert account_names(client.get("/admin/accounts?q=a_c").text) == ["Beta_Co"]
    assert account_names(client.get("/admin/accounts?q=100%25").text) == ["Save 100% Ltd"]
    assert account_names(client.get("/admin/accounts?q=%25").text) == ["Save 100% Ltd"]
    assert account_names(client.get("/admin/accounts?q=k%5Cs").text) == ["Back\\slash"]


def test_search_pages_by_fifty(db, staff_client):
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(52):
        make_account(db, name=f"Customer {n:02d}", created_at=start + dt.timedelta(minutes=n))
    db.commit()
    client = staff_client(StaffRole.VIEWER)
    first = client.get("/admin/accounts?q=customer")
    assert len(account_names(first.text)) == 50
    assert account_names(first.text)[0] == "Customer 51"
    assert "Page 1 of 2" in first.text and 'rel="next"' in first.text
    second = client.get("/admin/accounts?q=customer&page=2")
    assert account_names(second.text) == ["Customer 01", "Customer 00"]
    assert "Showing 51–52 of 52" in second.text
    # Out of range pages show the nearest page rather than an error.
    assert account_names(client.get("/admin/accounts?page=99").text)[-1] == "Customer 00"


def test_a_too_long_search_says_so(db, staff_client):
    response = staff_client(StaffRole.VIEWER).get("/admin/accounts?q=" + "a" * 201)
    assert response.status_code == 400
    assert "Search for at most 200 characters." in response.text


def test_home_points_to_the_accounts(staff_client):
    page = staff_client(StaffRole.VIEWER).get("/admin/").text
    assert 'action="/admin/accounts"' in page
    assert '<a href="/admin/accounts">Accounts</a>' in page  # the navigation


# --- create and edit accounts ----------------------------------------------------------


def test_create_an_account(db, staff_client):
    manager = staff_client(StaffRole.ACCOUNT_MANAGER)
    response = submit(
        manager, "/admin/accounts/new", {"name": "  Acme Ltd ", "external_id": "cus_1"}
    )
    assert response.status_code == 303
    account = db.scalar(select(Account))
    assert (account.name, account.external_id) == ("Acme Ltd", "cus_1")
    assert response.headers["Location"] == f"/admin/accounts/{account.id}"
    [row] = audit_rows(db, "account.create")
    assert (row.actor_type, row.actor, row.outcome) == (
        "staff",
        "account_manager-0@staff.example.com",
        "created",
    )
    assert json.loads(row.detail) == {
        "account_id": account.id,
        "changes": {"name": [None, "Acme Ltd"], "external_id": [None, "cus_1"]},
    }
    assert "Account “Acme Ltd” created." in manager.get(response.headers["Location"]).text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": ""}, "Enter the account name."),
        ({"name": "   "}, "Enter the account name."),
        ({"name": "x" * 201}, "The account name can be at most 200 characters."),
        ({"name": "Acme\x07Ltd"}, "That contains invisible or control characters."),
        ({"name": "Acme\u202eLtd"}, "That contains invisible or control characters."),
        ({"name": "Acme", "external_id": "x" * 101}, "at most 100 characters"),
        ({"name": "Acme", "external_id": "taken"}, "Another record already has that external id."),
    ],
)
def test_invalid_accounts_are_refused_next_to_the_field(db, staff_client, data, message):
    make_account(db, name="Existing", external_id="taken")
    db.commit()
    response = submit(staff_client(), "/admin/accounts/new", data)
    assert response.status_code == 400
    assert message in response.text
    assert 'class="error-message"' in response.text
    assert count(db, Account) == 1
    assert audit_rows(db, "account.create") == []


def test_edit_an_account_records_old_and_new(db, staff_client):
    account = make_account(db, name="Acme", external_id="cus_1")
    db.commit()
    manager = staff_client(StaffRole.ACCOUNT_MANAGER)
    url = f"/admin/accounts/{account.id}/edit"
    assert 'value="Acme"' in manager.get(url).text
    response = submit(manager, url, {"name": "Acme Ltd", "external_id": "cus_1"})
    assert response.status_code == 303
    db.refresh(account)
    assert account.name == "Acme Ltd"
    [row] = audit_rows(db, "account.update")
    assert json.loads(row.detail)["changes"] == {"name": ["Acme", "Acme Ltd"]}

    # Saving again with nothing changed writes nothing.
    assert submit(manager, url, {"name": "Acme Ltd", "external_id": "cus_1"}).status_code == 303
    assert len(audit_rows(db, "account.update")) == 1


def test_an_invalid_edit_writes_nothing(db, staff_client):
    account = make_account(db, name="Acme")
    db.commit()
    url = f"/admin/accounts/{account.id}/edit"
    response = submit(staff_client(), url, {"name": ""})
    assert response.status_code == 400
    assert "Enter the account name." in response.text
    db.refresh(account)
    assert account.name == "Acme"
    assert audit_rows(db, "account.update") == []


def test_unknown_accounts_and_bill_groups_are_404(staff_client):
    client = staff_client()
    for url in [
        "/admin/accounts/999",
        "/admin/accounts/999/edit",
        "/admin/accounts/999/bill-groups/new",
        "/admin/bill-groups/999",
        "/admin/bill-groups/999/edit",
    ]:
        assert client.get(url).status_code == 404, url


# --- create and edit bill groups --------------------------------------------------------


def test_create_a_bill_group(db, staff_client):
    account = make_account(db, name="Acme")
    entity = make_entity(db, name="Seller Ltd")
    db.commit()
    manager = staff_client(StaffRole.ACCOUNT_MANAGER)
    url = f"/admin/accounts/{account.id}/bill-groups/new"
    assert "Seller Ltd" in manager.get(url).text
    response = submit(manager, url, group_form(entity.id))
    assert response.status_code == 303
    group = db.scalar(select(BillGroup))
    assert response.headers["Location"] == f"/admin/bill-groups/{group.id}"
    assert (group.account_id, group.entity_id, group.currency) == (account.id, entity.id, "EUR")
    assert group.billing_frequency == "quarterly"
    assert group.next_billing_date == dt.date(2026, 12, 1)
    assert group.auto_pay and group.portal_enabled
    assert (group.contract_start, group.contract_end) == (dt.date(2026, 1, 1), None)
    [row] = audit_rows(db, "bill_group.create")
    assert row.bill_group_id == group.id and row.actor_type == "staff"
    changes = json.loads(row.detail)["changes"]
    assert changes["currency"] == [None, "EUR"]
    assert changes["contract_start"] == [None, "2026-01-01"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"entity_id": ""}, "Choose an entity."),
        ({"entity_id": "999"}, "Choose an entity."),
        # Entity 1 exists: none of these is another way to write its id.
        *(({"entity_id": odd}, "Choose an entity.") for odd in ("١", "１", "+1", " 1", "1.0")),
        ({"entity_id": str(2**63)}, "Choose an entity."),
        ({"name": ""}, "Enter the bill group name."),
        ({"name": "x" * 201}, "at most 200 characters"),
        ({"name": "Acme\nEUR"}, "invisible or control characters"),
        ({"currency": ""}, "Enter the currency code."),
        ({"currency": "EURO"}, "ISO 4217"),
        ({"currency": "XYZ"}, "ISO 4217"),
        ({"billing_frequency": "weekly"}, "Not a valid choice"),
        ({"contract_start": ""}, "Enter the contract start date."),
        ({"contract_start": "2026-02-30"}, "Enter a real date"),
        ({"next_billing_date": "soon"}, "Enter a real date"),
        (
            {"contract_end": "2025-12-31"},
            "The contract end must be on or after the contract start.",
        ),
    ],
)
def test_invalid_bill_groups_are_refused_next_to_the_field(db, staff_client, overrides, message):
    account = make_account(db)
    entity = make_entity(db)
    db.commit()
    url = f"/admin/accounts/{account.id}/bill-groups/new"
    response = submit(staff_client(), url, group_form(entity.id, **overrides))
    assert response.status_code == 400
    assert message in response.text
    assert 'aria-invalid="true"' in response.text
    assert count(db, BillGroup) == 0
    assert audit_rows(db) == audit_rows(db, "staff.signin")


def test_edit_a_bill_group_records_old_and_new(db, staff_client):
    group = make_bill_group(db, name="Old name", currency="EUR")
    db.commit()
    url = f"/admin/bill-groups/{group.id}/edit"
    manager = staff_client(StaffRole.ACCOUNT_MANAGER)
    assert 'value="Old name"' in manager.get(url).text
    data = group_form(
        group.entity_id,
        name="New name",
        currency="GBP",
        billing_frequency="monthly",
        contract_start=group.contract_start.isoformat(),
        contract_end="2027-12-31",
        next_billing_date="",
        auto_pay="",
    )
    response = submit(manager, url, data)
    assert response.status_code == 303
    db.refresh(group)
    assert (group.name, group.currency, group.contract_end) == (
        "New name",
        "GBP",
        dt.date(2027, 12, 31),
    )
    [row] = audit_rows(db, "bill_group.update")
    assert row.bill_group_id == group.id
    assert json.loads(row.detail)["changes"] == {
        "name": ["Old name", "New name"],
        "currency": ["EUR", "GBP"],
        "contract_end": [None, "2027-12-31"],
    }


def test_the_currency_cannot_change_once_there_are_invoices(db, staff_client):
    group = make_bill_group(db, currency="EUR")
    other_entity = make_entity(db, name="Other seller")
    make_invoice(db, group)
    db.commit()
    url = f"/admin/bill-groups/{group.id}/edit"
    data = group_form(group.entity_id, contract_start=group.contract_start.isoformat())
    response = submit(staff_client(), url, data | {"currency": "USD", "name": "Renamed"})
    assert response.status_code == 400
    assert "This bill group already has invoices in EUR, so its currency cannot change." in (
        response.text
    )
    response = submit(staff_client(), url, data | {"entity_id": str(other_entity.id)})
    assert response.status_code == 400
    assert "so its entity cannot change" in response.text
    db.refresh(group)
    assert (group.currency, group.entity_id) != ("USD", other_entity.id)
    assert group.name != "Renamed"
    assert audit_rows(db, "bill_group.update") == []

    # Other changes still go through when the currency stays.
    assert submit(staff_client(), url, data | {"name": "Renamed"}).status_code == 303
    db.refresh(group)
    assert (group.name, group.currency) == ("Renamed", "EUR")


# --- account overview ------------------------------------------------------------------


def customer_session(db, group, email, created_at):
    db.add(
        CustomerSession(
            sid_hash=secrets.token_hex(32),
            bill_group_id=group.id,
            email=email,
            created_at=created_at,
            last_seen_at=created_at,
            expires_at=created_at + dt.timedelta(hours=8),
        )
    )


def overview_rows(html):
    rows = re.findall(r"<tr>\s*<th scope=\"row\" data-label=\"Bill group\">(.*?)</tr>", html, re.S)
    result = {}
    for row in rows:
        name = re.search(r">([^<]+)</a>", row).group(1)
        cells = dict(re.findall(r'<td data-label="([^"]+)"[^>]*>(.*?)</td>', row, re.S))
        result[name] = {k: " ".join(re.sub(r"<[^>]+>", " ", v).split()) for k, v in cells.items()}
    return result


def test_the_account_overview_lists_bill_groups_with_their_status(db, staff_client):
    account = make_account(db, name="Acme")
    live = make_bill_group(db, account=account, name="A live", currency="EUR")
    off = make_bill_group(db, account=account, name="B off", currency="GBP", portal_enabled=False)
    make_bill_group(
        db,
        account=account,
        name="C ended",
        contract_end=dt.date(2020, 1, 1),
        contract_start=dt.date(2019, 1, 1),
    )
    elsewhere = make_bill_group(db, name="Other account's group")
    add_rule(db, live, "acme.com", created_by="test")
    add_rule(db, live, "cfo@acme-holdings.com", created_by="test")
    add_rule(db, off, "acme.com", created_by="test")
    add_rule(db, elsewhere, "other.com", created_by="test")
    at = dt.datetime(2026, 3, 4, 9, 30, tzinfo=UTC)
    customer_session(db, live, "ap@acme.com", at - dt.timedelta(days=3))
    customer_session(db, live, "cfo@acme-holdings.com", at)
    customer_session(db, elsewhere, "x@other.com", at + dt.timedelta(days=1))
    db.commit()

    page = staff_client(StaffRole.VIEWER).get(f"/admin/accounts/{account.id}")
    assert page.status_code == 200
    rows = overview_rows(page.text)
    assert list(rows) == ["A live", "B off", "C ended"]
    assert rows["A live"]["Currency"] == "EUR"
    assert rows["A live"]["Frequency"] == "Monthly"
    assert rows["A live"]["Portal"] == "Available Enabled, contract active"
    assert rows["B off"]["Portal"] == "Not available Disabled, contract active"
    assert rows["C ended"]["Portal"] == "Not available Enabled, contract not active"
    assert [rows[n]["Access rules"] for n in rows] == ["2", "1", "0"]
    assert rows["A live"]["Last customer sign-in"] == "4 Mar 2026, 09:30 UTC"
    assert rows["B off"]["Last customer sign-in"] == "Never"


def test_the_account_overview_takes_the_same_statements_for_any_number_of_groups(
    app, db, staff_client
):
    small, large = make_account(db), make_account(db)
    entity = make_entity(db)
    make_bill_group(db, account=small, entity=entity)
    for n in range(6):
        group = make_bill_group(db, account=large, entity=entity)
        add_rule(db, group, f"a{n}.example.com", created_by="test")
        customer_session(db, group, f"x@a{n}.example.com", dt.datetime(2026, 1, 1, tzinfo=UTC))
    db.commit()
    client = staff_client(StaffRole.VIEWER)
    client.get(f"/admin/accounts/{small.id}")  # warm up

    def statements(url):
        seen = []

        def count_it(conn, cursor, statement, *args):
            seen.append(statement)

        with app.app_context():
            engine = portal_db.engine()
        event.listen(engine, "before_cursor_execute", count_it)
        try:
            assert client.get(url).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", count_it)
        return len(seen)

    assert statements(f"/admin/accounts/{large.id}") == statements(f"/admin/accounts/{small.id}")


# --- the bill group page ---------------------------------------------------------------


def test_the_bill_group_page_shows_the_portal_link_from_the_base_url(app, db, staff_client):
    group = make_bill_group(db, name="Acme EUR")
    db.commit()
    client = staff_client(StaffRole.VIEWER)
    # The staff cookie also for the hostile host, so the request is served as staff.
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    client.set_cookie(cookie.key, cookie.value, domain="evil.example.net")
    page = client.get(
        f"/admin/bill-groups/{group.id}",
        headers={"Host": "evil.example.net", "X-Forwarded-Host": "evil.example.org"},
    )
    assert page.status_code == 200
    link = f"https://portal.example.test/p/{group.public_id}"
    assert f'value="{link}"' in page.text
    assert "evil.example" not in page.text
    assert "readonly" in page.text and '<label for="portal-link"' in page.text
    assert 'data-copy-target="portal-link"' in page.text and "Copy portal link" in page.text
    assert 'data-copy-done="Portal link copied"' in page.text
    assert 'id="portal-link-status" class="copy-status" role="status" aria-live="polite"' in (
        page.text
    )
    assert '<script src="/static/copy.js" defer></script>' in page.text
    assert "<script>" not in page.text  # the CSP forbids inline scripts


def test_the_bill_group_page_summarises_the_group(db, staff_client):
    entity = make_entity(db, name="Seller Ltd")
    account = make_account(db, name="Acme")
    group = make_bill_group(
        db,
        account=account,
        entity=entity,
        currency="GBP",
        contract_start=dt.date(2020, 1, 1),
        contract_end=dt.date(2021, 1, 1),
    )
    db.commit()
    page = staff_client(StaffRole.VIEWER).get(f"/admin/bill-groups/{group.id}").text
    for text in ["Acme", "Seller Ltd", "GBP", "Monthly", "1 Jan 2020 to 1 Jan 2021", "Not active"]:
        assert text in page
    assert "Nobody can sign in with this link today: the contract is not active." in page


def test_edit_and_portal_buttons_show_only_to_roles_that_may(app, db, staff_client):
    group = make_bill_group(db)
    db.commit()
    url = f"/admin/bill-groups/{group.id}"
    viewer = staff_client(StaffRole.VIEWER).get(url).text
    manager = staff_client(StaffRole.ACCOUNT_MANAGER).get(url).text
    assert f"/admin/bill-groups/{group.id}/edit" not in viewer
    assert "Disable portal" not in viewer
    assert f"/admin/bill-groups/{group.id}/edit" in manager
    assert "Disable portal" in manager
    ids = re.findall(r'\sid="([^"]+)"', manager)
    assert len(ids) == len(set(ids))
    if "admin.bill_group_access" in app.view_functions:
        assert f"/admin/bill-groups/{group.id}/access" in manager


def test_enable_and_disable_the_portal(db, staff_client):
    group = make_bill_group(db)
    db.commit()
    manager = staff_client(StaffRole.ACCOUNT_MANAGER)
    url = f"/admin/bill-groups/{group.id}"

    response = manager.post(
        f"{url}/portal/disable", data={"csrf_token": csrf_token(manager.get(url).text)}
    )
    assert response.status_code == 303 and response.headers["Location"] == url
    db.refresh(group)
    assert group.portal_enabled is False
    [row] = audit_rows(db, "portal.disable")
    assert (row.actor_type, row.bill_group_id) == ("staff", group.id)
    assert row.actor == "account_manager-0@staff.example.com"
    assert json.loads(row.detail)["changes"] == {"portal_enabled": [True, False]}
    page = manager.get(url).text
    assert "Portal disabled." in page and "Enable portal" in page

    response = manager.post(f"{url}/portal/enable", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 303
    db.refresh(group)
    assert group.portal_enabled is True
    assert len(audit_rows(db, "portal.enable")) == 1
    assert "Portal enabled." in manager.get(url).text

    # Enabling again changes nothing and writes no second row.
    manager.post(f"{url}/portal/enable", data={"csrf_token": csrf_token(page)})
    assert len(audit_rows(db, "portal.enable")) == 1


def test_a_viewer_cannot_switch_the_portal(db, staff_client):
    group = make_bill_group(db)
    db.commit()
    viewer = staff_client(StaffRole.VIEWER)
    url = f"/admin/bill-groups/{group.id}"
    token = csrf_token(viewer.get(url).text)
    for action in ("disable", "enable"):
        assert viewer.post(f"{url}/portal/{action}", data={"csrf_token": token}).status_code == 403
    db.refresh(group)
    assert group.portal_enabled is True
    assert audit_rows(db, "portal.disable") == audit_rows(db, "portal.enable") == []


def test_every_post_without_its_csrf_token_is_refused(db, staff_client):
    group = make_bill_group(db)
    db.commit()
    admin = staff_client()
    posts = {
        "/admin/accounts/new": {"name": "Acme"},
        f"/admin/accounts/{group.account_id}/edit": {"name": "Renamed"},
        f"/admin/accounts/{group.account_id}/bill-groups/new": group_form(group.entity_id),
        f"/admin/bill-groups/{group.id}/edit": group_form(group.entity_id, name="Renamed"),
        f"/admin/bill-groups/{group.id}/portal/disable": {},
        f"/admin/bill-groups/{group.id}/portal/enable": {},
    }
    for url, data in posts.items():
        response = admin.post(url, data=data)
        assert response.status_code == 400, url
        assert "This form has expired" in response.text
        bad = admin.post(url, data=data | {"csrf_token": "forged"})
        assert bad.status_code == 400, url
    assert count(db, Account) == 1 and count(db, BillGroup) == 1
    db.refresh(group)
    assert group.portal_enabled and group.name != "Renamed"
    assert [e.action for e in audit_rows(db)] == ["staff.signin"]


def test_copy_js_is_served_as_javascript(client):
    with client.get("/static/copy.js") as response:
        assert response.status_code == 200
        assert response.mimetype in ("text/javascript", "application/javascript")
        assert "navigator.clipboard.writeText" in response.text
        assert 'execCommand("copy")' in response.text
