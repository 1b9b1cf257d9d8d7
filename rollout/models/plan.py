"""Cohort plans, enforcement state, exemptions and map versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base


class Plan(Base):
    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]]  # the options it was made with
    active: Mapped[bool] = mapped_column(default=True)  # the plan in force; older ones are kept

    cohorts: Mapped[list[Cohort]] = relationship(back_populates="plan", order_by="Cohort.position")


class Cohort(Base):
    """A contiguous alphabetical range of mailboxes (by ``sort_key``), switched off together."""

    __tablename__ = "cohorts"

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    position: Mapped[int]  # 1-based step order
    label: Mapped[str] = mapped_column(String(32))  # "a–c", "sa–sm"
    start_key: Mapped[str] = mapped_column(String(32))  # inclusive sort_key bound
    end_key: Mapped[str | None] = mapped_column(String(32))  # exclusive; None = to the end
    mailbox_count: Mapped[int]
    share: Mapped[float] = mapped_column(Float)
    scheduled_at: Mapped[datetime]
    stage: Mapped[str] = mapped_column(String(8), default="pending")  # pending | warn | defer | reject
    enforced_at: Mapped[datetime | None]  # first stage reached
    stage_changed_at: Mapped[datetime | None]

    plan: Mapped[Plan] = relationship(back_populates="cohorts")

    __table_args__ = (UniqueConstraint("plan_id", "position"),)


class CohortMember(Base):
    """Which cohort each mailbox belongs to in a plan (frozen when the plan is applied).

    No foreign keys, on purpose: a plan writes a million rows in one INSERT … SELECT from
    ``mailboxes`` in the same transaction, and three foreign-key checks per row tripled
    that on PostgreSQL. Rows of mailboxes pruned later are ignored by every join.
    """

    __tablename__ = "cohort_members"

    plan_id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(primary_key=True)
    cohort_id: Mapped[int]

    __table_args__ = (Index("ix_cohort_members_cohort_id", "cohort_id"),)


class RolloutState(Base):
    """One row: paused or not, and why."""

    __tablename__ = "rollout_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    paused: Mapped[bool] = mapped_column(default=False)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_by: Mapped[str | None] = mapped_column(String(128))
    paused_at: Mapped[datetime | None]
    resumed_at: Mapped[datetime | None]  # the scheduler retries a step skipped while paused after this


class Exemption(Base):
    __tablename__ = "exemptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    until: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]  # set when it expired or was lifted


class MapVersion(Base):
    """Each enforcement map written, newest last; ``active`` marks the one in force."""

    __tablename__ = "map_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime]
    backend: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    entries: Mapped[int]
    reason: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(default=False)
    step: Mapped[int] = mapped_column(default=0)  # steps taken when it was written (what undo --to-step names)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"))
    stages: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {position: stage} it enforces


class HeldMailbox(Base):
    """A mailbox a step kept out of the map because it was not warned in time (rollout.plan.holdback).

    Open while ``released_at`` is None. ``redated_cohort_id``: the later cohort it is switched off
    with instead, once a delivered notice allows a date ``notices.min_warning_days`` after it.
    """

    __tablename__ = "held_mailboxes"

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    cohort_id: Mapped[int] = mapped_column(
        ForeignKey("cohorts.id", ondelete="CASCADE")
    )  # the cohort it was held back from
    reason: Mapped[str] = mapped_column(String(32))  # no notice | notice bounced | notice too late
    held_at: Mapped[datetime]
    redated_cohort_id: Mapped[int | None] = mapped_column(ForeignKey("cohorts.id", ondelete="SET NULL"))
    released_at: Mapped[datetime | None]
    release: Mapped[str | None] = mapped_column(String(16))  # redated | included | switched
    release_reason: Mapped[str | None] = mapped_column(Text)
    released_by: Mapped[str | None] = mapped_column(String(128))


class Retirement(Base):
    """The final step: the legacy POP-before-SMTP map retired after the last cohort (until undone)."""

    __tablename__ = "retirements"

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"))
    retired_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    mode: Mapped[str] = mapped_column(String(8))  # empty | check
    legacy_map: Mapped[str] = mapped_column(Text)  # "hash:/etc/postfix/pop-before-smtp"
    saved: Mapped[str | None] = mapped_column(Text)  # where the map in force was kept (mode empty): what undo restores
    entries_before: Mapped[int] = mapped_column(default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    undone_at: Mapped[datetime | None]
