"""`rollout scheduler`: scan, notify, step and exemption expiry on time (APScheduler 3).

What is due comes from the configuration (scan interval) and the database (the
campaign's waves, the plan's next step), re-read every minute so that a new plan
or campaign needs no restart. The daemon's choices, deliberately:

- one worker thread: jobs run one at a time, in the order they fall due, so a
  step never races the scan whose figures its guards read;
- ``coalesce=True`` and ``max_instances=1``: a scan that overruns its interval
  runs once more afterwards, not once per missed tick, and never twice at once;
- ``misfire_grace_time``: scans and expiry run however late (a late scan is still
  worth doing); a notice wave or a step later than ``scheduler.misfire_grace_seconds``
  is not run: customers must not get "this week's" notice days late, and a cohort
  must not be switched off at a time nobody expected. The job is recorded as
  skipped with what to run by hand. The job bodies check the same grace against
  the injected clock, which is how tests and the demo fast-forward time.

Only one scheduler acts at a time: a PostgreSQL advisory lock, or on SQLite an
exclusive lock on ``scheduler.lock_file`` (next to the database when relative).
A second one waits and says so. SIGTERM lets the running job finish, then exits.
"""

from __future__ import annotations

import dataclasses
import fcntl
import glob
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Connection, select, text
from sqlalchemy.engine import make_url

from .clock import ManualClock
from .errors import GatesFailed, GuardError, RolloutError
from .models import JobRun, RolloutState
from .notify.campaign import active_campaign, latest_due_wave, wave_due_at
from .notify.campaign_workflow import notify
from .plan.plan_workflow import expire_exemptions, next_step, pause, step
from .plan.plans import active_plan
from .runtime import Runtime
from .scan.scan_workflow import scan_logs

log = logging.getLogger(__name__)

SYNC_SECONDS = 60
LOCK_RETRY_SECONDS = 5.0
ADVISORY_LOCK_KEY = 0x726F6C6C6F7574  # "rollout"


@dataclass(frozen=True)
class Planned:
    """One job the scheduler should run: periodically (``every``) or once (``at``)."""

    id: str
    job: str  # scan | notify | step | expire
    every: timedelta | None = None
    at: datetime | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def late_is_stale(self) -> bool:
        return self.at is not None


# ---------------------------------------------------------------------------
# What is due: the same list drives the daemon and the simulated clock.


def planned_jobs(runtime: Runtime) -> list[Planned]:
    jobs = [
        Planned("scan", "scan", every=timedelta(minutes=runtime.settings.scan.interval_minutes)),
        Planned("expire", "expire", every=timedelta(minutes=runtime.settings.scheduler.expire_minutes)),
    ]
    return jobs + wave_jobs(runtime) + step_jobs(runtime)


def wave_jobs(runtime: Runtime) -> list[Planned]:
    """The wave due now (sent, or refused as stale) and those still to come; older ones are history."""
    with runtime.sessions() as session:
        campaign = active_campaign(session)
        if campaign is None:
            return []
        first = latest_due_wave(campaign, runtime.clock.now()) or 1
        return [
            Planned(f"notify-{campaign.id}-{wave}", "notify", at=wave_due_at(campaign, wave), params={"wave": wave})
            for wave in range(first, campaign.weeks + 1)
        ]


def step_jobs(runtime: Runtime) -> list[Planned]:
    """The next step, at the earliest moment its time-based guards (schedule, soak, window) pass.

    Once that moment has passed, ``next_step`` reports "now"; the cohort's own
    scheduled time is then what lateness is measured from. A step skipped while the
    rollout was paused (a failed gate pauses it) is tried again at `rollout resume`.
    """
    with runtime.sessions() as session:
        if active_plan(session) is None:
            return []
    upcoming = next_step(runtime)
    if upcoming is None or upcoming.kind == "retire":  # ops take the final step: its writer must be stopped first
        return []
    job_id = f"step-{upcoming.position}-{upcoming.to_stage}"
    at = upcoming.due_at if upcoming.due_at > runtime.clock.now() else upcoming.scheduled_at
    at = max(at, _resumed_after_skip(runtime, job_id) or at)
    return [Planned(job_id, "step", at=at, params={"cohort": upcoming.label})]


def _resumed_after_skip(runtime: Runtime, job_id: str) -> datetime | None:
    """When the rollout was resumed, if that came after this very step was last skipped."""
    with runtime.sessions() as session:
        state = session.get(RolloutState, 1)
        if state is None or state.paused or state.resumed_at is None:
            return None
        last = session.scalars(select(JobRun).where(JobRun.job == "step").order_by(JobRun.id.desc()).limit(1)).first()
        if last is None or last.details.get("id") != job_id or last.outcome != "skipped":
            return None
        if last.started_at > state.resumed_at:
            return None
        return state.resumed_at


# ---------------------------------------------------------------------------
# Running one job: record intent, act, record the outcome (each its own transaction).


class Skip(Exception):
    """The job decided not to act; the message says why and what to do."""


def run_job(runtime: Runtime, planned: Planned, due_at: datetime | None = None) -> JobRun:
    due_at = due_at or planned.at or runtime.clock.now()
    log.info("job %s started (due %s)", planned.id, due_at.isoformat())
    run = _start(runtime, planned, due_at)
    try:
        _refuse_if_stale(runtime, planned, due_at)
        result = JOBS[planned.job](runtime, planned)
        outcome, details = "ok", {"result": _plain(result)}
    except (Skip, GuardError) as exc:
        outcome, details = "skipped", {"reason": str(exc)}
    except RolloutError as exc:
        outcome, details = "failed", {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a bug in one job must not stop the daemon; it is logged with its traceback
        log.exception("job %s crashed", planned.id)
        outcome, details = "failed", {"error": f"{type(exc).__name__}: {exc}"}
    run = _finish(runtime, run.id, outcome, details)
    log.log(
        logging.WARNING if outcome == "failed" else logging.INFO,
        "job %s %s: %s",
        planned.id,
        outcome,
        json.dumps(details, default=str),
    )
    return run


def _refuse_if_stale(runtime: Runtime, planned: Planned, due_at: datetime) -> None:
    if not planned.late_is_stale:
        return
    grace = timedelta(seconds=runtime.settings.scheduler.misfire_grace_seconds)
    late = runtime.clock.now() - due_at
    if late > grace:
        raise Skip(f"{stale_message(planned, late, grace)}")


def stale_message(planned: Planned, late: timedelta, grace: timedelta) -> str:
    by_hand = {"notify": f"rollout notify --wave {planned.params.get('wave')}", "step": "rollout step"}[planned.job]
    return (
        f"{planned.id} is {_human(late)} late (grace {_human(grace)}): not run without an operator; "
        f"run `{by_hand}` if it should still happen"
    )


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds // 60} min"


def _start(runtime: Runtime, planned: Planned, due_at: datetime) -> JobRun:
    with runtime.sessions() as session, session.begin():
        run = JobRun(
            job=planned.job,
            started_at=runtime.clock.now(),
            outcome="running",
            details={
                "id": planned.id,
                "due_at": due_at.isoformat(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                **planned.params,
            },
        )
        session.add(run)
        session.flush()
        return run


def _finish(runtime: Runtime, run_id: int, outcome: str, details: dict[str, Any]) -> JobRun:
    with runtime.sessions() as session, session.begin():
        run = session.get_one(JobRun, run_id)
        run.finished_at = runtime.clock.now()
        run.outcome = outcome
        run.details = {**run.details, **details}
        return run


def _plain(value: Any) -> Any:
    """A workflow's result as JSON-ready data for JobRun.details."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


def do_scan(runtime: Runtime, planned: Planned) -> Any:
    paths = log_files(runtime.settings.scan.log_files)
    if not paths:
        raise Skip("no log files to scan: set scan.log_files (paths or globs) in rollout.toml")
    return scan_logs(runtime, paths, host=runtime.settings.scan.host)


def log_files(patterns: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for pattern in patterns:
        found += [Path(p) for p in sorted(glob.glob(os.path.expanduser(pattern)))]
    return found


def do_notify(runtime: Runtime, planned: Planned) -> Any:
    summary = notify(runtime, wave=planned.params["wave"])
    if summary.failed:
        raise RolloutError(
            f"wave {summary.wave}: {summary.failed} notices failed (see `rollout campaign show`); {summary.sent} sent"
        )
    return summary


def do_step(runtime: Runtime, planned: Planned) -> Any:
    """Step when every guard and gate passes; failed gates alone pause the rollout until `rollout resume`."""
    try:
        return step(runtime, yes=True)
    except GatesFailed as exc:
        if exc.other_blockers:  # paused already, or not yet due: nothing has settled or not, just skip
            raise
        reason = "gates failed: " + "; ".join(f"{g.name}: {g.figure} ({g.threshold})" for g in exc.gates)
        pause(runtime, reason, actor="scheduler")
        raise Skip(f"paused the rollout: {reason}") from None


def do_expire(runtime: Runtime, planned: Planned) -> Any:
    return {"expired": expire_exemptions(runtime)}


JOBS: dict[str, Callable[[Runtime, Planned], Any]] = {
    "scan": do_scan,
    "notify": do_notify,
    "step": do_step,
    "expire": do_expire,
}


# ---------------------------------------------------------------------------
# Simulated time (tests, the demo): fire what falls due, in order, on a ManualClock.


def run_until(
    runtime: Runtime, clock: ManualClock, until: datetime, on_run: Callable[[JobRun], None] | None = None
) -> list[JobRun]:
    """Advance ``clock`` to ``until``, running every job at the moment it falls due.

    Periodic jobs coalesce (one run per interval however far the clock jumps);
    one-off jobs are re-read from the database after each of them runs (the
    daemon re-reads every minute, which also catches plans changed meanwhile).
    """
    runs: list[JobRun] = []
    last_periodic: dict[str, datetime] = {}
    done = ran_once(runtime)
    jobs = planned_jobs(runtime)
    while True:
        due = _next_due(jobs, clock.now(), last_periodic, done)
        if due is None or due[0] > until:
            clock.set(max(clock.now(), until))
            return runs
        moment, planned = due
        clock.set(max(clock.now(), moment))
        if planned.every is not None:
            last_periodic[planned.id] = clock.now()
        else:
            done.add((planned.id, moment))
        run = run_job(runtime, planned, due_at=moment)
        runs.append(run)
        if planned.every is None:  # a wave or a step changes what is due next
            jobs = planned_jobs(runtime)
        if on_run:
            on_run(run)


def ran_once(runtime: Runtime) -> set[tuple[str, datetime]]:
    """The one-off jobs (waves, steps) already run or refused: never run again for the same time."""
    with runtime.sessions() as session:
        rows = session.scalars(select(JobRun.details).where(JobRun.job.in_(("notify", "step"))))
        return {(d["id"], datetime.fromisoformat(d["due_at"])) for d in rows}


def _next_due(
    jobs: list[Planned], now: datetime, last: dict[str, datetime], done: set[tuple[str, datetime]]
) -> tuple[datetime, Planned] | None:
    candidates: list[tuple[datetime, int, Planned]] = []
    for order, planned in enumerate(jobs):
        if planned.every is not None:
            moment = last[planned.id] + planned.every if planned.id in last else now
        else:
            assert planned.at is not None
            if (planned.id, planned.at) in done:
                continue
            moment = planned.at
        candidates.append((moment, order, planned))
    if not candidates:
        return None
    moment, _, planned = min(candidates, key=lambda c: (c[0], c[1]))
    return moment, planned


# ---------------------------------------------------------------------------
# The single-scheduler lock.


class SchedulerLock:
    """Held for the daemon's lifetime; a second daemon waits in ``acquire``."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._conn: Connection | None = None
        self._fh: Any = None

    @property
    def description(self) -> str:
        if self.runtime.engine.dialect.name == "postgresql":
            return f"PostgreSQL advisory lock {ADVISORY_LOCK_KEY}"
        return f"lock file {self.path}"

    @property
    def path(self) -> Path:
        lock_file = Path(self.runtime.settings.scheduler.lock_file).expanduser()
        if lock_file.is_absolute():
            return lock_file
        database = make_url(self.runtime.settings.database_url).database
        base = Path(database).expanduser().parent if database and database != ":memory:" else Path.cwd()
        return base / lock_file

    def try_acquire(self) -> bool:
        if self.runtime.engine.dialect.name == "postgresql":
            conn = self.runtime.engine.connect()
            if conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}).scalar_one():
                conn.commit()
                self._conn = conn
                return True
            conn.close()
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{socket.gethostname()} {os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return True

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for the lock; False if ``stop`` was set first."""
        if self.try_acquire():
            return True
        log.warning("another scheduler is acting (%s is held): waiting for it to stop", self.description)
        while not stop.wait(LOCK_RETRY_SECONDS):
            if self.try_acquire():
                log.warning("the other scheduler stopped: this one acts now")
                return True
        return False

    def release(self) -> None:
        if self._conn is not None:
            self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
            self._conn.close()
            self._conn = None
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


# ---------------------------------------------------------------------------
# The daemon.


class Daemon:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        grace = runtime.settings.scheduler.misfire_grace_seconds
        self.grace = grace
        self.scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": grace},
            timezone="UTC",
        )
        self.scheduler.add_listener(self._missed, EVENT_JOB_MISSED)
        self.stop = threading.Event()
        self._stopping: threading.Thread | None = None
        self.installed: dict[str, Planned] = {}

    def run(self) -> None:
        """Wait for the lock, then run jobs until SIGTERM or SIGINT."""
        lock = SchedulerLock(self.runtime)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            if not lock.acquire(self.stop):
                return
            log.info("scheduler acting (%s held); misfire grace %s s", lock.description, self.grace)
            self.sync()
            self.scheduler.add_job(self.sync, IntervalTrigger(seconds=SYNC_SECONDS), id="sync", misfire_grace_time=None)
            if not self.stop.is_set():
                self.scheduler.start()  # returns once shutdown has begun...
        finally:
            if self._stopping is not None:
                self._stopping.join()  # ...so wait for the running job before letting another scheduler act
            lock.release()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            log.info("scheduler stopped")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        log.warning("%s received: letting the running job finish, then exiting", name)
        self.stop.set()
        if self.scheduler.running and self._stopping is None:
            # shutdown(wait=True) joins the worker thread: the running job ends normally.
            self._stopping = threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}, name="shutdown")
            self._stopping.start()

    def sync(self) -> None:
        """Bring the installed jobs in line with the configuration and the database."""
        try:
            done = ran_once(self.runtime)
            wanted = {p.id: p for p in planned_jobs(self.runtime) if (p.id, p.at) not in done}
        except Exception:  # noqa: BLE001 - the database may be briefly unreachable; try again next minute
            log.exception("could not read the schedule from the database; retrying in %s s", SYNC_SECONDS)
            return
        for job_id, planned in wanted.items():
            if self.installed.get(job_id) != planned:
                self._install(planned)
        for job_id in set(self.installed) - set(wanted):
            if self.scheduler.get_job(job_id):
                self.scheduler.remove_job(job_id)
            del self.installed[job_id]

    def _install(self, planned: Planned) -> None:
        if planned.every is not None:
            # The first scan runs at start-up; late periodic runs are always worth doing.
            trigger = IntervalTrigger(seconds=planned.every.total_seconds())
            self.scheduler.add_job(
                run_job,
                trigger,
                args=(self.runtime, planned),
                id=planned.id,
                replace_existing=True,
                next_run_time=self.runtime.clock.now(),
                misfire_grace_time=None,
            )
        else:
            self.scheduler.add_job(
                run_job,
                DateTrigger(run_date=planned.at),
                args=(self.runtime, planned),
                id=planned.id,
                replace_existing=True,
            )
        self.installed[planned.id] = planned
        log.info("scheduled %s %s", planned.id, f"every {planned.every}" if planned.every else f"at {planned.at}")

    def _missed(self, event: JobExecutionEvent) -> None:
        """APScheduler dropped a job past its grace: record it like a stale run."""
        planned = self.installed.get(event.job_id)
        if planned is None:
            return
        run_job(self.runtime, planned, due_at=event.scheduled_run_time)
