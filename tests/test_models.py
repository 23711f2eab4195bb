"""The billing model against a real database: constraints, hybrids, types, indexes, cascades.

Every test here uses the `db` fixture, so it runs on SQLite and, with
PORTAL_TEST_DATABASE_URL set and `-m db`, on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.exc import DataError, IntegrityError, StatementError
from sqlalchemy.orm import Session

from portal.db import utcnow
from portal.models import (
    AccessRule,
    BillGroup,
    Contact,
    ContactKind,
    DisplayStatus,
    Entity,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Payment,
    PaymentApplication,
    PaymentMethod,
    PaymentStatus,
    Product,
    RuleKind,
    Subscription,
    SubscriptionItem,
    SubscriptionStatus,
)
from portal.models.account import BillingFrequency
from tests.factories import (
    TODAY,
    make_bill_group,
    make_entity,
    make_invoice,
    make_payment_method,
)

DAY = dt.timedelta(days=1)


def assert_refused(
    db: Session,
    action: Callable[[], object],
    constraint: str,
    *,
    sqlite: str | None = None,
    too_long_on_postgresql: bool = False,
) -> None:
    """`action` plus a flush fails in the database, on the constraint named.

    PostgreSQL names every constraint in its message; SQLite names CHECK constraints
    but reports UNIQUE and FOREIGN KEY failures by column, hence `sqlite`. A value longer
    than a VARCHAR is refused by PostgreSQL's type before any CHECK runs.
    """
    dialect = db.get_bind().dialect.name
    with pytest.raises((IntegrityError, DataError)) as info:
        action()
        db.flush()
    db.rollback()
    message = str(info.value.orig)
    if dialect == "postgresql" and too_long_on_postgresql:
        assert isinstance(info.value, DataError), message
        assert "value too long" in message
    elif dialect == "sqlite" and sqlite is not None:
        assert isinstance(info.value, IntegrityError), message
        assert sqlite in message
    else:
        assert isinstance(info.value, IntegrityError), message
        assert constraint in message


def new_invoice(group: BillGroup, number: str, **overrides: Any) -> Invoice:
    """An invoice set up by column values only, so the ORM copies nothing from the group."""
    values: dict[str, Any] = {
        "bill_group_id": group.id,
        "entity_id": group.entity_id,
        "currency": group.currency,
        "number": number,
        "status": InvoiceStatus.OPEN,
        "issue_date": TODAY,
        "due_date": TODAY + 30 * DAY,
    }
    return Invoice(**(values | overrides))


# --- uniqueness -------------------------------------------------------------------------


def test_invoice_number_is_unique_per_entity(db):
    group = make_bill_group(db)
    make_invoice(db, group, number="INV-000001")
    db.commit()

    assert_refused(
        db,
        lambda: make_invoice(db, group, number="INV-000001"),
        "uq_invoices_entity_id_number",
        sqlite="UNIQUE constraint failed: invoices.entity_id, invoices.number",
    )
    assert db.scalar(select(func.count()).select_from(Invoice)) == 1


def test_the_same_invoice_number_under_another_entity_is_fine(db):
    first = make_invoice(db, number="INV-000001")
    second = make_invoice(db, number="INV-000001")
    db.commit()

    assert first.entity_id != second.entity_id
    numbers = db.scalars(select(Invoice.number).order_by(Invoice.id)).all()
    assert numbers == ["INV-000001", "INV-000001"]


def test_a_bill_group_has_at_most_one_default_payment_method(db):
    group = make_bill_group(db)
    make_payment_method(db, group, is_default=True)
    # The index is partial: any number of non-default methods may sit beside it.
    make_payment_method(db, group)
    make_payment_method(db, group)
    db.commit()

    assert_refused(
        db,
        lambda: make_payment_method(db, group, is_default=True),
        "uq_payment_methods_one_default",
        sqlite="UNIQUE constraint failed: payment_methods.bill_group_id",
    )
    defaults = db.scalar(
        select(func.count()).select_from(PaymentMethod).where(PaymentMethod.is_default)
    )
    assert defaults == 1


def test_defaults_in_two_bill_groups_and_default_payment_method(db):
    first, second, without_default, without_methods = (make_bill_group(db) for _ in range(4))
    make_payment_method(db, first)
    first_default = make_payment_method(db, first, is_default=True)
    make_payment_method(db, first)
    second_default = make_payment_method(db, second, is_default=True)
    make_payment_method(db, without_default)
    db.commit()
    db.expire_all()

    assert first.default_payment_method == first_default
    assert second.default_payment_method == second_default
    assert without_default.default_payment_method is None
    assert without_methods.default_payment_method is None
    assert len(first.payment_methods) == 3


# --- the composite foreign key keeps invoices in their bill group's entity and currency ---


def test_an_invoice_matching_its_bill_group_is_accepted(db):
    group = make_bill_group(db, currency="GBP")
    make_entity(db)
    db.add(new_invoice(group, "INV-1"))
    db.commit()

    invoice = db.scalars(select(Invoice)).one()
    assert (invoice.entity_id, invoice.currency) == (group.entity_id, "GBP")
    assert invoice.bill_group == group


@pytest.mark.parametrize("field", ["entity_id", "currency"])
def test_an_invoice_in_another_entity_or_currency_than_its_bill_group_is_refused(db, field):
    group = make_bill_group(db, currency="EUR")
    # A real entity and a well-formed currency, so only the composite key can object.
    other_entity = make_entity(db)
    db.commit()
    mismatch = {"entity_id": other_entity.id, "currency": "USD"}[field]

    assert_refused(
        db,
        lambda: db.add(new_invoice(group, "INV-1", **{field: mismatch})),
        "fk_invoices_bill_group",
        sqlite="FOREIGN KEY constraint failed",
    )
    assert db.scalar(select(func.count()).select_from(Invoice)) == 0


# --- CHECK constraints ------------------------------------------------------------------


def _access_rule(db: Session) -> AccessRule:
    rule = AccessRule(
        bill_group=make_bill_group(db),
        kind=RuleKind.EMAIL,
        value="ap@customer.example.com",
        created_by="staff@seller.example.com",
    )
    db.add(rule)
    db.flush()
    return rule


def _payment_method(db: Session) -> PaymentMethod:
    return make_payment_method(db, make_bill_group(db))


# (builds a valid row, changes that make it invalid, the CHECK constraint, too long for
# PostgreSQL's VARCHAR)
CHECK_CASES = [
    pytest.param(
        make_invoice,
        lambda i: {"total_minor": i.subtotal_minor + i.tax_minor + 1},
        "ck_invoices_total",
        False,
        id="invoice-total-is-not-subtotal-plus-tax",
    ),
    pytest.param(
        make_invoice,
        lambda i: {"amount_paid_minor": i.total_minor + 1},
        "ck_invoices_paid",
        False,
        id="invoice-paid-more-than-total",
    ),
    pytest.param(
        make_invoice,
        lambda i: {"amount_paid_minor": -1},
        "ck_invoices_paid",
        False,
        id="invoice-paid-negative",
    ),
    pytest.param(
        make_invoice,
        lambda i: {"status": InvoiceStatus.PAID, "amount_paid_minor": i.total_minor - 1},
        "ck_invoices_paid_in_full",
        False,
        id="invoice-paid-status-but-not-paid-in-full",
    ),
    pytest.param(
        make_invoice,
        lambda i: {"due_date": i.issue_date - DAY},
        "ck_invoices_dates",
        False,
        id="invoice-due-before-issue",
    ),
    pytest.param(
        _payment_method,
        lambda m: {"last4": "42424"},
        "ck_payment_methods_last4",
        True,
        id="last4-of-5-characters",
    ),
    pytest.param(
        _payment_method,
        lambda m: {"last4": "4242424242424242"},
        "ck_payment_methods_last4",
        True,
        id="last4-is-a-full-card-number",
    ),
    pytest.param(
        _payment_method,
        lambda m: {"last4": "424"},
        "ck_payment_methods_last4",
        False,
        id="last4-of-3-characters",
    ),
    pytest.param(
        _payment_method,
        lambda m: {"exp_month": 13},
        "ck_payment_methods_expiry",
        False,
        id="expiry-month-13",
    ),
    pytest.param(
        _payment_method,
        lambda m: {"exp_month": 0},
        "ck_payment_methods_expiry",
        False,
        id="expiry-month-0",
    ),
    pytest.param(
        _payment_method,
        lambda m: {"exp_year": None},
        "ck_payment_methods_expiry",
        False,
        id="expiry-month-without-year",
    ),
    pytest.param(
        _payment_method,
        lambda m: {"exp_month": None},
        "ck_payment_methods_expiry",
        False,
        id="expiry-year-without-month",
    ),
    pytest.param(
        _access_rule,
        lambda r: {"include_subdomains": True},
        "ck_access_rules_subdomains_on_domain",
        False,
        id="include-subdomains-on-an-email-rule",
    ),
    pytest.param(
        _access_rule,
        lambda r: {"value": "AP@customer.example.com"},
        "ck_access_rules_value_lower",
        False,
        id="access-rule-not-lower-case",
    ),
    pytest.param(
        make_bill_group,
        lambda g: {"contract_end": g.contract_start - DAY},
        "ck_bill_groups_contract_dates",
        False,
        id="contract-ends-before-it-starts",
    ),
    pytest.param(
        make_bill_group,
        lambda g: {"currency": "eur"},
        "ck_bill_groups_currency",
        False,
        id="currency-lower-case",
    ),
    pytest.param(
        make_bill_group,
        lambda g: {"currency": "Eur"},
        "ck_bill_groups_currency",
        False,
        id="currency-mixed-case",
    ),
    pytest.param(
        make_bill_group,
        lambda g: {"currency": "EU"},
        "ck_bill_groups_currency",
        False,
        id="currency-of-2-letters",
    ),
    pytest.param(
        make_entity,
        lambda e: {"brand_colour": "2f5bea"},
        "ck_entities_brand_colour",
        False,
        id="brand-colour-without-hash",
    ),
    pytest.param(
        make_entity,
        lambda e: {"brand_colour": "#2f5be"},
        "ck_entities_brand_colour",
        False,
        id="brand-colour-too-short",
    ),
    pytest.param(
        make_entity,
        lambda e: {"brand_colour": "#2f5beaa"},
        "ck_entities_brand_colour",
        True,
        id="brand-colour-too-long",
    ),
    pytest.param(
        make_entity,
        lambda e: {"brand_colour": "#zzzzzz"},
        "ck_entities_brand_colour",
        False,
        id="brand-colour-not-hex",
    ),
    pytest.param(
        make_entity,
        lambda e: {"brand_colour": "#f00;x:"},
        "ck_entities_brand_colour",
        False,
        id="brand-colour-css-injection",
    ),
    pytest.param(
        make_entity,
        lambda e: {"brand_colour": "# 2f5be"},
        "ck_entities_brand_colour",
        False,
        id="brand-colour-with-space",
    ),
]


@pytest.mark.parametrize(("build", "changes", "constraint", "too_long"), CHECK_CASES)
def test_check_constraints_refuse_invalid_rows(db, build, changes, constraint, too_long):
    row = build(db)
    # The row was valid before the change, so the refusal is the change's.
    db.commit()
    values = changes(row)

    def change() -> None:
        for name, value in values.items():
            setattr(row, name, value)

    assert_refused(db, change, constraint, too_long_on_postgresql=too_long)


def test_check_constraints_admit_the_boundary_values(db):
    group = make_bill_group(db, contract_start=TODAY, contract_end=TODAY, currency="JPY")
    make_entity(db, brand_colour="#000000")
    make_entity(db, brand_colour="#FFFFFF")
    make_entity(db, brand_colour="#09afAF")
    make_payment_method(db, group, last4="0000", exp_month=1, exp_year=2000)
    make_payment_method(db, group, last4="9999", exp_month=12, exp_year=2200)
    make_payment_method(db, group, exp_month=None, exp_year=None)
    make_invoice(db, group, status=InvoiceStatus.PAID, issue_date=TODAY, due_date=TODAY)
    make_invoice(db, group, lines=[("Free trial", "1", 0, 0)])
    db.add(
        AccessRule(
            bill_group=group,
            kind=RuleKind.DOMAIN,
            value="customer.example.com",
            include_subdomains=True,
            created_by="staff@seller.example.com",
        )
    )
    db.commit()

    assert db.scalar(select(func.count()).select_from(Entity)) == 4
    assert db.scalar(select(func.count()).select_from(PaymentMethod)) == 3
    assert db.scalar(select(func.count()).select_from(Invoice)) == 2
    assert db.scalar(select(func.count()).select_from(AccessRule)) == 1


# --- contract and portal availability: Python and SQL agree ------------------------------

T = TODAY
# name: (contract_start, contract_end, portal_enabled,
#        has_active_contract on T-1, T, T+1, portal_available on T-1, T, T+1)
CONTRACTS = {
    "open-ended, starts today": (T, None, True, "011", "011"),
    "starts tomorrow": (T + DAY, None, True, "001", "001"),
    "ends today": (T - 30 * DAY, T, True, "110", "110"),
    "ended yesterday": (T - 30 * DAY, T - DAY, True, "100", "100"),
    "one day, today": (T, T, True, "010", "010"),
    "running, portal disabled": (T - 30 * DAY, T + 30 * DAY, False, "111", "000"),
    "ended today, portal disabled": (T - 30 * DAY, T, False, "110", "000"),
    "running for years": (T - 3650 * DAY, None, True, "111", "111"),
    "runs for years more": (T - 365 * DAY, T + 3650 * DAY, True, "111", "111"),
}
DAYS = (T - DAY, T, T + DAY)


def test_contract_and_portal_availability_agree_in_python_and_sql(db):
    groups = {
        name: make_bill_group(db, contract_start=start, contract_end=end, portal_enabled=enabled)
        for name, (start, end, enabled, _, _) in CONTRACTS.items()
    }
    db.commit()
    db.expire_all()

    for position, today in enumerate(DAYS):
        expected_active = {n for n, case in CONTRACTS.items() if case[3][position] == "1"}
        expected_available = {n for n, case in CONTRACTS.items() if case[4][position] == "1"}
        names = {group.id: name for name, group in groups.items()}

        python_active = {n for n, g in groups.items() if g.has_active_contract(today)}
        python_available = {n for n, g in groups.items() if g.portal_available(today)}
        sql_active = {
            names[i]
            for i in db.scalars(select(BillGroup.id).where(BillGroup.has_active_contract(today)))
        }
        sql_available = {
            names[i]
            for i in db.scalars(select(BillGroup.id).where(BillGroup.portal_available(today)))
        }

        assert python_active == expected_active, today
        assert sql_active == expected_active, today
        assert python_available == expected_available, today
        assert sql_available == expected_available, today


# --- balances and display status --------------------------------------------------------


def test_balance_agrees_in_python_and_sql(db):
    group = make_bill_group(db)
    other = make_bill_group(db)
    draft = make_invoice(db, group, status=InvoiceStatus.DRAFT)
    void = make_invoice(db, group, status=InvoiceStatus.VOID, amount_paid_minor=3000)
    paid = make_invoice(db, group, status=InvoiceStatus.PAID)
    part_paid = make_invoice(db, group, amount_paid_minor=5000)
    unpaid = make_invoice(db, group)
    make_invoice(db, other)
    db.commit()
    db.expire_all()

    # Each factory invoice totals 12000: 10000 plus 20 % tax.
    expected = {draft.id: 0, void.id: 0, paid.id: 0, part_paid.id: 7000, unpaid.id: 12000}
    python = {i.id: i.balance_minor for i in (draft, void, paid, part_paid, unpaid)}
    sql = dict(
        db.execute(
            select(Invoice.id, Invoice.balance_minor).where(Invoice.bill_group_id == group.id)
        ).all()
    )
    total = db.scalar(
        select(func.sum(Invoice.balance_minor)).where(Invoice.bill_group_id == group.id)
    )

    assert python == expected
    assert sql == expected
    assert total == 19000
    everything = db.scalar(select(func.sum(Invoice.balance_minor)))
    assert everything == 19000 + 12000


@pytest.mark.parametrize(
    ("status", "due_date", "expected"),
    [
        (InvoiceStatus.OPEN, T - DAY, DisplayStatus.OVERDUE),
        (InvoiceStatus.OPEN, T - 400 * DAY, DisplayStatus.OVERDUE),
        (InvoiceStatus.OPEN, T, DisplayStatus.OPEN),
        (InvoiceStatus.OPEN, T + DAY, DisplayStatus.OPEN),
        (InvoiceStatus.PAID, T - DAY, DisplayStatus.PAID),
        (InvoiceStatus.DRAFT, T - DAY, DisplayStatus.DRAFT),
        (InvoiceStatus.VOID, T - DAY, DisplayStatus.VOID),
    ],
    ids=[
        "open-due-yesterday",
        "open-due-long-ago",
        "open-due-today",
        "open-due-tomorrow",
        "paid-past-due",
        "draft-past-due",
        "void-past-due",
    ],
)
def test_display_status(db, status, due_date, expected):
    invoice = make_invoice(db, status=status, issue_date=due_date - 30 * DAY, due_date=due_date)
    db.commit()
    db.expire_all()

    assert invoice.display_status(T) is expected


# --- types ------------------------------------------------------------------------------


def test_utc_datetime_round_trips_an_aware_datetime(db):
    new_york_evening = dt.datetime(
        2026, 11, 21, 23, 30, 15, 123456, tzinfo=dt.timezone(-5 * dt.timedelta(hours=1))
    )
    invoice = make_invoice(db, status=InvoiceStatus.VOID, voided_at=new_york_evening)
    db.commit()
    db.expire(invoice)

    loaded = invoice.voided_at  # read back from the database
    assert loaded == new_york_evening
    assert loaded == dt.datetime(2026, 11, 22, 4, 30, 15, 123456, tzinfo=dt.UTC)
    assert loaded.utcoffset() == dt.timedelta(0)
    # Aware values bind the same way in a WHERE clause, whatever their zone.
    found = db.scalars(select(Invoice.id).where(Invoice.voided_at == new_york_evening)).all()
    assert found == [invoice.id]
    assert invoice.created_at.tzinfo is not None
    assert abs(utcnow() - invoice.created_at) < dt.timedelta(minutes=5)


def test_utc_datetime_refuses_a_naive_datetime(db):
    invoice = make_invoice(db)
    db.commit()

    invoice.voided_at = dt.datetime(2026, 11, 21, 12, 0)
    with pytest.raises(StatementError) as info:
        db.flush()
    db.rollback()
    assert isinstance(info.value.orig, ValueError)
    assert "naive" in str(info.value.orig)

    with pytest.raises(StatementError) as info:
        db.execute(select(Invoice.id).where(Invoice.voided_at < dt.datetime(2026, 1, 1)))
    db.rollback()
    assert isinstance(info.value.orig, ValueError)
    db.expire_all()
    assert invoice.voided_at is None


# --- totals and money -------------------------------------------------------------------


def test_recalculate_sums_the_lines(db):
    invoice = make_invoice(
        db, lines=[("Licences", "3", 2500, 2000), ("Support hours", "1.5", 8000, 0)]
    )
    db.commit()
    db.expire(invoice)
    # 3 x 2500 = 7500 with 1500 tax; 1.5 x 8000 = 12000 without.
    assert (invoice.subtotal_minor, invoice.tax_minor, invoice.total_minor) == (19500, 1500, 21000)

    invoice.lines.append(
        InvoiceLine(
            position=3,
            description="Setup",
            quantity=Decimal("1"),
            unit_price_minor=500,
            amount_minor=500,
            tax_rate_bp=2000,
            tax_minor=100,
        )
    )
    invoice.lines.remove(invoice.lines[1])
    invoice.recalculate()
    db.commit()
    db.expire(invoice)

    assert [line.description for line in invoice.lines] == ["Licences", "Setup"]
    assert (invoice.subtotal_minor, invoice.tax_minor, invoice.total_minor) == (8000, 1600, 9600)


@pytest.mark.parametrize("unit", [10**12, 2**62], ids=["10**12", "2**62"])
def test_money_columns_hold_values_above_32_bits(db, unit):
    invoice = make_invoice(db, lines=[("Enterprise licence", "1", unit, 2000)])
    tax = unit * 2000 // 10000
    invoice.amount_paid_minor = unit
    db.commit()
    db.expire_all()

    assert unit > 2**31
    assert invoice.lines[0].unit_price_minor == unit
    assert invoice.lines[0].amount_minor == unit
    assert (invoice.subtotal_minor, invoice.tax_minor, invoice.total_minor) == (
        unit,
        tax,
        unit + tax,
    )
    assert invoice.balance_minor == tax
    row = db.execute(
        select(Invoice.subtotal_minor, Invoice.total_minor, Invoice.balance_minor)
    ).one()
    assert tuple(row) == (unit, unit + tax, tax)
    assert db.scalar(select(func.sum(Invoice.total_minor))) == unit + tax


# --- the portal's invoice list uses its index --------------------------------------------


def invoice_list(bill_group_id: int):
    return (
        select(Invoice)
        .where(Invoice.bill_group_id == bill_group_id)
        .order_by(Invoice.issue_date.desc(), Invoice.id.desc())
        .limit(25)
    )


def test_the_invoice_list_uses_its_index(db):
    entity = make_entity(db)
    groups = [make_bill_group(db, entity=entity) for _ in range(40)]
    rows = [
        {
            "entity_id": entity.id,
            "bill_group_id": group.id,
            "currency": group.currency,
            "number": f"INV-{group.id}-{n:03d}",
            # Several invoices a day, so the id breaks ties.
            "status": InvoiceStatus.PAID if n % 3 else InvoiceStatus.OPEN,
            "issue_date": T - (n // 2) * DAY,
            "due_date": T - (n // 2) * DAY + 30 * DAY,
        }
        for group in groups
        for n in range(50)
    ]
    db.execute(insert(Invoice), rows)
    db.commit()
    target = groups[17]

    listed = db.scalars(invoice_list(target.id)).all()
    assert len(listed) == 25
    assert {i.bill_group_id for i in listed} == {target.id}
    keys = [(i.issue_date, i.id) for i in listed]
    assert keys == sorted(keys, reverse=True)
    assert listed[0].issue_date == T

    dialect = db.get_bind().dialect
    compiled = invoice_list(target.id).compile(
        dialect=dialect, compile_kwargs={"literal_binds": True}
    )
    sql = str(compiled)
    if dialect.name == "postgresql":
        # Fresh statistics and no sequential scan: the planner picks between the indexes.
        db.execute(text("ANALYZE invoices"))
        db.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(db.scalars(text(f"EXPLAIN {sql}")))
        sort = "Sort"
    else:
        plan = "\n".join(row[-1] for row in db.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
        sort = "TEMP B-TREE"
    db.rollback()

    assert "ix_invoices_bill_group_issued" in plan, plan
    # The index gives the order too: no sort step.
    assert sort not in plan, plan


# --- cascades ---------------------------------------------------------------------------

CASCADED = [
    Invoice,
    InvoiceLine,
    Contact,
    AccessRule,
    PaymentMethod,
    Payment,
    PaymentApplication,
    Subscription,
    SubscriptionItem,
]


def populate(db: Session, group: BillGroup) -> None:
    """One of everything that belongs to a bill group."""
    for kind in ContactKind:
        db.add(Contact(bill_group=group, kind=kind, name=f"{kind} contact"))
    for kind, value, subdomains in [
        (RuleKind.DOMAIN, "customer.example.com", True),
        (RuleKind.EMAIL, "ap@other.example.org", False),
    ]:
        db.add(
            AccessRule(
                bill_group=group,
                kind=kind,
                value=value,
                include_subdomains=subdomains,
                created_by="staff@seller.example.com",
            )
        )
    card = make_payment_method(db, group, is_default=True)
    make_payment_method(db, group)
    paid = make_invoice(db, group, lines=[("A", "1", 1000, 0), ("B", "2", 1000, 0)])
    make_invoice(db, group)
    paid.amount_paid_minor = 3000
    payment = Payment(
        bill_group=group,
        payment_method=card,
        amount_minor=3000,
        currency=group.currency,
        status=PaymentStatus.SUCCEEDED,
        received_at=utcnow(),
    )
    payment.applications.append(PaymentApplication(invoice=paid, amount_minor=3000))
    db.add(payment)
    product = Product(entity=group.entity, name="Seat")
    subscription = Subscription(
        bill_group=group,
        status=SubscriptionStatus.ACTIVE,
        period=BillingFrequency.MONTHLY,
        start_date=group.contract_start,
    )
    subscription.items.append(SubscriptionItem(product=product, quantity=3, unit_price_minor=900))
    db.add(subscription)
    db.flush()


def counts(db: Session) -> dict[str, int]:
    return {
        model.__tablename__: db.scalar(select(func.count()).select_from(model))
        for model in CASCADED
    }


@pytest.mark.parametrize("how", ["orm", "sql"])
def test_deleting_a_bill_group_deletes_what_belongs_to_it(db, how):
    doomed, kept = make_bill_group(db), make_bill_group(db)
    populate(db, doomed)
    populate(db, kept)
    db.commit()
    doomed_id, entity_id = doomed.id, doomed.entity_id
    per_group = {
        "invoices": 2,
        "invoice_lines": 3,
        "contacts": 2,
        "access_rules": 2,
        "payment_methods": 2,
        "payments": 1,
        "payment_applications": 1,
        "subscriptions": 1,
        "subscription_items": 1,
    }
    assert counts(db) == {table: 2 * n for table, n in per_group.items()}

    if how == "orm":
        db.delete(doomed)
    else:
        # ON DELETE CASCADE in the schema, without the ORM's help.
        db.execute(delete(BillGroup.__table__).where(BillGroup.__table__.c.id == doomed_id))
    db.commit()
    db.expire_all()

    assert counts(db) == per_group
    assert db.scalars(select(BillGroup.id)).all() == [kept.id]
    for model in (Invoice, Contact, AccessRule, PaymentMethod, Payment, Subscription):
        assert set(db.scalars(select(model.bill_group_id))) == {kept.id}, model
    # What the group belonged to stays.
    assert db.get(Entity, entity_id) is not None
    assert len(kept.invoices) == 2
