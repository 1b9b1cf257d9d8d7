"""Time as a parameter: the core never calls ``datetime.now()`` itself.

Tests and the demo fast-forward a ``ManualClock``; ``ROLLOUT_NOW`` (ISO 8601)
pins the clock of a CLI process, which is how subprocess tests and rehearsals
run "as if it were" a given moment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


@dataclass
class ManualClock:
    current: datetime = field(default_factory=lambda: datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc))

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
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def clock_from_env(environ: dict[str, str] | None = None) -> Clock:
    environ = os.environ if environ is None else environ
    pinned = environ.get("ROLLOUT_NOW")
    if pinned:
        return ManualClock(as_utc(datetime.fromisoformat(pinned)))
    return SystemClock()
