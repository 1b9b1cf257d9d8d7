"""Where the rollout stands: a read model over every area's tables (never writes).

``rollout status`` and the scheduler's "what next" both read from here. Every
query is bounded by an index or by the number of cohorts, waves and weeks, so the
report stays fast on a provider with a million mailboxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import and_, case, func, select, text
from sqlalchemy.orm import Session

from ..config import Settings
from ..models import (
    Campaign,
    Cohort,
    CohortMember,
    Customer,
    Exemption,
    JobRun,
    LegacyDay,
    Mailbox,
    Notice,
    Plan,
    RefusalHour,
    Retirement,
    ReviewItem,
    RolloutState,
    ScanSource,
)
from ..notify.campaign import active_campaign, wave_due_at
from ..notify.notice_delivery import Unreachable, delivery_counts, unreachable
from ..plan import holdback, plans
from ..plan.gates import Gate
from ..plan.holdback import HeldView
from ..plan.plans import active_plan

TREND_WEEKS = 8
EXPIRING_WITHIN = timedelta(days=7)


@dataclass
class WaveStatus:
    wave: int
    due_at: datetime
    sent: int = 0
    failed: int = 0
    uncertain: int = 0  # left in `sending` by a killed run: maybe delivered, never resent silently
    pending: int = 0
    # of the sent ones, what the provider MTA's log says (`rollout scan`); unknown: not seen there yet
    delivered: int = 0
    bounced: int = 0
    delayed: int = 0
    unknown: int = 0


@dataclass
class CohortStatus:
    position: int
    label: str
    mailboxes: int
    share: float
    still_legacy: int
    stage: str
    scheduled_at: datetime
    enforced_at: datetime | None
    refusals: int  # refusals by our map logged since the cohort was switched off
    refusals_per_hour: list[HourCount] = field(default_factory=list)  # since the switch-off; hours without any left out


@dataclass
class HourCount:
    hour: datetime  # the start of the clock hour (UTC, by log time)
    refusals: int


@dataclass
class WeekCount:
    week: date  # the Monday
    mailboxes: int


@dataclass
class ExpiringExemption:
    address: str
    until: datetime
    reason: str


@dataclass
class NextAction:
    action: str  # "notify wave 3", "step cohort 2 (d–f)", …
    at: datetime | None


@dataclass
class Pause:
    reason: str | None
    by: str | None
    at: datetime | None


@dataclass
class LastJob:
    job: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    note: str | None  # the reason a job was skipped, or its error


@dataclass
class Retired:
    at: datetime
    legacy_map: str
    mode: str  # empty | check
    by: str


@dataclass
class Status:
    now: datetime
    phase: str
    customers: int
    mailboxes: int
    legacy_mailboxes: int
    next_action: NextAction | None
    paused: Pause | None
    waves: list[WaveStatus] = field(default_factory=list)
    cohorts: list[CohortStatus] = field(default_factory=list)
    trend: list[WeekCount] = field(default_factory=list)
    expiring: list[ExpiringExemption] = field(default_factory=list)
    jobs: list[LastJob] = field(default_factory=list)  # the scheduler's latest run of each job
    map_note: str | None = None  # the map in force and the database disagree (set by the workflow: it reads the map)
    legacy_note: str | None = None  # the final step or its undo changed the legacy map, unrecorded (set likewise)
    open_sightings: int = 0  # ambiguous sightings nobody has attributed or dismissed yet
    unreachable: list[Unreachable] = field(default_factory=list)  # customers whose latest notice bounced (at most 20)
    unreachable_count: int = 0
    held: list[HeldView] = field(default_factory=list)  # mailboxes a step held back: not warned in time (at most 50)
    held_count: int = 0
    retired: Retired | None = None  # the final step: the legacy path retired after the last cohort
    # before the next step; filled by the status workflow, not here: the external gate command runs there
    gates: list[Gate] = field(default_factory=list)


def count_active_plan(session: Session, settings: Settings, now: datetime) -> plans.PlanCounts | None:
    """The active plan's per-cohort counts for ``build_status`` and the next step (None: no plan yet)."""
    _room_for_aggregates(session)
    plan = active_plan(session)
    since = (now - timedelta(days=settings.notices.lookback_days)).date()
    return plans.count_plan(session, plan, since) if plan else None


def build_status(session: Session, settings: Settings, now: datetime, counts: plans.PlanCounts | None = None) -> Status:
    """``counts``: ``count_active_plan`` at ``now``, when the caller has them (counted here otherwise)."""
    _room_for_aggregates(session)
    since = now - timedelta(days=settings.notices.lookback_days)
    plan = active_plan(session)
    campaign = active_campaign(session)
    waves = wave_statuses(session, campaign) if campaign else []
    if plan is not None and (counts is None or not counts.fits(plan, since.date())):
        counts = plans.count_plan(session, plan, since.date())
    legacy = counts.still_legacy if plan and counts else plans.still_legacy_counts(session, None, since.date())
    cohorts = cohort_statuses(session, plan, counts) if plan and counts else []
    paused = current_pause(session)
    final_stage = settings.enforcement.ladder[-1] if settings.enforcement.ladder else "reject"
    retired = current_retirement(session, plan)
    held = holdback.views(session)
    bounced = unreachable(session)
    return Status(
        now=now,
        phase=phase(session, campaign, cohorts, final_stage, retired is not None),
        customers=session.scalar(select(func.count()).select_from(Customer)) or 0,
        mailboxes=session.scalar(select(func.count()).select_from(Mailbox)) or 0,
        legacy_mailboxes=sum(legacy.values()),
        next_action=next_action(waves, cohorts, final_stage, now, paused is not None, retired is not None),
        paused=paused,
        waves=waves,
        cohorts=cohorts,
        trend=legacy_trend(session, now),
        expiring=expiring_exemptions(session, now),
        jobs=last_jobs(session),
        open_sightings=open_sightings(session),
        unreachable=bounced[:20],
        unreachable_count=len(bounced),
        held=held[:50],
        held_count=len(held),
        retired=retired,
    )


def _room_for_aggregates(session: Session) -> None:
    """PostgreSQL: memory to group the lookback's legacy days of a million mailboxes in one pass, for this
    transaction (the default 4 MB spills them to disk)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL work_mem = '64MB'"))


def wave_statuses(session: Session, campaign: Campaign) -> list[WaveStatus]:
    waves = {k: WaveStatus(k, wave_due_at(campaign, k)) for k in range(1, campaign.weeks + 1)}
    rows = session.execute(
        select(Notice.wave, Notice.state, func.count())
        .where(Notice.campaign_id == campaign.id)
        .group_by(Notice.wave, Notice.state)
    )
    for wave, state, count in rows:
        status = waves.setdefault(wave, WaveStatus(wave, wave_due_at(campaign, wave)))
        attribute = {"sent": "sent", "failed": "failed", "sending": "uncertain"}.get(state, "pending")
        setattr(status, attribute, getattr(status, attribute) + count)
    for wave, counts in delivery_counts(session, campaign.id, list(waves)).items():
        for state, count in counts.items():
            setattr(waves[wave], state, count)
    return [waves[k] for k in sorted(waves)]


def open_sightings(session: Session) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(ReviewItem)
            .where(ReviewItem.kind == "ambiguous", ReviewItem.resolution.is_(None))
        )
        or 0
    )


def cohort_statuses(session: Session, plan: Plan, counts: plans.PlanCounts) -> list[CohortStatus]:
    hourly = refusals_per_hour(session, plan)
    still_legacy, refusals = counts.still_legacy, counts.refusals
    return [
        CohortStatus(
            position=c.position,
            label=c.label,
            mailboxes=c.mailbox_count,
            share=c.share,
            still_legacy=still_legacy.get(c.id, 0),
            stage=c.stage,
            scheduled_at=c.scheduled_at,
            enforced_at=c.enforced_at,
            refusals=refusals.get(c.id, 0),
            refusals_per_hour=hourly.get(c.id, []),
        )
        for c in plan.cohorts
    ]


def refusals_per_hour(session: Session, plan: Plan) -> dict[int, list[HourCount]]:
    """Per switched-off cohort (by id), its refusals by our map in each clock hour since its switch-off."""
    since = {c.id: c.enforced_at.replace(minute=0, second=0, microsecond=0) for c in plan.cohorts if c.enforced_at}
    if not since:
        return {}
    # Grouped before the join (see plans.refusals_since_switch_off): from the refused hours to their mailboxes.
    refused = (
        select(RefusalHour.mailbox_id, RefusalHour.hour, func.sum(RefusalHour.count).label("count"))
        .where(RefusalHour.hour >= min(since.values()))
        .group_by(RefusalHour.mailbox_id, RefusalHour.hour)
        .subquery()
    )
    rows = session.execute(
        select(CohortMember.cohort_id, refused.c.hour, func.sum(refused.c.count))
        .join(CohortMember, and_(CohortMember.mailbox_id == refused.c.mailbox_id, CohortMember.plan_id == plan.id))
        .where(CohortMember.cohort_id.in_(list(since)))
        .group_by(CohortMember.cohort_id, refused.c.hour)
        .order_by(CohortMember.cohort_id, refused.c.hour)
    )
    series: dict[int, list[HourCount]] = {}
    for cohort_id, hour, count in rows:
        if hour >= since[cohort_id] and count:
            series.setdefault(cohort_id, []).append(HourCount(hour, int(count)))
    return series


def legacy_trend(session: Session, now: datetime, weeks: int = TREND_WEEKS) -> list[WeekCount]:
    """Mailboxes with legacy use in each of the last ``weeks`` weeks (Monday to Sunday, UTC): one pass for all."""
    this_monday = now.date() - timedelta(days=now.weekday())
    starts = [this_monday - timedelta(weeks=back) for back in range(weeks - 1, -1, -1)]
    week = case(*[(LegacyDay.day >= start, i) for i, start in reversed(list(enumerate(starts)))]).label("week")
    used = (
        select(week, LegacyDay.mailbox_id)
        .where(LegacyDay.day >= starts[0], LegacyDay.day < this_monday + timedelta(days=7), LegacyDay.legacy_count > 0)
        .subquery()
    )
    rows = session.execute(select(used.c.week, func.count(func.distinct(used.c.mailbox_id))).group_by(used.c.week))
    counts: dict[int, int] = {index: int(n) for index, n in rows}
    trend = [WeekCount(start, int(counts.get(i, 0))) for i, start in enumerate(starts)]
    while trend and trend[0].mailboxes == 0:  # weeks before the first scan say nothing
        trend.pop(0)
    return trend


def expiring_exemptions(session: Session, now: datetime) -> list[ExpiringExemption]:
    rows = session.execute(
        select(Mailbox.address, Exemption.until, Exemption.reason)
        .join(Mailbox, Mailbox.id == Exemption.mailbox_id)
        .where(Exemption.ended_at.is_(None), Exemption.until <= now + EXPIRING_WITHIN)
        .order_by(Exemption.until)
    )
    return [ExpiringExemption(address, until, reason) for address, until, reason in rows]


def last_jobs(session: Session) -> list[LastJob]:
    latest = select(JobRun.job, func.max(JobRun.id).label("id")).group_by(JobRun.job).subquery()
    runs = session.scalars(select(JobRun).join(latest, JobRun.id == latest.c.id).order_by(JobRun.job))
    return [
        LastJob(r.job, r.started_at, r.finished_at, r.outcome, r.details.get("reason") or r.details.get("error"))
        for r in runs
    ]


def current_pause(session: Session) -> Pause | None:
    state = session.scalars(select(RolloutState).order_by(RolloutState.id).limit(1)).first()
    if state is None or not state.paused:
        return None
    return Pause(state.paused_reason, state.paused_by, state.paused_at)


def current_retirement(session: Session, plan: Plan | None) -> Retired | None:
    if plan is None:
        return None
    row = session.scalars(
        select(Retirement)
        .where(Retirement.plan_id == plan.id, Retirement.undone_at.is_(None))
        .order_by(Retirement.id.desc())
        .limit(1)
    ).first()
    return Retired(row.retired_at, row.legacy_map, row.mode, row.actor) if row else None


def phase(
    session: Session, campaign: Campaign | None, cohorts: list[CohortStatus], final_stage: str, retired: bool = False
) -> str:
    if cohorts and all(c.stage == final_stage for c in cohorts):
        return "done" if retired else "switch-off"  # done only once the final step has retired the legacy path
    if any(c.enforced_at for c in cohorts):
        return "switch-off"
    if campaign is not None:
        return "notices"
    scanned = session.scalar(select(ScanSource.id).limit(1)) or session.scalar(select(LegacyDay.mailbox_id).limit(1))
    return "scanning" if scanned else "inventory"


def next_action(
    waves: list[WaveStatus],
    cohorts: list[CohortStatus],
    final_stage: str,
    now: datetime,
    paused: bool = False,
    retired: bool = False,
) -> NextAction | None:
    """The earliest of: the next wave due, the first cohort not at its final stage, the final step."""
    candidates: list[NextAction] = []
    upcoming = [w for w in waves if w.due_at > now]
    if upcoming:
        candidates.append(NextAction(f"notify wave {upcoming[0].wave}", upcoming[0].due_at))
    for cohort in cohorts:
        if cohort.stage != final_stage:
            verb = "switch off" if cohort.stage == "pending" else "advance"
            held = " (paused: waits for `rollout resume`)" if paused else ""
            candidates.append(
                NextAction(f"{verb} cohort {cohort.position} ({cohort.label}){held}", cohort.scheduled_at)
            )
            break
    if cohorts and not retired and all(c.stage == final_stage for c in cohorts):
        last = max((c.enforced_at for c in cohorts if c.enforced_at), default=None)
        final = "the final step: retire the legacy path (stop its daemon, then `rollout step`)"
        candidates.append(NextAction(final, last))
    if not candidates:
        return None
    return min(candidates, key=lambda a: a.at or now)


def step_enforced(session: Session, position: int) -> bool | None:
    """Has cohort ``position`` of the active plan been switched off? None when there is no such cohort."""
    plan = active_plan(session)
    if plan is None:
        return None
    cohort = session.scalars(select(Cohort).where(Cohort.plan_id == plan.id, Cohort.position == position)).first()
    if cohort is None:
        return None
    return cohort.enforced_at is not None
