"""Time as a parameter: the core never calls ``datetime.now()`` itself.

Tests and the demo fast-forward a ``ManualClock``; ``ROLLOUT_NOW`` (ISO 8601)
pins the clock of a CLI process, which is how subprocess tests and rehearsals
run "as if it were" a given moment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

# The range of moments the rollout deals in: anything outside is a typo (and near year 9999 the
# arithmetic of waves, cohorts and windows overflows).
EARLIEST = datetime(2000, 1, 1)
LATEST = datetime(2100, 1, 1)
MAX_AHEAD = timedelta(days=3660)  # how far ahead a plan, a campaign or an exemption may reach


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class ManualClock:
    current: datetime = field(default_factory=lambda: datetime(2026, 1, 5, 9, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> datetime:
        self.current += delta
        return self.current

    def set(self, moment: datetime) -> None:
        self.current = as_utc(moment)


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC (that is how the database stores them)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def out_of_range(moment: datetime, what: str, now: datetime, ahead: timedelta = MAX_AHEAD) -> str | None:
    """Why a date before 2000 or more than ``ahead`` after ``now`` is refused (None: it is fine)."""
    if EARLIEST <= moment.replace(tzinfo=None) and as_utc(moment) <= now + ahead:
        return None
    latest = now + ahead
    return f"{what} {moment:%Y-%m-%d %H:%M} is out of range: give a date from {EARLIEST:%Y} until {latest:%Y-%m-%d}"


def clock_from_env(environ: Mapping[str, str] | None = None) -> Clock:
    """The system clock, or the one ``ROLLOUT_NOW`` pins; ValueError (for the caller to word) if it is not a time."""
    pinned = (os.environ if environ is None else environ).get("ROLLOUT_NOW")
    if pinned:
        try:
            moment = datetime.fromisoformat(pinned)
        except ValueError:
            raise ValueError(f"ROLLOUT_NOW={pinned!r} is not an ISO 8601 time like 2026-03-02T09:00:00+00:00") from None
        if not EARLIEST <= moment.replace(tzinfo=None) <= LATEST:
            raise ValueError(f"ROLLOUT_NOW={pinned!r} is outside {EARLIEST:%Y} to {LATEST:%Y}")
        return ManualClock(as_utc(moment))
    return SystemClock()
