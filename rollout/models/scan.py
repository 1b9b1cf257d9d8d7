"""What `rollout scan` remembers: file positions, carried-over state, and per-day sightings."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class ScanSource(Base):
    """One log file: where the last scan stopped, and how to recognise the same file again."""

    __tablename__ = "scan_sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    device: Mapped[int] = mapped_column(BigInteger)
    inode: Mapped[int] = mapped_column(BigInteger)
    fingerprint: Mapped[str] = mapped_column(String(64))  # hash of the first line
    offset: Mapped[int] = mapped_column(BigInteger)  # bytes of complete lines consumed
    lines: Mapped[int] = mapped_column(BigInteger)
    last_scan_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("host", "path"),)


class ScanCarry(Base):
    """State carried between runs: login windows and unfinished messages (one row)."""

    __tablename__ = "scan_carry"

    id: Mapped[int] = mapped_column(primary_key=True)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime]


class LegacyDay(Base):
    """Per mailbox and day (UTC): legacy submissions, authenticated ones, refusals by our map."""

    __tablename__ = "legacy_days"

    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    legacy_count: Mapped[int] = mapped_column(default=0)
    high_count: Mapped[int] = mapped_column(default=0)  # legacy submissions with confidence high
    first_seen: Mapped[datetime | None]
    last_seen: Mapped[datetime | None]
    last_ip: Mapped[str | None] = mapped_column(String(45))
    client_ips: Mapped[list[Any]]
    senders: Mapped[list[Any]]
    confidence: Mapped[str | None] = mapped_column(String(8))  # best of the day: high | medium
    auth_count: Mapped[int] = mapped_column(default=0)
    auth_last: Mapped[datetime | None]
    near_miss_count: Mapped[int] = mapped_column(default=0)
    refused_count: Mapped[int] = mapped_column(default=0)  # refusals by our own sender map
    refused_last: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_legacy_days_day", "day"),
        # Everything "still legacy" reads (rollout.rules), so the status's pass over the lookback's days reads
        # this narrow index alone, in mailbox order, not the days' rows with their JSON.
        Index("ix_legacy_days_usage", "mailbox_id", "day", "legacy_count", "last_seen", "auth_last"),
    )


class RefusalHour(Base):
    """Refusals by our map per mailbox and hour (UTC, by log time): what the gates and the status chart read."""

    __tablename__ = "refusal_hours"

    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True, index=True)
    count: Mapped[int] = mapped_column(default=0)


class Evidence(Base):
    """One sample per mailbox, day and kind: the raw lines, with file and byte offset."""

    __tablename__ = "evidence"

    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # legacy | auth | refused | near_miss
    lines: Mapped[list[Any]]  # [{"file": ..., "offset": ..., "line": ...}, ...]
    details: Mapped[dict[str, Any]]


class ReviewItem(Base):
    """Sightings nobody is notified about: ambiguous attribution, unexplained relays."""

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # ambiguous | unexplained | dual_stack (unexplained, P2)
    at: Mapped[datetime] = mapped_column(index=True)
    host: Mapped[str] = mapped_column(String(255))
    queue_id: Mapped[str] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    sender: Mapped[str | None] = mapped_column(String(320))
    candidates: Mapped[list[Any]]
    evidence: Mapped[list[Any]]
    # resolved by ops (`rollout attribute` / `rollout dismiss`): attributed | dismissed; None = open
    resolution: Mapped[str | None] = mapped_column(String(16))
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"))  # attributed to
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    resolved_at: Mapped[datetime | None]
    resolution_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("host", "queue_id", "at"),)


class UnknownLogin(Base):
    """POP/IMAP users that log in but are not in the inventory: reported, not dropped."""

    __tablename__ = "unknown_logins"

    user: Mapped[str] = mapped_column(String(320), primary_key=True)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    count: Mapped[int] = mapped_column(BigInteger)
    last_ip: Mapped[str | None] = mapped_column(String(45))
