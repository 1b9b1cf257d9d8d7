"""Customers, their mailboxes, and the audit log (foundation)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)  # customer_id from provisioning
    email: Mapped[str] = mapped_column(String(320))  # where notices go
    name: Mapped[str] = mapped_column(String(256))
    locale: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    mailboxes: Mapped[list[Mailbox]] = relationship(back_populates="customer", order_by="Mailbox.address_key")

    # Support searches by contact address and customer id in any case (`rollout lookup`, `rollout web`).
    __table_args__ = (
        Index("ix_customers_email_lower", func.lower(email)),
        Index("ix_customers_external_id_lower", func.lower(external_id)),
    )


class Mailbox(Base):
    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320))  # local part as given, domain normalised
    address_key: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased: uniqueness, lookup
    domain: Mapped[str] = mapped_column(String(253), index=True)
    login: Mapped[str | None] = mapped_column(String(320), index=True)  # POP/IMAP login when not the address
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    bucket: Mapped[str] = mapped_column(String(1))  # see rollout.buckets
    sort_key: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    customer: Mapped[Customer] = relationship(back_populates="mailboxes")

    __table_args__ = (Index("ix_mailboxes_sort_key", "sort_key", "address_key"), Index("ix_mailboxes_bucket", "bucket"))


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    details: Mapped[dict[str, Any]]
