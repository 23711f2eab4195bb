"""A realistic demo dataset: one seller, three customer accounts, five bill groups in
three currencies, a year of invoices with lines and payments, and access rules.

Dates are relative to today so the demo always has open, overdue and paid invoices.
Deterministic: the same day gives the same data.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

from PIL import Image, ImageDraw
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from portal import crypto, links, sso, switcher
from portal.access import add_rule
from portal.config import settings
from portal.db import Base
from portal.models import (
    AccessRule,
    Account,
    BillGroup,
    BillingFrequency,
    Contact,
    ContactKind,
    CreditNote,
    CustomerRole,
    Entity,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Payment,
    PaymentApplication,
    PaymentMethod,
    PaymentMethodType,
    PaymentStatus,
    Plan,
    Product,
    ReturnOrigin,
    RuleKind,
    SsoMode,
    SsoProvider,
    StaffRole,
    StaffUser,
    Subscription,
    SubscriptionItem,
    SubscriptionStatus,
)

DEMO_ENTITY = "demo-northwind"
DEMO_APP_ORIGIN = "http://localhost:3000"
STAFF_EMAIL = "admin@northwind-cloud.com"
BRAND = "#0f766e"

PRODUCTS = {
    "seat-std": ("Platform seat — Standard", 2900),
    "seat-pro": ("Platform seat — Professional", 5900),
    "storage": ("Storage, per 100 GB", 1200),
    "support": ("Business support", 25000),
    "api": ("API calls, per 10,000", 150),
    "onboarding": ("Onboarding and training", 120000),
    "licence": ("Annual platform licence", 1800000),
}


@dataclass
class GroupPlan:
    key: str
    account: str
    name: str
    currency: str
    frequency: BillingFrequency
    tax_rate_bp: int
    invoices: int
    items: list[tuple[str, int]]
    rules: list[tuple[str, bool]]
    contract_months_ago: int = 18
    contract_ended: bool = False
    auto_pay: bool = True
    po_number: str | None = None
    vat_number: str | None = None
    registration_number: str | None = None
    country: str = "GB"
    cards: list[tuple[PaymentMethodType, str, str]] = field(default_factory=list)


PLANS = [
    GroupPlan(
        "acme-uk",
        "Acme Corporation",
        "Acme UK operations",
        "GBP",
        BillingFrequency.MONTHLY,
        2000,
        24,
        [("seat-pro", 40), ("storage", 12), ("support", 1)],
        [("acme.com", False), ("cfo@acme-holdings.com", False)],
        contract_months_ago=30,
        po_number="PO-4471-UK",
        vat_number="GB980780684",
        registration_number="01234567",
        cards=[
            (PaymentMethodType.CARD, "visa", "4242"),
            (PaymentMethodType.CARD, "mastercard", "4444"),
        ],
    ),
    GroupPlan(
        "acme-us",
        "Acme Corporation",
        "Acme US operations",
        "USD",
        BillingFrequency.MONTHLY,
        0,
        18,
        [("seat-std", 65), ("api", 320)],
        [("acme.com", True)],
        contract_months_ago=22,
        country="US",
        auto_pay=False,
        cards=[(PaymentMethodType.CARD, "amex", "0005")],
    ),
    GroupPlan(
        "globex",
        "Globex GmbH",
        "Globex annual licences",
        "EUR",
        BillingFrequency.ANNUAL,
        1900,
        5,
        [("licence", 1), ("onboarding", 1)],
        [("finance@globex.de", False), ("rechnungen@globex.de", False)],
        contract_months_ago=50,
        vat_number="DE136695976",
        registration_number="HRB 12345",
        country="DE",
        cards=[(PaymentMethodType.SEPA_DEBIT, "Deutsche Bank", "3000")],
    ),
    GroupPlan(
        "initech",
        "Initech SAS",
        "Initech platform",
        "EUR",
        BillingFrequency.QUARTERLY,
        2000,
        10,
        [("seat-std", 120), ("storage", 30), ("support", 3)],
        [("initech.fr", False)],
        contract_months_ago=30,
        po_number="BC-2026-118",
        vat_number="FR40303265045",
        country="FR",
        cards=[(PaymentMethodType.CARD, "visa", "1881")],
    ),
    GroupPlan(
        "initech-legacy",
        "Initech SAS",
        "Initech legacy support (contract ended)",
        "EUR",
        BillingFrequency.MONTHLY,
        2000,
        12,
        [("support", 1)],
        [("initech.fr", False)],
        contract_months_ago=16,
        contract_ended=True,
        auto_pay=False,
        country="FR",
    ),
]

FREQUENCY_MONTHS = {
    BillingFrequency.MONTHLY: 1,
    BillingFrequency.QUARTERLY: 3,
    BillingFrequency.SEMIANNUAL: 6,
    BillingFrequency.ANNUAL: 12,
}


def add_months(day: dt.date, months: int) -> dt.date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(day.day, 28))


def demo_logo() -> bytes:
    """A small PNG logo drawn here, so the demo needs no binary files."""
    image = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, 159, 159), radius=32, fill=BRAND)
    draw.polygon(
        [
            (36, 124),
            (36, 36),
            (60, 36),
            (100, 96),
            (100, 36),
            (124, 36),
            (124, 124),
            (100, 124),
            (60, 64),
            (60, 124),
        ],
        fill="white",
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def seller() -> Entity:
    """The demo's seller, with its logo, not yet added; bench/pdf.py bills from it too."""
    return Entity(
        name="Northwind Cloud",
        legal_name="Northwind Cloud Ltd",
        support_email="billing@northwind-cloud.com",
        brand_colour=BRAND,
        logo=demo_logo(),
        logo_type="image/png",
        address="12 Harbour Street\nLeith\nEdinburgh EH6 6QW\nUnited Kingdom",
        country="GB",
        vat_number="GB100000328",
    )


def delete_everything(session: Session) -> None:
    for table in reversed(Base.metadata.sorted_tables):
        if table.name != "audit_events":  # append-only: the trail outlives the data
            session.execute(delete(table))
    # Bulk deletes leave loaded objects behind; forget them so new rows can reuse ids.
    session.expunge_all()


def load(session: Session, today: dt.date | None = None) -> bool:
    """Load the demo unless it is there already; returns whether anything was loaded."""
    if session.scalar(select(Entity).where(Entity.external_id == DEMO_ENTITY)):
        return False
    today = today or dt.date.today()
    rng = random.Random(today.toordinal())
    entity = seller()
    entity.external_id = DEMO_ENTITY
    # Paying by bank transfer: every open invoice shows these, and the EUR ones (Globex,
    # Initech) an EPC payment QR code. Set here, not in seller(): bench/pdf.py times the
    # invoice without them.
    entity.bank_account_holder = "Northwind Cloud Ltd"
    entity.bank_name = "NatWest"
    entity.bank_iban = "GB29NWBK60161331926819"
    entity.bank_bic = "NWBKGB2L"
    # Reminders to the billing contacts (the demo's worker sends them on its first pass;
    # read them at /dev/mailbox): before renewals, before and after due dates.
    entity.remind_upcoming_days = "7, 30"
    entity.remind_due_soon_days = "1, 7"
    entity.remind_overdue_days = "1, 7, 14"
    products = {
        key: Product(entity=entity, external_id=f"demo-{key}", name=name, sku=key.upper())
        for key, (name, _price) in PRODUCTS.items()
    }
    # The seller's catalogue, in the currency of the bill group whose customer may change plans.
    catalogue = [
        Plan(
            entity=entity,
            external_id=f"demo-plan-{key}",
            name=name,
            price_minor=price,
            currency="GBP",
            period=BillingFrequency.MONTHLY,
            description=description,
        )
        for key, name, price, description in CATALOGUE
    ]
    session.add_all([entity, *products.values(), *catalogue])
    accounts: dict[str, Account] = {}
    counter = iter(range(1, 10_000))
    for plan in PLANS:
        account = accounts.setdefault(
            plan.account, Account(name=plan.account, external_id=f"demo-acc-{len(accounts) + 1}")
        )
        group = _bill_group(session, entity, account, plan, today)
        _subscription(group, plan, products, today)
        if plan.key == CHANGEABLE_GROUP:
            _allow_changes(group, catalogue)
        methods = _payment_methods(group, plan, rng)
        session.add(group)
        session.flush()
        _invoices(session, entity, group, plan, products, methods, today, rng, counter)
        if not plan.contract_ended:
            _credit_note(session, group, plan, today)
        for value, subdomains in plan.rules:
            # Billing managers, so that the README's walk-through can change and pay.
            rule = add_rule(
                session,
                group,
                value,
                created_by="demo",
                include_subdomains=subdomains,
                role=CustomerRole.BILLING_MANAGER,
            )
            if plan.key == SSO_PLAN and rule.kind == RuleKind.DOMAIN:
                _demo_sso(rule)
    # The seller's app of the README's portal-session example, on the developer's machine.
    session.add(ReturnOrigin(entity=entity, origin=DEMO_APP_ORIGIN, created_by="demo"))
    staff = StaffUser(email=STAFF_EMAIL, name="Demo Admin", role=StaffRole.ADMIN)
    staff.set_password(secrets.token_urlsafe(24))  # replaced by new_staff_password
    session.add(staff)
    session.flush()
    return True


# The address the README's walk-through signs in with: Acme's two bill groups (GBP, USD)
# both admit it, so the header's switcher shows.
DEMO_CUSTOMER = "ap@acme.com"

# The bill group whose domain rule offers company sign-in, when the demo has a provider.
SSO_PLAN = "acme-us"


def demo_sso_issuer() -> str | None:
    """The mock provider the demo's company sign-in uses: SSO_DEMO_ISSUER, and only if
    oidc-provider-mock is installed (the dev extra), since nothing else would answer there
    with any client id and secret."""
    issuer = settings().SSO_DEMO_ISSUER.rstrip("/")
    if not issuer or importlib.util.find_spec("oidc_provider_mock") is None:
        return None
    return issuer


def _demo_sso(rule: AccessRule) -> None:
    issuer = demo_sso_issuer()
    if issuer is None:
        return
    rule.sso = SsoProvider(
        company_name="Acme",
        issuer=issuer,
        client_id="billing-portal-demo",
        # oidc-provider-mock takes any client secret; it is sealed all the same.
        client_secret_sealed=crypto.seal(sso.SECRET_PURPOSE, secrets.token_urlsafe(16)),
        mode=SsoMode.OFFERED,
        updated_by="demo",
    )


def _bill_group(
    session: Session, entity: Entity, account: Account, plan: GroupPlan, today: dt.date
) -> BillGroup:
    start = add_months(today, -plan.contract_months_ago)
    months = FREQUENCY_MONTHS[plan.frequency]
    next_billing = start
    while next_billing <= today:
        next_billing = add_months(next_billing, months)
    domain = plan.rules[0][0].rpartition("@")[2]
    company = plan.account
    group = BillGroup(
        account=account,
        entity=entity,
        external_id=f"demo-{plan.key}",
        name=plan.name,
        currency=plan.currency,
        billing_frequency=plan.frequency,
        next_billing_date=None if plan.contract_ended else next_billing,
        auto_pay=plan.auto_pay,
        po_number=plan.po_number,
        vat_number=plan.vat_number,
        registration_number=plan.registration_number,
        contract_start=start,
        contract_end=today - dt.timedelta(days=20) if plan.contract_ended else None,
    )
    cities = {
        "GB": ("London", "EC2A 4NE"),
        "US": ("Austin", "78701"),
        "DE": ("Berlin", "10115"),
        "FR": ("Paris", "75002"),
    }
    city, postcode = cities[plan.country]
    group.contacts = [
        Contact(
            kind=ContactKind.BILLING,
            name="Accounts Payable",
            company=company,
            email=f"ap@{domain}",
            phone="+44 20 7946 0000",
            line1="1 Finance Way",
            city=city,
            postal_code=postcode,
            country=plan.country,
        ),
        Contact(
            kind=ContactKind.SHIPPING,
            name="Facilities",
            company=company,
            line1="Unit 4, Dock Road",
            city=city,
            postal_code=postcode,
            country=plan.country,
        ),
    ]
    return group


def _subscription(
    group: BillGroup, plan: GroupPlan, products: dict[str, Product], today: dt.date
) -> None:
    months = FREQUENCY_MONTHS[plan.frequency]
    subscription = Subscription(
        external_id=f"demo-sub-{plan.key}",
        status=SubscriptionStatus.CANCELLED if plan.contract_ended else SubscriptionStatus.ACTIVE,
        period=plan.frequency,
        start_date=group.contract_start,
        renewal_date=group.next_billing_date,
        end_date=group.contract_end,
        items=[
            SubscriptionItem(
                product=products[key],
                quantity=quantity,
                unit_price_minor=_price(key, plan.currency) * months,
            )
            for key, quantity in plan.items
        ],
    )
    group.subscriptions.append(subscription)
    if not plan.contract_ended and len(plan.items) > 1:
        group.subscriptions.append(
            Subscription(
                external_id=f"demo-sub-{plan.key}-trial",
                status=SubscriptionStatus.TRIALING,
                period=plan.frequency,
                start_date=today - dt.timedelta(days=10),
                renewal_date=today + dt.timedelta(days=20),
                items=[SubscriptionItem(product=products["api"], quantity=50, unit_price_minor=0)],
            )
        )


# Per seat, per month: what a customer of Acme UK sees when asking for another plan.
CATALOGUE = [
    ("starter", "Starter", 2900, "The essentials, for small teams"),
    ("team", "Team", 5900, "Shared dashboards and priority support"),
    ("business", "Business", 9900, "Single sign-on, audit log and a named manager"),
]
CHANGEABLE_GROUP = "acme-uk"


def _allow_changes(group: BillGroup, catalogue: list[Plan]) -> None:
    """The demo's subscriptions that a customer may ask to change: the main one moves
    between the plans, changes seats, pauses or cancels; the trial converts or extends."""
    main, *rest = group.subscriptions
    main.plan = catalogue[1]
    main.quantity = 40
    main.quantity_min, main.quantity_max = 5, 200
    main.allowed_plans = list(catalogue)
    main.allow_pause = main.allow_cancel_at_term_end = main.allow_cancel_now = True
    for trial in rest:
        trial.trial_end = trial.renewal_date
        trial.allow_convert_trial = trial.allow_extend_trial = trial.allow_cancel_now = True


def _price(key: str, currency: str) -> int:
    # Demo prices are set in pounds; the other currencies are round conversions.
    factor = {"GBP": Decimal("1"), "EUR": Decimal("1.15"), "USD": Decimal("1.27")}[currency]
    return int(PRODUCTS[key][1] * factor)


def _payment_methods(group: BillGroup, plan: GroupPlan, rng: random.Random) -> list[PaymentMethod]:
    methods = []
    for index, (kind, brand, last4) in enumerate(plan.cards):
        is_card = kind == PaymentMethodType.CARD
        methods.append(
            PaymentMethod(
                type=kind,
                brand=brand,
                last4=last4,
                exp_month=rng.randint(1, 12) if is_card else None,
                exp_year=dt.date.today().year + rng.randint(1, 4) if is_card else None,
                holder_name="Accounts Payable",
                gateway="sandbox",
                gateway_token=f"sandbox_pm_demo_{plan.key}_{index}",
                external_id=f"demo-pm-{plan.key}-{index}",
                is_default=index == 0,
            )
        )
    group.payment_methods.extend(methods)
    return methods


def _invoices(
    session: Session,
    entity: Entity,
    group: BillGroup,
    plan: GroupPlan,
    products: dict[str, Product],
    methods: list[PaymentMethod],
    today: dt.date,
    rng: random.Random,
    counter: Iterator[int],
) -> None:
    months = FREQUENCY_MONTHS[plan.frequency]
    last_issue = group.contract_end or today
    for age in range(plan.invoices - 1, -1, -1):
        issue = add_months(last_issue, -age * months) - dt.timedelta(days=rng.randint(0, 3))
        issue = max(issue, group.contract_start)
        number = f"NW-{issue.year}-{next(counter):05d}"
        invoice = Invoice(
            entity=entity,
            bill_group=group,
            external_id=f"demo-{number.lower()}",
            number=number,
            currency=plan.currency,
            status=InvoiceStatus.OPEN,
            issue_date=issue,
            due_date=issue + dt.timedelta(days=30),
            period_start=issue,
            period_end=add_months(issue, months) - dt.timedelta(days=1),
            po_number=plan.po_number,
        )
        _lines(invoice, plan, products, rng, detailed=age == 3)
        invoice.recalculate()
        session.add(invoice)
        _settle(session, invoice, group, methods, today, rng, age)
    session.flush()


def _lines(
    invoice: Invoice,
    plan: GroupPlan,
    products: dict[str, Product],
    rng: random.Random,
    detailed: bool,
) -> None:
    lines = [
        (key, Decimal(qty + rng.randint(-2, 3) if qty > 3 else qty)) for key, qty in plan.items
    ]
    if detailed:
        # One long invoice per bill group, to show multi-page PDFs.
        lines += [("api", Decimal(rng.randint(5, 90))) for _ in range(45)]
    for position, (key, quantity) in enumerate(lines, start=1):
        unit = _price(key, plan.currency) * FREQUENCY_MONTHS[plan.frequency]
        if key == "api":
            unit = _price(key, plan.currency)
        amount = int(quantity * unit)
        tax = (amount * plan.tax_rate_bp + 5000) // 10000
        description = products[key].name
        if detailed and position > len(plan.items):
            description = f"{description} — usage day {position - len(plan.items)}"
        invoice.lines.append(
            InvoiceLine(
                position=position,
                product=products[key],
                description=description,
                quantity=quantity,
                unit_price_minor=unit,
                amount_minor=amount,
                tax_rate_bp=plan.tax_rate_bp,
                tax_minor=tax,
                period_start=invoice.period_start,
                period_end=invoice.period_end,
            )
        )


def _settle(
    session: Session,
    invoice: Invoice,
    group: BillGroup,
    methods: list[PaymentMethod],
    today: dt.date,
    rng: random.Random,
    age: int,
) -> None:
    """Old invoices paid, one voided, the newest open, one overdue and one part-paid."""
    if age == 7:
        invoice.status = InvoiceStatus.VOID
        invoice.voided_at = dt.datetime.combine(invoice.issue_date, dt.time(12), dt.UTC)
        return
    if invoice.due_date >= today:
        return  # the newest: open, not yet due
    if age == 1 or (age == 2 and group.currency == "USD"):
        return  # overdue
    paid = invoice.total_minor if age != 2 else invoice.total_minor // 2
    payment = Payment(
        external_id=f"demo-pay-{invoice.number.lower()}",
        bill_group=group,
        payment_method=methods[0] if methods and group.auto_pay else None,
        method_description=None if group.auto_pay else "Bank transfer",
        amount_minor=paid,
        currency=invoice.currency,
        status=PaymentStatus.SUCCEEDED,
        received_at=dt.datetime.combine(
            invoice.issue_date + dt.timedelta(days=rng.randint(1, 25)), dt.time(9), dt.UTC
        ),
        reference=f"PAY-{invoice.number}",
    )
    payment.applications.append(PaymentApplication(invoice=invoice, amount_minor=paid))
    session.add(payment)
    invoice.amount_paid_minor = paid
    if paid == invoice.total_minor:
        invoice.status = InvoiceStatus.PAID


def _credit_note(session: Session, group: BillGroup, plan: GroupPlan, today: dt.date) -> None:
    """A service credit, unapplied: the customer can apply it on the Credits page."""
    session.add(
        CreditNote(
            external_id=f"demo-cn-{plan.key}",
            bill_group=group,
            number=f"CN-{plan.key.upper()}-1",
            currency=group.currency,
            issue_date=today - dt.timedelta(days=12),
            amount_minor=_price("support", group.currency) // 4 or 2500,
            reason="Service credit for the outage of the reporting dashboard",
        )
    )


def new_staff_password(session: Session) -> str:
    """A fresh random password for the demo admin, on every run of `flask demo`: no
    password is published anywhere (the README, this file), so a demo left running
    somewhere is not an open door. Returned to be printed once."""
    staff = session.scalar(select(StaffUser).where(StaffUser.email == STAFF_EMAIL))
    if staff is None:
        raise LookupError(f"the demo's staff user {STAFF_EMAIL} is missing")
    password = secrets.token_urlsafe(15)
    staff.set_password(password)
    return password


def describe(session: Session, base_url: str, loaded: bool, staff_password: str) -> str:
    """What a newcomer needs next: links, addresses that get in, the staff sign-in."""
    today = dt.date.today()
    out = ["Demo data loaded." if loaded else "Demo data was already loaded.", ""]
    groups = session.scalars(
        select(BillGroup)
        .join(Entity)
        .where(Entity.external_id == DEMO_ENTITY)
        .order_by(BillGroup.id)
    ).all()
    for group in groups:
        rule = group.access_rules[0] if group.access_rules else None
        if rule is None:
            email = "(no access rules)"
        elif rule.kind == RuleKind.EMAIL:
            email = rule.value
        else:
            email = f"ap@{rule.value}"
        state = "" if group.portal_available(today) else "  (not available: contract ended)"
        out.append(f"{group.account.name} — {group.name}{state}")
        out.append(f"  portal link:  {links.portal_url(group, base_url=base_url)}")
        out.append(f"  sign in as:   {email}")
    # One sign-in, several bill groups: the demo customer's other groups of this seller.
    first = groups[0] if groups else None
    if first is not None:
        reach = switcher.reachable(session, first.entity_id, DEMO_CUSTOMER, today)
        if len(reach) > 1:
            names = " and ".join(f"{r.name} ({r.currency})" for r in reach)
            out += [
                "",
                f"One sign-in, several bill groups: {DEMO_CUSTOMER} reaches {names}; signed "
                "in to one, switch in the header (no second email). Signed-in devices, in "
                "the header too, lists and signs out the address's other browsers.",
            ]
    out += [
        "",
        f"Staff sign-in: {base_url}/admin  {STAFF_EMAIL} / {staff_password}",
        "(a new random password on every run of `flask demo`)",
    ]
    issuer = demo_sso_issuer()
    if issuer:
        out += [
            "",
            f"Company sign-in: people at acme.com on Acme US operations may also use Acme "
            f"sign-in, the oidc-provider-mock at {issuer} (run `python -m oidc_provider_mock "
            f"-p {urlsplit(issuer).port or 9400}`; its login page takes any name, and PUT "
            f"{issuer}/users/<name> with email and email_verified sets what it says).",
        ]
    return "\n".join(out)
