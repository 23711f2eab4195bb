"""Setting up and removing a domain rule's company single sign-on (portal.sso): the one
path for the staff page. Audited as `access_rule.sso` (what changed, never the client
secret); in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from portal import audit, crypto, sso
from portal.actions import Actor, Invalid, NotFound
from portal.locks import lock_bill_group
from portal.models import AccessRule, BillGroup, RuleKind, SsoMode, SsoProvider


class NoSuchDomainRule(NotFound):
    def __init__(self) -> None:
        super().__init__("This bill group has no domain rule with that id.")


@dataclass(frozen=True)
class SsoSettings:
    """What staff typed. An empty `client_secret` keeps the stored one."""

    company_name: str
    issuer: str
    client_id: str
    client_secret: str
    mode: SsoMode


def _domain_rule(group: BillGroup, rule_id: int) -> AccessRule:
    for rule in group.access_rules:
        if rule.id == rule_id and rule.kind == RuleKind.DOMAIN:
            return rule
    raise NoSuchDomainRule()


def set_sso(
    db: Session,
    actor: Actor,
    group: BillGroup,
    rule_id: int,
    wanted: SsoSettings,
    *,
    allow_http: bool = False,
    check_discovery: bool = True,
) -> SsoProvider:
    """Add or change the rule's provider. The issuer's discovery document is fetched and
    checked first (with the SSO timeout), so a typo is caught now, not by a customer.
    Raises NoSuchDomainRule or Invalid (field: company_name, issuer, client_id,
    client_secret); nothing is written then."""
    rule = _domain_rule(group, rule_id)
    company = " ".join(wanted.company_name.split())
    issuer = wanted.issuer.strip()
    client_id = wanted.client_id.strip()
    if not company or len(company) > 80:
        raise Invalid("Enter the company's name as customers know it (at most 80).", "company_name")
    problem = sso.issuer_problem(issuer, allow_http=allow_http)
    if problem is None and len(issuer) > 500:
        problem = "The issuer URL is too long (at most 500 characters)."
    if problem:
        raise Invalid(problem, "issuer")
    if not client_id or len(client_id) > 255 or not client_id.isprintable():
        raise Invalid("Enter the client id the provider gave you (at most 255).", "client_id")
    existing = rule.sso
    if not wanted.client_secret and existing is None:
        raise Invalid("Enter the client secret the provider gave you.", "client_secret")
    if len(wanted.client_secret) > 1000:
        raise Invalid("The client secret is too long (at most 1000).", "client_secret")
    if check_discovery:
        try:
            sso.check_discovery(issuer, client_id)
        except sso.ProviderUnavailable as exc:
            raise Invalid(
                f"Could not read the provider's settings at {issuer.rstrip('/')}/.well-known/"
                f"openid-configuration ({exc.reason}). Check the issuer URL, and that the "
                "provider answers from this server.",
                "issuer",
            ) from None
    lock_bill_group(db, group.id)
    sealed = crypto.seal(sso.SECRET_PURPOSE, wanted.client_secret) if wanted.client_secret else None
    if existing is None:
        assert sealed is not None
        provider = SsoProvider(
            rule_id=rule.id,
            company_name=company,
            issuer=issuer,
            client_id=client_id,
            client_secret_sealed=sealed,
            mode=wanted.mode,
            updated_by=actor.label,
        )
        rule.sso = provider
        outcome = "added"
    else:
        provider = existing
        provider.company_name = company
        provider.issuer = issuer
        provider.client_id = client_id
        provider.mode = wanted.mode
        provider.updated_by = actor.label
        if sealed is not None:
            provider.client_secret_sealed = sealed
        outcome = "changed"
    secret_note = "; new client secret" if sealed is not None else ""
    audit.record(
        db,
        "access_rule.sso",
        outcome,
        bill_group_id=group.id,
        detail=f"{rule.label}: {company}, {issuer}, client {client_id}, "
        f"{wanted.mode.value}{secret_note}"[:500],
        **actor.audit(),
    )
    db.flush()
    return provider


def remove_sso(db: Session, actor: Actor, group: BillGroup, rule_id: int) -> bool:
    """Remove the rule's provider; False if it had none. Customers at the domain are back
    to the emailed link; their sessions go on (the rule still admits them)."""
    rule = _domain_rule(group, rule_id)
    if rule.sso is None:
        return False
    lock_bill_group(db, group.id)
    issuer = rule.sso.issuer
    rule.sso = None
    audit.record(
        db,
        "access_rule.sso",
        "removed",
        bill_group_id=group.id,
        detail=f"{rule.label}: {issuer}"[:500],
        **actor.audit(),
    )
    db.flush()
    return True
