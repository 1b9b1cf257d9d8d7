"""Gates: has the last step settled? Evaluated before every step, by hand and by the scheduler.

Each gate is a figure read from the scan data (or an external check) against a
threshold from ``[gates]``. A threshold set to "off" shows its figure and does not
gate. The figures are read, never written: a failed gate is acted on by the step
(refused by hand, a pause at a scheduled step).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..config import GateSettings
from ..models import Cohort, CohortMember, RefusalHour, ScanSource
from .plans import still_legacy_ids

HOUR = timedelta(hours=1)


@dataclass
class Gate:
    name: str  # fresh_data | refusals_per_hour | refused_share | next_legacy_share | command
    passed: bool
    value: float | None  # the figure as a number (None: nothing to measure yet)
    limit: float | None  # the threshold (None: off, shown but not gating)
    figure: str  # the figure as ops read it
    threshold: str

    @property
    def gating(self) -> bool:
        return self.limit is not None

    def describe(self) -> str:
        return f"gate {self.name}: {self.figure} ({self.threshold})"


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def window_start(settings: GateSettings, now: datetime) -> datetime:
    """The first clock hour counted: the hours that overlap the last ``window_hours``."""
    return hour_of(now - timedelta(hours=settings.window_hours))


def evaluate(
    session: Session,
    settings: GateSettings,
    now: datetime,
    last_switched: Cohort | None,
    next_cohort: Cohort | None,
    lookback_days: int,
    run_command: bool = True,
    next_still_legacy: int | None = None,
) -> list[Gate]:
    """Every gate, in a fixed order; the external command only when ``run_command``.

    ``next_still_legacy``: the mailboxes of ``next_cohort`` still on the legacy path, when the caller has counted
    them already (a pass over the lookback's legacy days: not twice).
    """
    gates = [
        fresh_data(session, settings, now),
        refusals_per_hour(session, settings, now),
        refused_share(session, settings, now, last_switched),
        next_legacy_share(session, settings, now, next_cohort, lookback_days, next_still_legacy),
    ]
    if settings.command and run_command:
        gates.append(external_check(settings.command, settings.command_timeout_seconds))
    return gates


def failed(gates: list[Gate]) -> list[Gate]:
    return [g for g in gates if not g.passed]


def _limit(limit: float | None, text: str) -> str:
    return "off: does not gate" if limit is None else text


def fresh_data(session: Session, settings: GateSettings, now: datetime) -> Gate:
    newest = session.scalar(select(func.max(ScanSource.last_scan_at)))
    limit = settings.max_scan_age_minutes
    threshold = _limit(limit, f"at most {limit:g} min old" if limit is not None else "")
    if newest is None:
        return Gate("fresh_data", limit is None, None, limit, "no scan yet: run `rollout scan`", threshold)
    age = (now - newest).total_seconds() / 60
    figure = f"newest scan {age:.0f} min ago ({newest:%Y-%m-%d %H:%M} UTC)"
    passed = limit is None or age <= limit
    if not passed:
        figure = f"no scan since {newest:%Y-%m-%d %H:%M} UTC ({age:.0f} min ago)"
    return Gate("fresh_data", passed, round(age, 1), limit, figure, threshold)


def refusals_per_hour(session: Session, settings: GateSettings, now: datetime) -> Gate:
    """The busiest clock hour of the window: a wave of refusals must have passed, not just thinned."""
    per_hour = (
        select(RefusalHour.hour, func.sum(RefusalHour.count).label("n"))
        .where(RefusalHour.hour >= window_start(settings, now), RefusalHour.hour <= now)
        .group_by(RefusalHour.hour)
        .subquery()
    )
    peak, total = session.execute(select(func.max(per_hour.c.n), func.sum(per_hour.c.n))).one()
    peak, total = int(peak or 0), int(total or 0)
    limit = settings.max_refusals_per_hour
    figure = f"{peak} refusals by our map in the busiest hour of the last {settings.window_hours:g} h ({total} in all)"
    threshold = _limit(limit, f"at most {limit:g} per hour" if limit is not None else "")
    return Gate("refusals_per_hour", limit is None or peak <= limit, float(peak), limit, figure, threshold)


def refused_share(session: Session, settings: GateSettings, now: datetime, cohort: Cohort | None) -> Gate:
    """Of the last switched cohort's mailboxes, the share refused at least once in the window."""
    limit = settings.max_refused_share
    threshold = _limit(limit, f"at most {limit:.1%}" if limit is not None else "")
    if cohort is None:
        return Gate("refused_share", True, None, limit, "no cohort switched off yet", threshold)
    refused = session.scalar(
        select(func.count(func.distinct(RefusalHour.mailbox_id)))
        .join(CohortMember, CohortMember.mailbox_id == RefusalHour.mailbox_id)
        .where(
            CohortMember.cohort_id == cohort.id,
            RefusalHour.hour >= window_start(settings, now),
            RefusalHour.hour <= now,
        )
    )
    refused = int(refused or 0)
    share = refused / cohort.mailbox_count if cohort.mailbox_count else 0.0
    figure = (
        f"{share:.1%} of cohort {cohort.position} ({cohort.label}) refused in the last {settings.window_hours:g} h "
        f"({refused} of {cohort.mailbox_count} mailboxes)"
    )
    return Gate("refused_share", limit is None or share <= limit, round(share, 6), limit, figure, threshold)


def next_legacy_share(
    session: Session,
    settings: GateSettings,
    now: datetime,
    cohort: Cohort | None,
    lookback_days: int,
    still: int | None = None,
) -> Gate:
    """Of the cohort about to be switched (or to climb its ladder), the share still on the legacy path."""
    limit = settings.max_next_legacy_share
    threshold = _limit(limit, f"at most {limit:.1%}" if limit is not None else "")
    if cohort is None:
        return Gate("next_legacy_share", True, None, limit, "no cohort left to switch", threshold)
    if still is None:
        still = still_legacy_in(session, cohort, now, lookback_days)
    share = still / cohort.mailbox_count if cohort.mailbox_count else 0.0
    figure = (
        f"{share:.1%} of cohort {cohort.position} ({cohort.label}) still use the legacy path "
        f"({still} of {cohort.mailbox_count} mailboxes)"
    )
    return Gate("next_legacy_share", limit is None or share <= limit, round(share, 6), limit, figure, threshold)


def still_legacy_in(session: Session, cohort: Cohort, now: datetime, lookback_days: int) -> int:
    """How many of the cohort's mailboxes are still on the legacy path."""
    legacy = still_legacy_ids(now, lookback_days).subquery()
    still = session.scalar(
        select(func.count())
        .select_from(CohortMember)
        .join(legacy, legacy.c.mailbox_id == CohortMember.mailbox_id)
        .where(CohortMember.cohort_id == cohort.id)
    )
    return int(still or 0)


def external_check(command: str, timeout: float) -> Gate:
    """Run the operator's check (e.g. a script asking the ticket system): exit 0 passes.

    Its first output line is the figure. It runs without a shell, in its own process
    group, so that a hung check and anything it started are killed at the timeout.
    """
    threshold = f"exit 0 within {timeout:g} s"
    try:
        argv = shlex.split(command)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        return Gate("command", False, None, 0, f"cannot run {command!r}: {exc}", threshold)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return Gate(
            "command", False, None, 0, f"{argv[0]} did not answer within {timeout:g} s and was killed", threshold
        )
    first = next((line.strip() for line in output.splitlines() if line.strip()), "")
    if proc.returncode == 0:
        return Gate("command", True, 0.0, 0, first or f"{argv[0]} passed", threshold)
    return Gate("command", False, float(proc.returncode), 0, first or f"{argv[0]} exited {proc.returncode}", threshold)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a descendant that left the group still holds the pipe
        if proc.stdout is not None:
            proc.stdout.close()
        proc.wait()
