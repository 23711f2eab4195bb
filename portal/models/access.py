"""Access rules: who may sign in to a bill group's portal. Logic lives in portal.access."""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, UTCDateTime, utcnow
from portal.models._base import BigId, IdMixin, str_enum

if TYPE_CHECKING:
    from portal.models.account import BillGroup
    from portal.models.sso import SsoProvider


class RuleKind(enum.StrEnum):
    DOMAIN = "domain"
    EMAIL = "email"


class CustomerRole(enum.StrEnum):
    """What the people a rule admits may do in the portal (decided at every request by
    portal.customer.viewer.may_manage_billing)."""

    VIEWER = "viewer"  # read only: pages, invoices and their PDFs, statements
    BILLING_MANAGER = "billing_manager"  # also change details, contacts, methods; pay

    @property
    def label(self) -> str:
        return "Viewer" if self is CustomerRole.VIEWER else "Billing manager"

    @classmethod
    def default_for(cls, kind: RuleKind) -> CustomerRole:
        """A new rule's role when staff do not choose: a whole domain reads, one named
        address manages."""
        return cls.VIEWER if kind == RuleKind.DOMAIN else cls.BILLING_MANAGER


class AccessRule(IdMixin, Base):
    __tablename__ = "access_rules"
    __table_args__ = (
        # Two concurrent requests cannot add the same rule twice.
        UniqueConstraint("bill_group_id", "kind", "value"),
        CheckConstraint("kind = 'domain' OR NOT include_subdomains", name="subdomains_on_domain"),
        CheckConstraint("value = lower(value)", name="value_lower"),
        # The bill-group switcher and the staff access checker look rules up by value
        # (an address, or a domain and its parents) across a seller's bill groups; the
        # unique constraint above leads with the bill group and cannot serve that.
        Index("ix_access_rules_value_kind", "value", "kind"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[RuleKind] = mapped_column(str_enum(RuleKind, "rule_kind"), nullable=False)
    # Canonical form from portal.access: lower-case ASCII, IDNA-encoded domain.
    value: Mapped[str] = mapped_column(String(254), nullable=False)
    include_subdomains: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # The server default is what rules written before roles existed got on upgrade (they
    # keep the access they had), and what a host still on the old code writes during a
    # rolling upgrade. New rules always name their role (portal.access.store_rule).
    role: Mapped[CustomerRole] = mapped_column(
        str_enum(CustomerRole, "customer_role"),
        nullable=False,
        server_default=CustomerRole.BILLING_MANAGER.value,
    )
    created_by: Mapped[str] = mapped_column(String(254), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    bill_group: Mapped[BillGroup] = relationship(back_populates="access_rules")
    # A domain rule's company single sign-on, if staff set one up (portal.sso). Loaded
    # when asked for (the sign-in pages): the rules are read on every request, this is not.
    sso: Mapped[SsoProvider | None] = relationship(
        back_populates="rule", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def label(self) -> str:
        """How staff see the rule: the domain in its Unicode form, if it has one."""
        from portal.access import rule_label  # portal.access imports the models

        return rule_label(self.kind, self.value, self.include_subdomains)

    def __repr__(self) -> str:
        return f"<AccessRule {self.kind} {self.value!r}>"
