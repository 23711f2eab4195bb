"""The flask commands: demo data a newcomer can use, and staff users."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select

from portal import bank
from portal.access import may_access
from portal.config import settings_of
from portal.models import BillGroup, Entity, Invoice, StaffRole, StaffUser
from tests.import_helpers import counts


def count(db, model) -> int:
    return db.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize(
    "command",
    [
        ["demo"],
        ["create-staff"],
        ["db"],
        ["db", "upgrade"],
        ["db", "downgrade"],
        ["db", "revision"],
    ],
)
def test_every_command_has_help(runner, command):
    result = runner.invoke(args=[*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_demo_loads_a_realistic_dataset(runner, db):
    result = runner.invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    loaded = counts(db)
    entity = db.scalar(select(Entity))
    assert entity.logo.startswith(b"\x89PNG") and entity.logo_type == "image/png"
    assert loaded["entity"] == 1
    assert loaded["account"] == 3
    assert loaded["bill_group"] == 5
    assert len(set(db.scalars(select(BillGroup.currency)))) >= 2
    assert loaded["invoice"] >= 60
    assert loaded["invoice_line"] > loaded["invoice"]
    assert loaded["payment"] > 0
    assert loaded["subscription"] >= 5
    assert loaded["contact"] == 10
    assert loaded["payment_method"] >= 4
    assert db.scalar(select(StaffUser)).role == StaffRole.ADMIN
    today = dt.date.today()
    statuses = {invoice.display_status(today) for invoice in db.scalars(select(Invoice))}
    assert {"paid", "open", "overdue", "void"} <= {str(s) for s in statuses}
    for invoice in db.scalars(select(Invoice)):
        assert invoice.total_minor == sum(x.amount_minor + x.tax_minor for x in invoice.lines)
        assert invoice.amount_paid_minor == sum(a.amount_minor for a in invoice.applications)
    # An open EUR invoice whose page and PDF show the EPC payment QR code.
    transfers = [bank.transfer_for(invoice) for invoice in db.scalars(select(Invoice))]
    assert any(t is not None and t.epc_payload is not None for t in transfers)


def test_demo_prints_working_links_and_addresses(runner, db, app):
    output = runner.invoke(args=["demo"]).output
    base = settings_of(app).PORTAL_BASE_URL
    today = dt.date.today()
    for group in db.scalars(select(BillGroup)):
        block = output.split(f"{base}/p/{group.public_id}", 1)
        assert len(block) == 2, f"no link for {group.name}"
        email = re.search(r"sign in as:\s+(\S+)", block[1]).group(1)
        if group.portal_available(today):
            assert may_access(group, email, today) is not None, email
        else:
            assert "not available" in block[0].rsplit("\n", 2)[-2]
    staff = db.scalar(select(StaffUser))
    assert staff.email in output
    password = re.search(rf"{re.escape(staff.email)} / (\S+)", output).group(1)
    assert staff.check_password(password)


def test_demo_customer_has_a_second_bill_group_of_the_same_seller(runner, db):
    """`make demo` shows the switcher: ap@acme.com reaches Acme's GBP and USD groups."""
    output = runner.invoke(args=["demo"]).output
    assert (
        "One sign-in, several bill groups: ap@acme.com reaches "
        "Acme UK operations (GBP) and Acme US operations (USD)"
    ) in output


def test_demo_twice_loads_once_and_reset_starts_again(runner, db):
    runner.invoke(args=["demo"])
    invoices = count(db, Invoice)
    again = runner.invoke(args=["demo"])
    assert again.exit_code == 0
    assert "already loaded" in again.output
    assert count(db, Invoice) == invoices
    ids = set(db.scalars(select(BillGroup.public_id)))
    reset = runner.invoke(args=["demo", "--reset"])
    assert reset.exit_code == 0, reset.output
    db.expire_all()
    assert count(db, Invoice) == invoices
    assert set(db.scalars(select(BillGroup.public_id))).isdisjoint(ids)


def test_create_staff_reads_the_password_from_stdin(runner, db):
    result = runner.invoke(
        args=["create-staff", "Ops@Example.COM", "--role", "viewer", "--password-stdin"],
        input="correct horse battery staple\n",
    )
    assert result.exit_code == 0, result.output
    user = db.scalar(select(StaffUser))
    assert (user.email, user.role) == ("ops@example.com", StaffRole.VIEWER)
    assert "correct horse" not in user.password_hash
    assert user.password_hash.startswith("scrypt:")
    assert user.check_password("correct horse battery staple")
    assert not user.check_password("wrong password entirely")


def test_create_staff_prompts_with_confirmation(runner, db):
    result = runner.invoke(
        args=["create-staff", "admin@example.com"], input="a long passphrase\na long passphrase\n"
    )
    assert result.exit_code == 0, result.output
    assert db.scalar(select(StaffUser)).role == StaffRole.ADMIN


def test_create_staff_never_takes_a_password_in_argv(runner, db):
    result = runner.invoke(args=["create-staff", "a@example.com", "--password", "x" * 20])
    assert result.exit_code == 2
    assert "No such option" in result.output
    assert count(db, StaffUser) == 0


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["create-staff", "a@example.com", "--password-stdin"], "short\n", "at least 12"),
        (["create-staff", "not-an-email", "--password-stdin"], "x" * 20 + "\n", "EMAIL"),
        (["create-staff", "a@example.com", "--role", "root"], "", "root"),
    ],
)
def test_create_staff_refuses_bad_input(runner, db, args, stdin, message):
    result = runner.invoke(args=args, input=stdin)
    assert result.exit_code != 0
    assert message in result.output
    assert count(db, StaffUser) == 0


def test_create_staff_refuses_a_duplicate(runner, db):
    args = ["create-staff", "a@example.com", "--password-stdin"]
    assert runner.invoke(args=args, input="x" * 20 + "\n").exit_code == 0
    result = runner.invoke(
        args=["create-staff", "A@example.com", "--password-stdin"], input="y" * 20
    )
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert count(db, StaffUser) == 1
    assert db.scalar(select(StaffUser)).check_password("x" * 20)


def test_create_api_key_prints_a_working_key_once(app, runner, db):
    from sqlalchemy import select

    from portal.models import ApiKey
    from portal.signin import sha256

    result = runner.invoke(args=["create-api-key", "billing system", "--scope", "read"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    row = db.scalar(select(ApiKey))
    assert row.key_hash == sha256(key) and row.scopes == "read"
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/accounts", headers=headers).status_code == 200
    assert client.put("/api/v1/accounts/a", json={"name": "A"}, headers=headers).status_code == 403
    refused = runner.invoke(args=["create-api-key", " "])
    assert refused.exit_code == 2 and "name" in refused.output


def test_the_demo_has_a_subscription_with_changes_allowed_and_a_catalogue(runner, db):
    from portal import subscriptions
    from portal.models import Plan, Subscription

    assert runner.invoke(args=["demo"]).exit_code == 0
    plans = db.scalars(select(Plan).order_by(Plan.price_minor)).all()
    assert [p.name for p in plans] == ["Starter", "Team", "Business"]
    main = db.scalar(select(Subscription).where(Subscription.external_id == "demo-sub-acme-uk"))
    kinds = {k.value for k in subscriptions.allowed_kinds(main, main.bill_group.entity)}
    assert {"plan", "quantity", "pause", "cancel_now", "cancel_at_term_end"} <= kinds
    trial = db.scalar(
        select(Subscription).where(Subscription.external_id == "demo-sub-acme-uk-trial")
    )
    assert {"convert_trial", "extend_trial"} <= {
        k.value for k in subscriptions.allowed_kinds(trial, trial.bill_group.entity)
    }
