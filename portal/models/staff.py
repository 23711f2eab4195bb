"""Staff users: the people who run the portal for the business."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from portal.db import Base, UTCDateTime
from portal.models._base import IdMixin, TimestampMixin, str_enum

MIN_PASSWORD_LENGTH = 12


class StaffRole(enum.StrEnum):
    ADMIN = "admin"
    ACCOUNT_MANAGER = "account_manager"
    VIEWER = "viewer"


class StaffUser(IdMixin, TimestampMixin, Base):
    __tablename__ = "staff_users"

    email: Mapped[str] = mapped_column(String(254), unique=True, nullable=False)
    name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[StaffRole] = mapped_column(str_enum(StaffRole, "staff_role"), nullable=False)
    # Werkzeug's scrypt hash (memory-hard); the salt is inside the hash string.
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    last_sign_in_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    def set_password(self, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"The password must be at least {MIN_PASSWORD_LENGTH} characters.")
        self.password_hash = generate_password_hash(password, method="scrypt")

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)
