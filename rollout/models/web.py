"""The support desk's accounts and the key that signs its session cookies."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base
from .plan import CohortMember
from .scan import LegacyDay


class WebUser(Base):
    __tablename__ = "web_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))  # argon2id, with its parameters and salt
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))


class WebSecret(Base):
    """Generated on the first start of `rollout web`, shared by every instance on the database."""

    __tablename__ = "web_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]


# The support desk pages through one cohort's members in mailbox order (rollout.support.web.pages).
Index("ix_cohort_members_cohort_id_mailbox_id", CohortMember.cohort_id, CohortMember.mailbox_id)
# ... and lists the mailboxes our map refused: the few days with refusals, not every legacy day.
Index(
    "ix_legacy_days_refused",
    LegacyDay.mailbox_id,
    LegacyDay.day,
    sqlite_where=LegacyDay.refused_count > 0,
    postgresql_where=LegacyDay.refused_count > 0,
)
