"""The notice campaign and its ledger: one row per (campaign, wave, customer)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    first_at: Mapped[datetime]  # wave 1, UTC
    weeks: Mapped[int]
    weekday: Mapped[str] = mapped_column(String(3))
    at_time: Mapped[str] = mapped_column(String(5))  # HH:MM local
    timezone: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(default=True)


class Notice(Base):
    """The ledger row: pending → sending → sent | failed, each step its own transaction."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    wave: Mapped[int]  # 1..weeks; weeks+1 for the thank-you note
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="reminder")  # reminder | thanks
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sending | sent | failed
    to_address: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(default=0)
    last_reply: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    # What the provider's MTA log says became of it after it was accepted (``rollout scan``, by Message-ID):
    # delivered | bounced | delayed; None until the scan has seen it
    delivery: Mapped[str | None] = mapped_column(String(16))
    delivery_reply: Mapped[str | None] = mapped_column(Text)  # the remote server's reply (bounced, delayed)
    delivery_at: Mapped[datetime | None]
    queue_id: Mapped[str | None] = mapped_column(String(320))  # host|instance|queue ID in that MTA's log

    __table_args__ = (
        UniqueConstraint("campaign_id", "wave", "customer_id"),
        # Claims by state; with the delivery state, the status counts each wave's from the index alone.
        Index("ix_notices_state_delivery", "campaign_id", "wave", "state", "delivery"),
        Index("ix_notices_message_id", "message_id"),
        Index("ix_notices_delivery", "delivery"),  # the bounced ones, for the status's unreachable customers
    )


class NoticeMailbox(Base):
    """A mailbox listed in a notice, with the switch-off date the customer was told."""

    __tablename__ = "notice_mailboxes"

    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id", ondelete="CASCADE"), primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    switch_at: Mapped[datetime | None]
    last_legacy_at: Mapped[datetime | None]
    last_ip: Mapped[str | None] = mapped_column(String(45))
    senders: Mapped[str | None] = mapped_column(
        Text
    )  # envelope senders of the last day of legacy use, as the notice said them
    basis: Mapped[str | None] = mapped_column(String(32))  # why a medium sighting is theirs (notices.BASES); None: high
    login_gap_seconds: Mapped[int | None]  # from the login that opened the window to the submission
