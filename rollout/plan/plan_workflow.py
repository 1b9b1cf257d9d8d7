"""Plan and enforcement use cases: plan, step, pause, resume, undo, exempt.

Every change of what is enforced goes through ``_swap``: the database changes are
made and flushed, the map is generated from them and published by the backend, and
only then is the transaction committed. If the map cannot be published, the
transaction rolls back: the old map stays in force and the database is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .. import audit
from ..addresses import AddressError, parse_address
from ..clock import as_utc, out_of_range
from ..db import write_lock
from ..enforcement import STRENGTH, Backend, MapEntry, backend_for, checksum, legacy, writable
from ..enforcement.files import clear_intent, read_intent, write_intent
from ..errors import EnforcementError, GatesFailed, GuardError, PlanError, RolloutError
from ..models import (
    Campaign,
    Cohort,
    CohortMember,
    Exemption,
    LegacyDay,
    Mailbox,
    MapVersion,
    Notice,
    Plan,
    Retirement,
    RolloutState,
)
from ..notify.campaign import wave_due_at
from ..runtime import Runtime
from . import gates as gate_checks
from . import holdback, plans, retirement
from .cohorts import MAX_EVERY, Window, layout, parse_window
from .plans import Proposal, ProposedCohort

TOO_EARLY_SHOWN = 20
LEFT_OUT_SHOWN = 20
log = logging.getLogger(__name__)


# --- plan -------------------------------------------------------------------------------------


@dataclass
class PlanRequest:
    start: datetime  # naive = in ``tz``
    every: timedelta
    cohorts: int | None = None
    max_share: float | None = None
    weight: str = "mailboxes"  # mailboxes | legacy
    split_letters: bool = False
    window: str | None = None  # default: settings.rollout.window
    skip_weekends: bool | None = None
    tz: str | None = None


@dataclass
class PlanResult:
    proposal: Proposal
    applied: bool
    plan_id: int | None = None


def make_plan(runtime: Runtime, request: PlanRequest, apply: bool = False) -> PlanResult:
    """Propose cohorts and dates; with ``apply`` store them as the active plan."""
    if (request.cohorts is None) == (request.max_share is None):
        raise PlanError("give exactly one of --cohorts N or --max-share SHARE")
    if request.weight not in ("mailboxes", "legacy"):
        raise PlanError(f"--weight must be mailboxes or legacy, not {request.weight!r}")
    now = runtime.clock.now()
    window = _window(runtime, request)
    if (problem := out_of_range(request.start, "--start", now)) or not timedelta(0) < request.every <= MAX_EVERY:
        raise PlanError(problem or f"--every must be between 1 second and {MAX_EVERY.days} days")
    start = request.start if request.start.tzinfo else request.start.replace(tzinfo=window.zone)
    with runtime.sessions() as session, session.begin():
        plans.prepare_bulk(session)
        previous = plans.active_plan(session)
        kept, from_key = _carried_over(previous)
        units = plans.build_units(
            plans.unit_stats(session, now, runtime.settings.notices.lookback_days, from_key),
            request.weight,
            request.cohorts,
            request.max_share,
            request.split_letters,
        )
        if not units:
            raise PlanError("there are no mailboxes to plan: import the inventory first (`rollout inventory import`)")
        slices = plans.cut(units, request.weight, request.cohorts, request.max_share)
        if problem := out_of_range(as_utc(start) + request.every * len(slices), "the last cohort's time", now):
            raise PlanError(f"{problem}; start earlier, or step more often")
        times = layout(as_utc(start), request.every, len(slices), window)
        fresh = plans.describe_slices(session, units, slices, request.weight, from_key, times, len(kept) + 1)
        total = sum(u.legacy if request.weight == "legacy" else u.mailboxes for u in units)
        proposal = Proposal(kept + fresh, request.weight, total)
        proposal.too_early = plans.find_too_early(plans.told_dates(session), fresh)
        if not apply:
            return PlanResult(proposal, applied=False)
        if proposal.too_early:
            raise PlanError(_too_early_message(proposal))
        params = _params(request, start, window)
        plan = plans.store(session, proposal, params, now, runtime.actor, previous)
        audit.record(
            session,
            now,
            runtime.actor,
            "plan.apply",
            plan_id=plan.id,
            replaces=previous.id if previous else None,
            layout=[[c.label, c.mailboxes, c.scheduled_at.isoformat()] for c in proposal.cohorts],
            **params,
        )
        return PlanResult(proposal, applied=True, plan_id=plan.id)


def _window(runtime: Runtime, request: PlanRequest) -> Window:
    defaults = runtime.settings.rollout
    return parse_window(
        request.window or defaults.window,
        request.tz or defaults.timezone,
        defaults.skip_weekends if request.skip_weekends is None else request.skip_weekends,
    )


def _carried_over(previous: Plan | None) -> tuple[list[ProposedCohort], str]:
    """Cohorts of the active plan that already started (kept as they are), and where re-planning starts."""
    if previous is None:
        return [], ""
    started = plans.started_cohorts(previous)
    if not started:
        return [], ""
    last = max(c.position for c in started)
    rest = [c for c in previous.cohorts if c.position > last]
    if not rest:
        raise PlanError("every cohort of the active plan has started; there is nothing left to re-plan")
    kept = [
        ProposedCohort(
            c.position,
            c.label,
            c.start_key,
            c.end_key,
            c.mailbox_count,
            0,
            0,
            c.share,
            c.scheduled_at,
            c.stage,
            kept=True,
        )
        for c in previous.cohorts
        if c.position <= last
    ]
    return kept, rest[0].start_key


def _params(request: PlanRequest, start: datetime, window: Window) -> dict[str, Any]:
    return {
        "cohorts": request.cohorts,
        "max_share": request.max_share,
        "weight": request.weight,
        "split_letters": request.split_letters,
        "start": start.isoformat(),
        "every_seconds": request.every.total_seconds(),
        "window": f"{window.opens:%H:%M}-{window.closes:%H:%M}",
        "skip_weekends": window.skip_weekends,
        "tz": window.zone.key,
    }


def _too_early_message(proposal: Proposal) -> str:
    shown = proposal.too_early[:TOO_EARLY_SHOWN]
    lines = [
        f"{len(proposal.too_early)} mailboxes would get an earlier date than their customer was told; "
        "nothing was stored. Start later, or move these cohorts:"
    ]
    lines += [
        f"  {t.address}: told {t.told:%Y-%m-%d %H:%M} UTC, plan says {t.proposed:%Y-%m-%d %H:%M} UTC" for t in shown
    ]
    if len(proposal.too_early) > len(shown):
        lines.append(f"  … and {len(proposal.too_early) - len(shown)} more")
    return "\n".join(lines)


# --- what is enforced ----------------------------------------------------------------------


def _exempt_ids(session: Session, now: datetime) -> set[int]:
    return set(session.scalars(select(Exemption.mailbox_id).where(Exemption.ended_at.is_(None), Exemption.until > now)))


def desired_entries(session: Session, now: datetime) -> list[MapEntry]:
    """Every switched-off mailbox's address, and every envelope sender seen in its legacy use."""
    plan = plans.active_plan(session)
    stage_of_cohort = {c.id: c.stage for c in plan.cohorts if c.stage != "pending"} if plan else {}
    if not stage_of_cohort:
        return []
    exempt = _exempt_ids(session, now) | holdback.held_ids(session)  # held: not warned in time (rollout.plan.holdback)
    in_force = CohortMember.cohort_id.in_(list(stage_of_cohort))
    stage_of: dict[str, str] = {}
    stage_by_mailbox: dict[int, str] = {}
    own_keys: set[str] = set()
    exempt_keys: set[str] = set()
    rows = session.connection().execute(
        select(Mailbox.id, Mailbox.address_key, CohortMember.cohort_id)
        .join(CohortMember, CohortMember.mailbox_id == Mailbox.id)
        .where(in_force)
    )
    for mailbox_id, key, cohort_id in rows:
        own_keys.add(key)
        if mailbox_id in exempt:
            exempt_keys.add(key)
        else:
            stage_of[key] = stage_by_mailbox[mailbox_id] = stage_of_cohort[cohort_id]
    senders = (
        select(LegacyDay.mailbox_id, LegacyDay.senders)
        .join(CohortMember, CohortMember.mailbox_id == LegacyDay.mailbox_id)
        .where(in_force)
    )
    for mailbox_id, listed in session.connection().execute(senders):
        stage = stage_by_mailbox.get(mailbox_id)
        if stage is None or not listed:
            continue
        for sender in listed:
            key = str(sender).strip().lower()
            if key and "@" in key and STRENGTH[stage] > STRENGTH.get(stage_of.get(key, ""), 0):
                stage_of[key] = stage
    _drop_unswitched_addresses(session, stage_of, set(stage_of) - own_keys)
    for key in exempt_keys:
        stage_of.pop(key, None)  # an exempt mailbox stays out even when another one used its address
    return [MapEntry(*item) for item in stage_of.items()]


def _drop_unswitched_addresses(session: Session, stage_of: dict[str, str], keys: set[str]) -> None:
    """A sender seen in someone's legacy use that is itself a mailbox not switched off stays out."""
    candidates = sorted(keys)
    for i in range(0, len(candidates), 500):
        for key in session.scalars(select(Mailbox.address_key).where(Mailbox.address_key.in_(candidates[i : i + 500]))):
            stage_of.pop(key, None)


@dataclass
class MapDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # stage differs


def _current_stages(text: str | None) -> dict[str, str]:
    stages: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, action = line.partition("\t")
        verb = action.split(" ", 1)[0].lower()
        stages[key] = verb if verb in STRENGTH else "reject"  # plain-list lines carry no action
    return stages


def diff(before: dict[str, str], after: list[MapEntry]) -> MapDiff:
    new = dict(after)
    return MapDiff(
        added=sorted(set(new) - set(before)),
        removed=sorted(set(before) - set(new)),
        changed=sorted(k for k in set(new) & set(before) if new[k] != before[k]),
    )


@dataclass
class Swap:
    checksum_before: str | None
    checksum_after: str
    entries: int
    diff: MapDiff
    drifted: bool = (
        False  # the map in force was not the one last recorded (edited by hand, or a swap killed before commit)
    )
    left_out: list[str] = field(default_factory=list)  # senders that cannot be written in the map safely, with why


def _recorded_checksum(session: Session) -> str | None:
    return session.scalars(select(MapVersion.checksum).where(MapVersion.active)).first()


def _record_version(
    session: Session,
    now: datetime,
    backend: Backend,
    text_checksum: str,
    entries: int,
    reason: str,
    plan: Plan | None,
    ladder: tuple[str, ...],
) -> None:
    session.execute(update(MapVersion).where(MapVersion.active).values(active=False))
    cohorts = plan.cohorts if plan is not None else []
    session.add(
        MapVersion(
            created_at=now,
            backend=backend.name,
            path=str(backend.path),
            checksum=text_checksum,
            entries=entries,
            reason=reason,
            active=True,
            step=steps_taken(cohorts, ladder),
            plan_id=plan.id if plan else None,
            stages={str(c.position): c.stage for c in cohorts},
        )
    )
    session.flush()


def _swap(runtime: Runtime, session: Session, reason: str, plan: Plan | None) -> Swap:
    """Publish the map the (flushed, uncommitted) database state asks for, and record the version.

    Called inside ``_map_change``: the intent (the new version's checksum) is written beside the map
    before it is published, and cleared once the database has committed the version (the outcome).
    """
    now = runtime.clock.now()
    backend = backend_for(runtime.settings.enforcement)
    before = backend.current()
    recorded = _recorded_checksum(session)
    drifted = before is not None and recorded is not None and checksum(before) != recorded
    entries, left_out = writable(desired_entries(session, now))
    if left_out:
        shown = "; ".join(left_out[:LEFT_OUT_SHOWN])
        log.warning("%d senders left out of the map (they cannot be written in it safely): %s", len(left_out), shown)
    text = backend.render(entries)
    write_intent(
        backend.path,
        {"checksum": checksum(text), "previous": checksum(before), "reason": reason, "at": now.isoformat()},
    )
    published = backend.publish(entries, text)
    ladder = runtime.settings.enforcement.ladder
    _record_version(session, now, backend, published.checksum, published.entries, reason, plan, ladder)
    changes = diff(_current_stages(before), entries)
    return Swap(checksum(before), published.checksum, published.entries, changes, drifted, left_out)


@contextmanager
def _map_change(runtime: Runtime) -> Iterator[None]:
    """Around a command that may swap the map: one at a time, and a swap never left half-recorded.

    Holds the swap lock beside the map; first repairs what an earlier run left unfinished, and when
    this run's database commit fails after its map was published, puts the map back at once.
    """
    backend = backend_for(runtime.settings.enforcement)
    with backend.lock():
        repair_map(runtime, backend)
        try:
            yield
        except SQLAlchemyError as exc:
            if read_intent(backend.path) is None:
                raise
            outcome = _put_back(runtime, backend)
            raise RolloutError(f"the database did not record the change ({_first_line(exc)}); {outcome}") from None
        except EnforcementError as exc:
            if exc.unchanged:
                clear_intent(backend.path)  # the backend stopped before touching the map in force
            else:
                _put_back(runtime, backend)
            raise
        except BaseException:
            _put_back(runtime, backend)
            raise
        repair_map(runtime, backend)  # the commit happened: this only clears the intent


@contextmanager
def _legacy_change(runtime: Runtime) -> Iterator[None]:
    """Around step and undo: the final step's change to the legacy map (or main.cf) is never left half-recorded.

    The protocol of ``_map_change``: the change writes its intent beside the legacy map first and the database
    commit is the outcome; what an earlier run killed in between left is repaired first (the database decides),
    and a commit that fails puts the legacy side back at once.
    """
    target = _legacy_target(runtime)
    if target is None:
        yield
        return
    repair_legacy(runtime, target)
    try:
        yield
    except EnforcementError as exc:
        if exc.unchanged:
            clear_intent(target.path)  # stopped before the legacy map or main.cf changed
        else:
            _put_back_legacy(runtime, target)
        raise
    except BaseException:
        _put_back_legacy(runtime, target)
        raise
    repair_legacy(runtime, target)  # the commit happened: this only clears the intent


def _legacy_target(runtime: Runtime) -> legacy.LegacyMap | None:
    try:
        return retirement.legacy_map(runtime.settings.enforcement)
    except RolloutError:  # not configured (or wrongly): the final step says so when it is due
        return None


def _put_back_legacy(runtime: Runtime, target: legacy.LegacyMap) -> None:
    try:
        repair_legacy(runtime, target)
    except Exception as exc:  # noqa: BLE001 - the original failure is the one to report; status shows this one
        log.warning("the legacy map could not be put back yet: %s", exc)


def repair_legacy(runtime: Runtime, target: legacy.LegacyMap | None = None) -> str | None:
    """Finish what a final step or its undo left when killed before its commit (call it before changing either):
    the legacy map (or main.cf) is made what the database says, audited as ``legacy.repair``."""
    target = target or _legacy_target(runtime)
    if target is None or read_intent(target.path) is None:
        return None
    with runtime.sessions() as session, session.begin():
        write_lock(session)
        intent = read_intent(target.path)  # another run may have repaired it while this one waited
        if intent is None:
            return None
        retired = retirement.current(session, plans.active_plan(session)) is not None
        settings, now = runtime.settings.enforcement, runtime.clock.now()
        done = retirement.repair(session, settings, target, intent, retired, now, runtime.actor)
    clear_intent(target.path)
    if done:
        log.warning("legacy map repaired: %s", done)
    return done


def _first_line(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _put_back(runtime: Runtime, backend: Backend) -> str:
    try:
        repair_map(runtime, backend)
    except Exception as exc:  # the disk or the database may still be failing: say so, keep the intent
        log.warning("the map could not be put back yet: %s", exc)
        return (
            "the map in force is AHEAD of the database until the next step, "
            "undo or exempt repairs it (`rollout status`)"
        )
    return "the map in force was put back to match the database"


@dataclass
class MapRepair:
    checksum_before: str | None
    checksum_after: str
    reason: str


def repair_map(runtime: Runtime, backend: Backend | None = None) -> MapRepair | None:
    """Finish what a swap left behind (call under the swap lock): the database decides what is enforced.

    No intent beside the map: nothing to do. An intent whose version the database recorded: the commit
    happened, the intent goes. Otherwise the swap's commit failed or never came (a crash, a full disk):
    the map is published again from the database, recorded if it differs from the recorded version, and
    the intent goes.
    """
    backend = backend or backend_for(runtime.settings.enforcement)
    intent = read_intent(backend.path)
    if intent is None:
        return None
    now = runtime.clock.now()
    with runtime.sessions() as session, session.begin():
        write_lock(session)
        recorded = _recorded_checksum(session)
        if intent.get("checksum") is not None and intent.get("checksum") == recorded:
            clear_intent(backend.path)
            return None
        before = checksum(backend.current())
        entries, _left_out = writable(desired_entries(session, now))
        published = backend.publish(entries)
        repair = None
        if published.checksum != recorded:
            reason = f"repair: the swap for {intent.get('reason', 'an unknown change')} was not recorded"
            plan = plans.active_plan(session)
            ladder = runtime.settings.enforcement.ladder
            _record_version(session, now, backend, published.checksum, published.entries, reason, plan, ladder)
            repair = MapRepair(before, published.checksum, reason)
        if before != published.checksum or repair is not None:
            audit.record(
                session,
                now,
                runtime.actor,
                "map.repair",
                intent=intent,
                map_before=before,
                map_after=published.checksum,
            )
    clear_intent(backend.path)
    return repair


# --- the ladder -----------------------------------------------------------------------------


def steps_taken(cohorts: list[Cohort], ladder: tuple[str, ...]) -> int:
    return sum(
        ladder.index(c.stage) + 1 if c.stage in ladder else (len(ladder) if c.stage != "pending" else 0)
        for c in cohorts
    )


def stages_after(n: int, count: int, ladder: tuple[str, ...]) -> list[str]:
    """The stage of each cohort (by position) after ``n`` steps."""
    width = len(ladder)
    return [
        ladder[-1] if n >= (i + 1) * width else ("pending" if n <= i * width else ladder[n - i * width - 1])
        for i in range(count)
    ]


@dataclass
class NextStep:
    cohort_id: int
    position: int
    label: str
    from_stage: str
    to_stage: str
    mailboxes: int
    scheduled_at: datetime
    due_at: datetime  # the earliest moment every time-based guard passes
    blockers: list[str]
    still_legacy: int = 0  # gate: mailboxes of this cohort still using the legacy path
    refusals_since_switch: int = 0  # gate: refusals of already switched-off mailboxes
    gates: list[gate_checks.Gate] = field(default_factory=list)  # [gates], each with figure and threshold
    kind: str = "cohort"  # cohort | retire (the final step: the legacy map retired after the last cohort)

    @property
    def failed_gates(self) -> list[gate_checks.Gate]:
        return gate_checks.failed(self.gates)


def _ladder(runtime: Runtime) -> tuple[str, ...]:
    ladder = runtime.settings.enforcement.ladder
    if not ladder or any(s not in STRENGTH for s in ladder) or list(ladder) != sorted(ladder, key=STRENGTH.__getitem__):
        raise PlanError(
            f'enforcement.ladder {list(ladder)} must climb warn → defer → reject (e.g. ["defer", "reject"])'
        )
    return ladder


def _next_move(plan: Plan, ladder: tuple[str, ...]) -> tuple[Cohort, str] | None:
    started = plans.started_cohorts(plan)
    if started:
        current = max(started, key=lambda c: c.position)
        if current.stage in ladder and current.stage != ladder[-1]:
            return current, ladder[ladder.index(current.stage) + 1]
    pending = [
        c
        for c in plan.cohorts
        if c.stage == "pending" and (not started or c.position > max(s.position for s in started))
    ]
    return (pending[0], ladder[0]) if pending else None


def _assess(
    runtime: Runtime, session: Session, run_command: bool = True, counts: plans.PlanCounts | None = None
) -> tuple[Plan, NextStep] | None:
    """``counts``: the plan's per-cohort counts when the caller has them at this moment (status)."""
    plan = plans.active_plan(session)
    if plan is None:
        raise PlanError("there is no plan yet: run `rollout plan … --apply` first")
    move = _next_move(plan, _ladder(runtime))
    if move is None:
        return _assess_retire(runtime, session, plan, run_command)
    cohort, to_stage = move
    now = runtime.clock.now()
    settings = runtime.settings
    window = parse_window(settings.rollout.window, settings.rollout.timezone, settings.rollout.skip_weekends)
    blockers: list[str] = []
    due = max(now, cohort.scheduled_at)
    state = _state(session)
    if state.paused:
        blockers.append(f"the rollout is paused ({state.paused_reason}, by {state.paused_by}); run `rollout resume`")
    if now < cohort.scheduled_at:
        blockers.append(f"cohort {cohort.label} is scheduled for {cohort.scheduled_at:%Y-%m-%d %H:%M} UTC")
    last_change = max(
        (c.stage_changed_at for c in plan.cohorts if c.stage_changed_at and c.stage != "pending"), default=None
    )
    if last_change is not None:
        soak_end = last_change + timedelta(hours=settings.enforcement.soak_hours)
        due = max(due, soak_end)
        if now < soak_end:
            blockers.append(f"the last step is soaking until {soak_end:%Y-%m-%d %H:%M} UTC (enforcement.soak_hours)")
    campaign_blocker, campaign_due = _campaign_guard(session, now)
    if campaign_blocker:
        blockers.append(campaign_blocker)
        due = max(due, campaign_due or due)
    due = window.next_open(due)
    if not window.contains(now):
        blockers.append(
            f"outside the step window {settings.rollout.window} {settings.rollout.timezone}; "
            f"next opens {window.next_open(now):%Y-%m-%d %H:%M} UTC"
        )
    step = NextStep(
        cohort.id,
        cohort.position,
        cohort.label,
        cohort.stage,
        to_stage,
        cohort.mailbox_count,
        cohort.scheduled_at,
        due,
        blockers,
        still_legacy=_still_legacy_in(session, plan, cohort, now, settings.notices.lookback_days, counts),
        refusals_since_switch=_refusals_since_switch(session, plan, counts),
    )
    last_switched = max(plans.started_cohorts(plan), key=lambda c: c.position, default=None)
    step.gates = gate_checks.evaluate(
        session,
        settings.gates,
        now,
        last_switched,
        cohort,
        settings.notices.lookback_days,
        run_command=run_command,
        next_still_legacy=step.still_legacy,
    )
    blockers += [g.describe() for g in step.failed_gates]
    return plan, step


def _assess_retire(runtime: Runtime, session: Session, plan: Plan, run_command: bool) -> tuple[Plan, NextStep] | None:
    """The final step, once every cohort is at the top of its ladder: the same pause, soak, window and gates,
    and the legacy map's own prerequisites (its writer stopped; with retire = "check", main.cf cleaned)."""
    if retirement.current(session, plan) is not None:
        return None
    now, settings = runtime.clock.now(), runtime.settings
    window = parse_window(settings.rollout.window, settings.rollout.timezone, settings.rollout.skip_weekends)
    blockers: list[str] = []
    state = _state(session)
    if state.paused:
        blockers.append(f"the rollout is paused ({state.paused_reason}, by {state.paused_by}); run `rollout resume`")
    last_change = max((c.stage_changed_at for c in plan.cohorts if c.stage_changed_at), default=now)
    due = max(now, last_change + timedelta(hours=settings.enforcement.soak_hours))
    if now < due:
        blockers.append(f"the last step is soaking until {due:%Y-%m-%d %H:%M} UTC (enforcement.soak_hours)")
    if not window.contains(now):
        where = f"{settings.rollout.window} {settings.rollout.timezone}"
        blockers.append(f"outside the step window {where}; next opens {window.next_open(now):%Y-%m-%d %H:%M} UTC")
    blockers += retirement.blockers(settings.enforcement)
    last = max(plan.cohorts, key=lambda c: c.position)
    label = settings.enforcement.legacy_map or "legacy map"
    due_at = window.next_open(due)
    step = NextStep(0, last.position + 1, label, "in force", "retired", 0, due, due_at, blockers, kind="retire")
    lookback = settings.notices.lookback_days
    step.gates = gate_checks.evaluate(session, settings.gates, now, last, None, lookback, run_command)
    blockers += [g.describe() for g in step.failed_gates]
    return plan, step


def _campaign_guard(session: Session, now: datetime) -> tuple[str | None, datetime | None]:
    campaign = session.scalars(select(Campaign).where(Campaign.active).order_by(Campaign.id.desc()).limit(1)).first()
    if campaign is None:
        return None, None
    last_due = wave_due_at(campaign, campaign.weeks)  # the campaign's own, DST-safe, schedule
    if now < last_due:
        return f"the notice campaign's last wave ({campaign.weeks}) is due {last_due:%Y-%m-%d %H:%M} UTC", last_due
    pending = session.scalar(
        select(func.count())
        .select_from(Notice)
        .where(Notice.campaign_id == campaign.id, Notice.wave == campaign.weeks, Notice.state == "pending")
    )
    if pending:
        return f"the notice campaign's last wave still has {pending} notices pending; run `rollout notify`", None
    return None, None


def _still_legacy_in(
    session: Session, plan: Plan, cohort: Cohort, now: datetime, lookback_days: int, counts: plans.PlanCounts | None
) -> int:
    if counts is not None and counts.fits(plan, (now - timedelta(days=lookback_days)).date()):
        return counts.still_legacy.get(cohort.id, 0)
    return gate_checks.still_legacy_in(session, cohort, now, lookback_days)


def _refusals_since_switch(session: Session, plan: Plan, counts: plans.PlanCounts | None) -> int:
    totals = counts.refusals if counts is not None and counts.plan_id == plan.id else None
    if totals is None:
        totals = plans.refusals_since_switch_off(session, plan)
    return sum(totals.get(c.id, 0) for c in plans.started_cohorts(plan))


def next_step(runtime: Runtime, run_command: bool = False, counts: plans.PlanCounts | None = None) -> NextStep | None:
    """What ``step`` would do next, when at the earliest, and what blocks it now (None: all done).

    The external gate command runs only when asked: the scheduler reads this every minute. ``counts``: the active
    plan's per-cohort counts when the caller has just made them (used only if they are of this plan and lookback).
    """
    with runtime.sessions() as session:
        assessed = _assess(runtime, session, run_command, counts)
        return assessed[1] if assessed else None


# --- step -----------------------------------------------------------------------------------


@dataclass
class StepResult:
    step: NextStep
    applied: bool
    dry_run: bool = False
    forced: list[str] = field(default_factory=list)  # guards overridden with --force
    diff: MapDiff | None = None
    customers: list[str] = field(default_factory=list)
    checksum_before: str | None = None
    checksum_after: str | None = None
    expired_exemptions: int = 0
    held: list[holdback.HeldView] = field(default_factory=list)  # kept out of the map: not warned in time
    included_unwarned: list[str] = field(default_factory=list)  # switched off unwarned: --include-unwarned
    released: list[str] = field(default_factory=list)  # held earlier, switched off with this step (warned since)
    retired: str | None = None  # the final step: the legacy map retired


def step(
    runtime: Runtime,
    dry_run: bool = False,
    yes: bool = False,
    force: bool = False,
    reason: str | None = None,
    confirm: Callable[[StepResult], bool] | None = None,
    include_unwarned: bool = False,
) -> StepResult:
    """Enforce the next cohort, or move the current one up the ladder; guards first. Mailboxes not warned in time
    are held back (``rollout.plan.holdback``) unless ``include_unwarned``, which --force does not imply."""
    if force and not reason:
        raise PlanError("--force needs --reason: say why the guards are overridden (it goes in the audit log)")
    if include_unwarned and not reason:
        raise PlanError(
            "--include-unwarned needs --reason: say why unwarned customers are switched off (it goes in the audit log)"
        )
    if dry_run:
        return _step(runtime, dry_run, yes, force, reason, confirm, include_unwarned)
    with _map_change(runtime), _legacy_change(runtime):
        return _step(runtime, dry_run, yes, force, reason, confirm, include_unwarned)


def _step(
    runtime: Runtime,
    dry_run: bool,
    yes: bool,
    force: bool,
    reason: str | None,
    confirm: Callable[[StepResult], bool] | None,
    include_unwarned: bool,
) -> StepResult:
    now = runtime.clock.now()
    with runtime.sessions() as session, session.begin():
        if not dry_run:
            write_lock(session)  # a second step waits here, then sees what this one did
        assessed = _assess(runtime, session)
        if assessed is None:
            raise PlanError(
                "the rollout is done: every cohort is at the last stage of its ladder and the legacy path is retired"
            )
        plan, upcoming = assessed
        if upcoming.kind == "retire" and not include_unwarned:
            upcoming.blockers += holdback.retire_blockers(session)  # --force does not lift it: _retire checks it again
        if upcoming.blockers and not force and not dry_run:
            message = "step refused: " + "; ".join(upcoming.blockers) + " (--force --reason TEXT overrides)"
            if upcoming.failed_gates:
                raise GatesFailed(message, upcoming.failed_gates, len(upcoming.blockers) - len(upcoming.failed_gates))
            raise GuardError(message)
        result = StepResult(upcoming, applied=False, dry_run=dry_run, forced=upcoming.blockers if force else [])
        if upcoming.kind == "retire":
            if include_unwarned and not dry_run:  # the held are cut off with everyone else: say so in the audit log
                result.included_unwarned = holdback.release_all(session, now, runtime.actor, reason)
            return _retire(runtime, session, plan, result, yes, reason, confirm)
        cohort = session.get(Cohort, upcoming.cohort_id)
        assert cohort is not None
        expired = _end_expired(session, now)
        notices = runtime.settings.notices
        held = holdback.apply(
            session,
            plan,
            cohort,
            upcoming.from_stage,
            now,
            notices.lookback_days,
            notices.min_warning_days,
            include_unwarned,
            runtime.actor,
            reason,
        )
        result.held, result.included_unwarned, result.released = held.held, held.included, held.released
        plans.set_stage(session, cohort, upcoming.to_stage, now)
        if dry_run:
            result.customers = plans.customers_of(session, [cohort.id])
            backend = backend_for(runtime.settings.enforcement)
            result.diff = diff(_current_stages(backend.current()), desired_entries(session, now))
            session.rollback()
            return result
        if not yes and (confirm is None or not confirm(result)):
            session.rollback()
            return result
        swap = _swap(runtime, session, f"step {upcoming.label} → {upcoming.to_stage}", plan)
        result.applied, result.diff, result.expired_exemptions = True, swap.diff, expired
        result.checksum_before, result.checksum_after = swap.checksum_before, swap.checksum_after
        audit.record(
            session,
            now,
            runtime.actor,
            "step",
            cohort=upcoming.label,
            position=upcoming.position,
            from_stage=upcoming.from_stage,
            to_stage=upcoming.to_stage,
            reason=reason,
            forced=result.forced,
            still_legacy=upcoming.still_legacy,
            refusals_since_switch=upcoming.refusals_since_switch,
            gates=_gate_figures(upcoming.gates),
            map_before=swap.checksum_before,
            map_after=swap.checksum_after,
            map_drifted=swap.drifted,
            expired_exemptions=expired,
            held=[{"mailbox": h.address, "reason": h.reason, "redated_to": h.redated_to} for h in held.held],
            included_unwarned=held.included,
            released_holds=held.released,
        )
    return result


def _gate_figures(gates: list[gate_checks.Gate]) -> dict[str, dict[str, Any]]:
    """Each gate as the step saw it, for the audit log."""
    return {g.name: {"passed": g.passed, "value": g.value, "limit": g.limit, "figure": g.figure} for g in gates}


def _retire(
    runtime: Runtime,
    session: Session,
    plan: Plan,
    result: StepResult,
    yes: bool,
    reason: str | None,
    confirm: Callable[[StepResult], bool] | None,
) -> StepResult:
    """The final step: the legacy map emptied (or its removal from main.cf verified); phase done."""
    if result.dry_run or (not yes and (confirm is None or not confirm(result))):
        session.rollback()
        return result
    unmet = retirement.blockers(runtime.settings.enforcement) + holdback.retire_blockers(session)
    if (
        unmet
    ):  # not even --force: a writer still running would put the addresses straight back; the held were never warned
        raise GuardError("the final step refused: " + "; ".join(unmet))
    now = runtime.clock.now()
    row = retirement.retire(session, runtime.settings.enforcement, plan, now, runtime.actor, reason)
    result.applied, result.retired = True, row.legacy_map
    audit.record(
        session,
        now,
        runtime.actor,
        "retire",
        legacy_map=row.legacy_map,
        mode=row.mode,
        saved=row.saved,
        included_unwarned=result.included_unwarned,
        entries_before=row.entries_before,
        reason=reason,
        forced=result.forced,
        gates=_gate_figures(result.step.gates),
    )
    return result


# --- pause, resume, undo ----------------------------------------------------------------------


def _state(session: Session) -> RolloutState:
    state = session.get(RolloutState, 1)
    if state is None:
        state = RolloutState(id=1, paused=False)
        session.add(state)
        session.flush()
    return state


def _map_checksum(runtime: Runtime) -> str | None:
    return checksum(backend_for(runtime.settings.enforcement).current())


def pause(runtime: Runtime, reason: str, actor: str | None = None) -> RolloutState:
    """Block every step (scheduled or by hand) until ``resume``; ``actor`` when not the runtime's (the scheduler)."""
    if not reason.strip():
        raise PlanError("pause needs a reason (--reason TEXT): it is shown to whoever tries to step")
    now = runtime.clock.now()
    actor = actor or runtime.actor
    with runtime.sessions() as session, session.begin():
        write_lock(session)
        state = _state(session)
        if state.paused:
            raise GuardError(
                f"already paused since {state.paused_at:%Y-%m-%d %H:%M} UTC by {state.paused_by}: {state.paused_reason}"
            )
        state.paused, state.paused_reason, state.paused_by, state.paused_at = True, reason, actor, now
        digest = _map_checksum(runtime)
        audit.record(session, now, actor, "pause", reason=reason, map_before=digest, map_after=digest)
        return state


def resume(runtime: Runtime, reason: str | None = None) -> RolloutState:
    now = runtime.clock.now()
    with runtime.sessions() as session, session.begin():
        write_lock(session)
        state = _state(session)
        if not state.paused:
            raise GuardError("the rollout is not paused")
        was = state.paused_reason
        state.paused, state.paused_reason, state.paused_by, state.paused_at = False, None, None, None
        state.resumed_at = now
        digest = _map_checksum(runtime)
        audit.record(
            session, now, runtime.actor, "resume", reason=reason, paused_for=was, map_before=digest, map_after=digest
        )
        return state


@dataclass
class UndoResult:
    from_step: int
    to_step: int
    stages: dict[str, str]
    checksum_before: str | None
    checksum_after: str
    diff: MapDiff
    legacy_restored: str | None = None  # the final step undone: the legacy map back in force
    main_cf: legacy.MainCfEdit | None = None  # mode check: the restrictions line undo put back in main.cf


def undo(runtime: Runtime, to_step: int | None = None, reason: str | None = None) -> UndoResult:
    """Go back to the state after step ``to_step`` (default: one step back) through a map swap."""
    now = runtime.clock.now()
    ladder = _ladder(runtime)
    with _map_change(runtime), _legacy_change(runtime), runtime.sessions() as session, session.begin():
        write_lock(session)
        plan = plans.active_plan(session)
        if plan is None:
            raise PlanError("there is no plan, so nothing to undo")
        retired = retirement.current(session, plan)
        taken = steps_taken(plan.cohorts, ladder) + (1 if retired else 0)  # the final step counts as one
        target = taken - 1 if to_step is None else to_step
        if taken == 0:
            raise PlanError("no step has been taken yet: nothing to undo")
        if not 0 <= target < taken:
            raise PlanError(f"--to-step must be between 0 and {taken - 1} (steps taken so far: {taken})")
        if retired is not None and target == taken - 1:  # only the final step: the legacy map comes back
            return _undo_retire(runtime, session, plan, retired, taken, reason)
        for cohort, stage in zip(plan.cohorts, stages_after(target, len(plan.cohorts), ladder), strict=True):
            if cohort.stage != stage:
                plans.set_stage(session, cohort, stage, now)
        swap = _swap(runtime, session, f"undo to step {target}", plan)
        stages = {c.label: c.stage for c in plan.cohorts if c.stage != "pending"}
        if retired is not None:
            retirement.undo(session, runtime.settings.enforcement, retired, now)
        audit.record(
            session,
            now,
            runtime.actor,
            "undo",
            from_step=taken,
            to_step=target,
            reason=reason,
            stages=stages,
            map_before=swap.checksum_before,
            map_after=swap.checksum_after,
            legacy_restored=retired.legacy_map if retired else None,
        )
        restored = retired.legacy_map if retired else None
        return UndoResult(taken, target, stages, swap.checksum_before, swap.checksum_after, swap.diff, restored)


def _undo_retire(
    runtime: Runtime, session: Session, plan: Plan, retired: Retirement, taken: int, reason: str | None
) -> UndoResult:
    now = runtime.clock.now()
    edit = retirement.undo(session, runtime.settings.enforcement, retired, now)
    digest = _map_checksum(runtime)
    stages = {c.label: c.stage for c in plan.cohorts if c.stage != "pending"}
    audit.record(
        session,
        now,
        runtime.actor,
        "undo",
        from_step=taken,
        to_step=taken - 1,
        reason=reason,
        stages=stages,
        map_before=digest,
        map_after=digest,
        legacy_restored=retired.legacy_map,
        mode=retired.mode,
        main_cf=asdict(edit) if edit else None,
    )
    return UndoResult(taken, taken - 1, stages, digest, digest or "", MapDiff(), retired.legacy_map, main_cf=edit)


# --- exemptions ---------------------------------------------------------------------------------


@dataclass
class ExemptionView:
    address: str
    until: datetime
    reason: str
    actor: str
    created_at: datetime
    ended_at: datetime | None


def _mailbox(session: Session, address: str) -> Mailbox:
    try:
        key = parse_address(address).key
    except AddressError as exc:
        raise PlanError(f"{address!r} is not a mailbox address: {exc}") from None
    mailbox = session.scalars(select(Mailbox).where(Mailbox.address_key == key)).first()
    if mailbox is None:
        raise PlanError(f"{address} is not in the inventory")
    return mailbox


def exempt(runtime: Runtime, address: str, until: datetime, reason: str, force: bool = False) -> ExemptionView:
    """Take a mailbox out of the map until ``until``; one postponement per mailbox unless ``force``."""
    now = runtime.clock.now()
    if problem := out_of_range(until, "--until", now):
        raise PlanError(problem)
    until = as_utc(until)
    if until <= now:
        raise PlanError(f"--until {until:%Y-%m-%d %H:%M} UTC is not in the future")
    if not reason.strip():
        raise PlanError("an exemption needs a reason (--reason TEXT)")
    with _map_change(runtime), runtime.sessions() as session, session.begin():
        write_lock(session)
        mailbox = _mailbox(session, address)
        earlier = session.scalars(
            select(Exemption).where(Exemption.mailbox_id == mailbox.id).order_by(Exemption.id)
        ).all()
        if earlier and not force:
            first = earlier[0]
            raise GuardError(
                f"{mailbox.address} was already postponed once "
                f"(until {first.until:%Y-%m-%d}, by {first.actor}: {first.reason}); "
                "--force allows another"
            )
        for open_one in (e for e in earlier if e.ended_at is None):
            open_one.ended_at = now  # replaced by the new one
        row = Exemption(mailbox_id=mailbox.id, until=until, reason=reason, actor=runtime.actor, created_at=now)
        session.add(row)
        session.flush()
        swap = _swap(runtime, session, f"exempt {mailbox.address}", plans.active_plan(session))
        audit.record(
            session,
            now,
            runtime.actor,
            "exempt",
            address=mailbox.address,
            until=until.isoformat(),
            reason=reason,
            forced=bool(earlier),
            map_before=swap.checksum_before,
            map_after=swap.checksum_after,
        )
        return ExemptionView(mailbox.address, until, reason, runtime.actor, now, None)


def list_exemptions(runtime: Runtime, include_ended: bool = False) -> list[ExemptionView]:
    with runtime.sessions() as session:
        query = select(
            Mailbox.address,
            Exemption.until,
            Exemption.reason,
            Exemption.actor,
            Exemption.created_at,
            Exemption.ended_at,
        ).join(Mailbox, Mailbox.id == Exemption.mailbox_id)
        if not include_ended:
            query = query.where(Exemption.ended_at.is_(None))
        return [ExemptionView(*row) for row in session.execute(query.order_by(Exemption.until, Mailbox.address_key))]


def _end_expired(session: Session, now: datetime) -> int:
    expired = session.scalars(select(Exemption).where(Exemption.ended_at.is_(None), Exemption.until <= now)).all()
    for row in expired:
        row.ended_at = now
    session.flush()
    return len(expired)


def expire_exemptions(runtime: Runtime) -> int:
    """Put mailboxes whose exemption ran out back in the map (one swap); returns how many expired."""
    now = runtime.clock.now()
    with _map_change(runtime), runtime.sessions() as session, session.begin():
        write_lock(session)
        count = _end_expired(session, now)
        if count == 0:
            return 0
        swap = _swap(runtime, session, f"{count} exemptions expired", plans.active_plan(session))
        audit.record(
            session,
            now,
            runtime.actor,
            "exempt.expire",
            expired=count,
            map_before=swap.checksum_before,
            map_after=swap.checksum_after,
        )
        return count
