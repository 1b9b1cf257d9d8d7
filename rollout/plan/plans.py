"""Plans in the database: weights per unit, storing cohorts and members, schedules, still-legacy.

Core functions take a Session, flush, never commit. Membership is written set-based
(``INSERT … SELECT`` by ``sort_key`` range), never one ORM object per mailbox.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, ScalarSelect, Select, and_, case, func, insert, literal, select
from sqlalchemy.orm import Session

from ..buckets import DIGITS
from ..errors import PlanError
from ..models import Cohort, CohortMember, Customer, Exemption, LegacyDay, Mailbox, Notice, NoticeMailbox, Plan
from ..rules import STAGES, still_legacy_clause
from .cohorts import Slice, Unit, cohorts_for_max_share, heavy_buckets, partition, range_label

BULK_CACHE_KIB = 256 * 1024


def prepare_bulk(session: Session) -> None:
    """Memory for sorting and hashing a million rows in this transaction (SQLite: page cache)."""
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
    elif connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL work_mem = '{BULK_CACHE_KIB // 1024}MB'")


# --- still legacy --------------------------------------------------------------------------


def still_legacy_ids(now: datetime, lookback_days: int) -> Select[int]:
    """SELECT of mailbox ids with legacy use in the lookback that are still legacy."""
    return still_legacy_query((now - timedelta(days=lookback_days)).date())


def still_legacy_query(since: date) -> Select[int]:
    """SELECT of mailbox ids with legacy use from day ``since`` on that are still legacy (``rollout.rules``)."""
    last_legacy = func.max(case((LegacyDay.legacy_count > 0, LegacyDay.last_seen)))
    last_auth = func.max(LegacyDay.auth_last)
    return (
        select(LegacyDay.mailbox_id)
        .where(LegacyDay.day >= since)
        .group_by(LegacyDay.mailbox_id)
        .having(still_legacy_clause(last_legacy, last_auth))
    )


def still_legacy_counts(session: Session, plan: Plan | None, since: date) -> dict[int | None, int]:
    """Mailboxes still legacy since ``since``, counted per cohort of ``plan`` (by id; None: in none of its cohorts).

    One aggregation over the legacy days for the whole report, not one per cohort.
    """
    legacy = still_legacy_query(since).subquery()
    if plan is None:
        return {None: session.scalar(select(func.count()).select_from(legacy)) or 0}
    rows = session.execute(
        select(CohortMember.cohort_id, func.count())
        .select_from(legacy)
        .outerjoin(CohortMember, and_(CohortMember.plan_id == plan.id, CohortMember.mailbox_id == legacy.c.mailbox_id))
        .group_by(CohortMember.cohort_id)
    )
    return {cohort_id: int(count) for cohort_id, count in rows}


@dataclass(frozen=True)
class PlanCounts:
    """A plan's per-cohort figures, counted once for everyone who reports them at one moment (status, next step)."""

    plan_id: int
    since: date  # the lookback's first day
    still_legacy: dict[int | None, int]  # still_legacy_counts
    refusals: dict[int, int]  # refusals_since_switch_off

    def fits(self, plan: Plan, since: date) -> bool:
        return self.plan_id == plan.id and self.since == since


def count_plan(session: Session, plan: Plan, since: date) -> PlanCounts:
    return PlanCounts(
        plan.id, since, still_legacy_counts(session, plan, since), refusals_since_switch_off(session, plan)
    )


def refusals_since_switch_off(session: Session, plan: Plan) -> dict[int, int]:
    """Per switched-off cohort (by id): refusals by our map logged from the day of its switch-off on.

    One query over the days with refusals (a partial index: few, whatever the number of legacy days).
    """
    switched = {c.id: c.enforced_at.date() for c in plan.cohorts if c.enforced_at is not None}
    if not switched:
        return {}
    # Grouped before the join, so that every planner (SQLite's without statistics too) starts from the refused
    # days and looks their mailboxes up, instead of walking the plan's million members.
    refused = (
        select(LegacyDay.mailbox_id, LegacyDay.day, func.sum(LegacyDay.refused_count).label("refused"))
        .where(LegacyDay.refused_count > 0, LegacyDay.day >= min(switched.values()))
        .group_by(LegacyDay.mailbox_id, LegacyDay.day)
        .subquery()
    )
    rows = session.execute(
        select(CohortMember.cohort_id, refused.c.day, func.sum(refused.c.refused))
        .join(CohortMember, and_(CohortMember.plan_id == plan.id, CohortMember.mailbox_id == refused.c.mailbox_id))
        .where(CohortMember.cohort_id.in_(list(switched)))
        .group_by(CohortMember.cohort_id, refused.c.day)
    )
    totals = dict.fromkeys(switched, 0)
    for cohort_id, day, count in rows:
        if day >= switched[cohort_id]:
            totals[cohort_id] += int(count or 0)
    return totals


# --- weights --------------------------------------------------------------------------------


@dataclass
class UnitStats:
    key: str
    mailboxes: int = 0
    legacy: int = 0


def unit_stats(
    session: Session, now: datetime, lookback_days: int, from_key: str = ""
) -> list[tuple[str, str, int, int]]:
    """(bucket, two-letter prefix, mailboxes, still legacy) for mailboxes from ``from_key`` on.

    Grouping by the prefix alone lets the database walk the ``sort_key`` index in order.
    """
    prefix = func.substr(Mailbox.sort_key, 1, 2)
    counts = session.execute(select(prefix, func.count()).where(Mailbox.sort_key >= from_key).group_by(prefix)).all()
    legacy = still_legacy_ids(now, lookback_days).subquery()
    legacy_counts: dict[str, int] = dict(
        session.execute(
            select(prefix, func.count())
            .join(legacy, legacy.c.mailbox_id == Mailbox.id)
            .where(Mailbox.sort_key >= from_key)
            .group_by(prefix)
        ).all()
    )
    return sorted((_bucket_of_prefix(p), p, int(n), int(legacy_counts.get(p, 0))) for p, n in counts)


def _bucket_of_prefix(prefix: str) -> str:
    return DIGITS if prefix[:1].isdigit() else prefix[:1]


def build_units(
    rows: Sequence[tuple[str, str, int, int]],
    weight: str,
    cohorts: int | None,
    max_share: float | None,
    split_letters: bool,
) -> list[UnitStats]:
    """Units in alphabetical order: buckets, heavy ones cut into two-letter prefixes if asked."""
    buckets: dict[str, UnitStats] = {}
    prefixes: dict[str, list[UnitStats]] = defaultdict(list)
    for bucket, prefix, mailboxes, legacy in rows:
        stats = buckets.setdefault(bucket, UnitStats(bucket))
        stats.mailboxes += mailboxes
        stats.legacy += legacy
        prefixes[bucket].append(UnitStats(prefix, mailboxes, legacy))
    ordered = [buckets[b] for b in sorted(buckets)]
    if not split_letters:
        return ordered
    weight_of = {b.key: _weight(b, weight) for b in ordered}
    if cohorts is None:
        total = sum(weight_of.values())
        heavy = {b for b, w in weight_of.items() if max_share is not None and w > max_share * total}
    else:
        heavy = heavy_buckets(weight_of, cohorts)
    units: list[UnitStats] = []
    for b in ordered:
        units += sorted(prefixes[b.key], key=lambda u: u.key) if b.key in heavy else [b]
    return units


def _weight(stats: UnitStats, weight: str) -> int:
    return stats.legacy if weight == "legacy" else stats.mailboxes


def cut(units: list[UnitStats], weight: str, cohorts: int | None, max_share: float | None) -> list[Slice]:
    pure = [Unit(u.key, _weight(u, weight)) for u in units]
    if cohorts is None:
        assert max_share is not None
        cohorts = cohorts_for_max_share(pure, max_share)
    return partition(pure, cohorts)


# --- the proposal -----------------------------------------------------------------------------


@dataclass
class ProposedCohort:
    position: int
    label: str
    start_key: str
    end_key: str | None
    mailboxes: int
    legacy: int
    customers: int
    share: float  # of the balanced weight
    scheduled_at: datetime
    stage: str = "pending"
    kept: bool = False  # already started: carried over unchanged from the active plan


@dataclass
class TooEarly:
    address: str
    told: datetime
    proposed: datetime


@dataclass
class Proposal:
    cohorts: list[ProposedCohort]
    weight: str
    total_weight: int
    too_early: list[TooEarly] = field(default_factory=list)

    @property
    def largest_share(self) -> float:
        return max((c.share for c in self.cohorts if not c.kept), default=0.0)

    @property
    def smallest_share(self) -> float:
        return min((c.share for c in self.cohorts if not c.kept), default=0.0)


def describe_slices(
    session: Session,
    units: list[UnitStats],
    slices: list[Slice],
    weight: str,
    from_key: str,
    times: list[datetime],
    first_position: int,
) -> list[ProposedCohort]:
    total = sum(_weight(u, weight) for u in units) or 1
    starts = [from_key if n == 0 else units[s.first].key for n, s in enumerate(slices)]
    customers = _customers_per_cohort(session, starts)
    result = []
    for n, s in enumerate(slices):
        members = units[s.first : s.last + 1]
        result.append(
            ProposedCohort(
                position=first_position + n,
                label=range_label(units[s.first].key, units[s.last].key),
                start_key=starts[n],
                end_key=starts[n + 1] if n + 1 < len(slices) else None,
                mailboxes=sum(u.mailboxes for u in members),
                legacy=sum(u.legacy for u in members),
                customers=customers.get(n, 0),
                share=round(s.weight / total, 6),
                scheduled_at=times[n],
            )
        )
    return result


_Query = TypeVar("_Query", bound=Select[Any])


def cohort_of(starts: Sequence[str], values: Sequence[Any]) -> ColumnElement[Any]:
    """A CASE giving ``values[n]`` for a sort_key in the n-th range (ranges start at ``starts``)."""
    if len(starts) == 1:
        return literal(values[0])
    whens = [(Mailbox.sort_key < starts[n + 1], values[n]) for n in range(len(starts) - 1)]
    return case(*whens, else_=values[-1])


def _customers_per_cohort(session: Session, starts: list[str]) -> dict[int, int]:
    which = cohort_of(starts, list(range(len(starts)))).label("which")
    pairs = _from(select(Mailbox.customer_id, which).distinct(), starts[0]).subquery()
    rows = session.execute(select(pairs.c.which, func.count()).group_by(pairs.c.which)).all()
    return {int(n): int(c) for n, c in rows}


def _from(query: _Query, start_key: str) -> _Query:
    """Restrict to sort_key ≥ start_key, but only when that excludes something: a range
    read through the sort_key index visits the rows in random order, a full scan does not."""
    return query.where(Mailbox.sort_key >= start_key) if start_key else query


def told_dates(session: Session) -> list[tuple[str, str, datetime]]:
    """(sort_key, address, latest date told) for every mailbox a sent (or sending) notice gave a date."""
    told = func.max(NoticeMailbox.switch_at)
    rows = session.execute(
        select(Mailbox.sort_key, Mailbox.address, told)
        .join(NoticeMailbox, NoticeMailbox.mailbox_id == Mailbox.id)
        .join(Notice, Notice.id == NoticeMailbox.notice_id)
        .where(Notice.state.in_(("sent", "sending")), NoticeMailbox.switch_at.is_not(None))
        .group_by(Mailbox.id, Mailbox.sort_key, Mailbox.address)
    ).all()
    return [(k, a, t) for k, a, t in rows if t is not None]  # the WHERE leaves none out


def find_too_early(told: Iterable[tuple[str, str, datetime]], cohorts: list[ProposedCohort]) -> list[TooEarly]:
    """Mailboxes whose customer was told a date later than the one proposed for them."""
    fresh = [c for c in cohorts if not c.kept]
    if not fresh:
        return []
    starts = [c.start_key for c in fresh]
    found = []
    for sort_key, address, date_told in told:
        i = bisect.bisect_right(starts, sort_key) - 1
        if i < 0:
            continue  # in a cohort that already started: unchanged
        if date_told > fresh[i].scheduled_at:
            found.append(TooEarly(address, date_told, fresh[i].scheduled_at))
    return sorted(found, key=lambda t: t.address)


# --- the active plan --------------------------------------------------------------------------


def active_plan(session: Session) -> Plan | None:
    """The plan in force: the newest one marked active (None before the first ``plan --apply``)."""
    return session.scalars(select(Plan).where(Plan.active).order_by(Plan.id.desc()).limit(1)).first()


def active_plan_id() -> ScalarSelect[int]:
    """``active_plan``'s id as a subquery (NULL before the first ``plan --apply``), to join on in one query."""
    return select(Plan.id).where(Plan.active).order_by(Plan.id.desc()).limit(1).scalar_subquery()


def store(
    session: Session, proposal: Proposal, params: dict[str, Any], now: datetime, actor: str, previous: Plan | None
) -> Plan:
    """Write the proposal as the new active plan; started cohorts and their members carry over."""
    if previous is not None:
        previous.active = False
    plan = Plan(created_at=now, actor=actor, params=params, active=True)
    session.add(plan)
    session.flush()
    old_by_position = {c.position: c for c in previous.cohorts} if previous is not None else {}
    fresh: list[tuple[str, int]] = []
    for proposed in proposal.cohorts:
        old = old_by_position.get(proposed.position) if proposed.kept else None
        cohort = Cohort(
            plan_id=plan.id,
            position=proposed.position,
            label=proposed.label,
            start_key=proposed.start_key,
            end_key=proposed.end_key,
            mailbox_count=old.mailbox_count if old else proposed.mailboxes,
            share=old.share if old else proposed.share,
            scheduled_at=proposed.scheduled_at,
            stage=old.stage if old else "pending",
            enforced_at=old.enforced_at if old else None,
            stage_changed_at=old.stage_changed_at if old else None,
        )
        session.add(cohort)
        session.flush()
        if old is not None:
            session.execute(
                insert(CohortMember).from_select(
                    ["plan_id", "mailbox_id", "cohort_id"],
                    select(literal(plan.id), CohortMember.mailbox_id, literal(cohort.id)).where(
                        CohortMember.cohort_id == old.id
                    ),
                )
            )
        else:
            fresh.append((proposed.start_key, cohort.id))
    _insert_members(session, plan.id, fresh, carried_over=len(fresh) < len(proposal.cohorts))
    session.flush()
    return plan


def _insert_members(session: Session, plan_id: int, fresh: list[tuple[str, int]], carried_over: bool) -> None:
    """One INSERT … SELECT for every new cohort, in mailbox id order (appends to the primary key)."""
    if not fresh:
        return
    starts, cohort_ids = [k for k, _ in fresh], [c for _, c in fresh]
    query = _from(select(literal(plan_id), Mailbox.id, cohort_of(starts, cohort_ids)), starts[0])
    if carried_over:  # a mailbox renamed into the open range stays in the started cohort it was in
        taken = select(CohortMember.mailbox_id).where(
            CohortMember.plan_id == plan_id, CohortMember.mailbox_id == Mailbox.id
        )
        query = query.where(~taken.exists())
    session.execute(
        insert(CohortMember).from_select(["plan_id", "mailbox_id", "cohort_id"], query.order_by(Mailbox.id))
    )


def started_cohorts(plan: Plan) -> list[Cohort]:
    return [c for c in plan.cohorts if c.stage != "pending"]


# --- schedules for other areas ----------------------------------------------------------------


@dataclass(frozen=True)
class MailboxSchedule:
    cohort_label: str
    position: int
    scheduled_at: datetime
    stage: str
    exempt_until: datetime | None


CHUNK = 500


def schedule_for(session: Session, mailbox_ids: Iterable[int]) -> dict[int, MailboxSchedule]:
    """``{mailbox_id: MailboxSchedule}`` under the active plan (cohort, date, stage, exemption).

    Mailboxes outside any plan are absent from the result.
    """
    ids = list(mailbox_ids)
    result: dict[int, MailboxSchedule] = {}
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        rows = session.execute(
            select(CohortMember.mailbox_id, Cohort.label, Cohort.position, Cohort.scheduled_at, Cohort.stage)
            .join(Cohort, Cohort.id == CohortMember.cohort_id)
            .join(Plan, Plan.id == CohortMember.plan_id)
            .where(Plan.active, CohortMember.mailbox_id.in_(chunk))
        ).all()
        exempt = dict(
            session.execute(
                select(Exemption.mailbox_id, func.max(Exemption.until))
                .where(Exemption.ended_at.is_(None), Exemption.mailbox_id.in_(chunk))
                .group_by(Exemption.mailbox_id)
            ).all()
        )
        for mailbox_id, label, position, scheduled_at, stage in rows:
            result[mailbox_id] = MailboxSchedule(label, position, scheduled_at, stage, exempt.get(mailbox_id))
    return result


def customers_of(session: Session, cohort_ids: Sequence[int], limit: int = 50) -> list[str]:
    """Names of the customers with mailboxes in these cohorts (for dry runs)."""
    if not cohort_ids:
        return []
    return list(
        session.scalars(
            select(Customer.name)
            .join(Mailbox, Mailbox.customer_id == Customer.id)
            .join(CohortMember, CohortMember.mailbox_id == Mailbox.id)
            .where(CohortMember.cohort_id.in_(cohort_ids))
            .distinct()
            .order_by(Customer.name)
            .limit(limit)
        )
    )


def set_stage(session: Session, cohort: Cohort, stage: str, now: datetime) -> None:
    if stage not in STAGES:
        raise PlanError(f"unknown stage {stage!r}")
    if cohort.enforced_at is None and stage != "pending":
        cohort.enforced_at = now
    if stage == "pending":
        cohort.enforced_at = None
    cohort.stage = stage
    cohort.stage_changed_at = now
    session.flush()
