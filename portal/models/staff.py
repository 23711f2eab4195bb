"""Staff users: the people who run the portal for the business."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from portal.db import Base, UTCDateTime
from portal.models._base import BigId, IdMixin, SessionMixin, TimestampMixin, str_enum

MIN_PASSWORD_LENGTH = 12


class StaffRole(enum.StrEnum):
    ADMIN = "admin"
    ACCOUNT_MANAGER = "account_manager"
    VIEWER = "viewer"


# What each role may do; every staff view names the permission it needs.
PERMISSIONS: dict[StaffRole, frozenset[str]] = {
    StaffRole.VIEWER: frozenset({"read", "preview"}),
    StaffRole.ACCOUNT_MANAGER: frozenset(
        {"read", "preview", "manage_access", "manage_accounts", "answer_disputes"}
    ),
    StaffRole.ADMIN: frozenset(
        {
            "read",
            "preview",
            "manage_access",
            "manage_accounts",
            # Answering customers' questions and disputes on invoices, and resolving them.
            "answer_disputes",
            # Where customers send money (a seller's bank details): an account manager's
            # phished session must not be able to redirect every invoice's payment.
            "manage_bank_details",
            "manage_staff",
            "audit_all",
            # API keys and webhook endpoints: what the billing system may do and hear.
            "manage_integrations",
            # A domain rule's company single sign-on: where the portal trusts another
            # party to say who someone is.
            "manage_sso",
            # Which changes to a subscription customers may ask for, per seller.
            "manage_self_service",
        }
    ),
}


class StaffUser(IdMixin, TimestampMixin, Base):
    __tablename__ = "staff_users"

    email: Mapped[str] = mapped_column(String(254), unique=True, nullable=False)
    name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[StaffRole] = mapped_column(str_enum(StaffRole, "staff_role"), nullable=False)
    # Werkzeug's scrypt hash (memory-hard); the salt is inside the hash string.
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    last_sign_in_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # TOTP seed, sealed with portal.crypto; set once enrolment is confirmed.
    totp_secret: Mapped[str | None] = mapped_column(String(255))
    totp_enabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The last TOTP time step used, so a code cannot be replayed within its window.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # SHA-256 hashes of unused recovery codes, space-separated.
    recovery_code_hashes: Mapped[str | None] = mapped_column(Text)
    # An admin reset the second factor: a new one must be set up at the next sign-in,
    # whatever the role.
    must_enrol: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), nullable=False
    )

    @property
    def has_totp(self) -> bool:
        return self.totp_enabled_at is not None and self.totp_secret is not None

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]

    def set_password(self, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"The password must be at least {MIN_PASSWORD_LENGTH} characters.")
        self.password_hash = generate_password_hash(password, method="scrypt")

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class StaffSession(IdMixin, SessionMixin, Base):
    """A signed-in staff member."""

    __tablename__ = "staff_sessions"
    __table_args__ = (Index("ix_staff_sessions_user", "staff_user_id", "revoked_at"),)

    staff_user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("staff_users.id", ondelete="CASCADE"), nullable=False
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    user: Mapped[StaffUser] = relationship()
