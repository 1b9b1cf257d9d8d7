"""Cohorts: the exact alphabetical partition (pure) and the time layout (pure); plans in the database: plan/plans.py.

A *unit* is the smallest slice a cut may fall on: an initial bucket (``0``, ``a``…``z``,
``~``), or with ``split_letters`` a two-letter prefix of ``Mailbox.sort_key`` inside a
bucket heavier than one cohort. Cohorts are contiguous runs of units. The partition
minimises the largest cohort's weight exactly (dynamic programming, not greedy); among
the optimal partitions it takes the one with the smallest sum of squared weights, which
breaks ties towards even sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..buckets import DIGITS, OTHER
from ..errors import PlanError


@dataclass(frozen=True)
class Unit:
    key: str  # the bucket ("s") or two-letter prefix ("sa"): where a cohort may start
    weight: int  # what is balanced: mailboxes, or mailboxes still legacy


@dataclass(frozen=True)
class Slice:
    """A cohort as the partition sees it: units[first:last+1]."""

    first: int
    last: int
    weight: int


def partition(units: Sequence[Unit], cohorts: int) -> list[Slice]:
    """Cut ``units`` (in order) into ``cohorts`` contiguous non-empty runs, minimising the heaviest.

    Units of weight zero never start a cohort on their own (they are absorbed by a
    neighbour), so at most as many cohorts as weighted units can be made.
    """
    if cohorts < 1:
        raise PlanError("the number of cohorts must be at least 1")
    weighted = [i for i, u in enumerate(units) if u.weight > 0]
    if len(weighted) < cohorts:
        raise PlanError(
            f"only {len(weighted)} initial groups have mailboxes, so at most {len(weighted)} cohorts can be made "
            f"(asked for {cohorts}); use fewer cohorts or --split-letters"
        )
    weights = [units[i].weight for i in weighted]
    best_max = _min_max(weights, cohorts)
    runs = _even_runs(weights, cohorts, best_max)
    slices = []
    for n, (a, b) in enumerate(runs):
        first = 0 if n == 0 else weighted[a]
        last = len(units) - 1 if n == len(runs) - 1 else weighted[runs[n + 1][0]] - 1
        slices.append(Slice(first, last, sum(weights[a : b + 1])))
    return slices


def _min_max(weights: list[int], cohorts: int) -> int:
    """The smallest possible heaviest cohort: binary search over the answer, greedy feasibility."""
    low, high = max(weights), sum(weights)
    while low < high:
        mid = (low + high) // 2
        if _runs_needed(weights, mid) <= cohorts:
            high = mid
        else:
            low = mid + 1
    return low


def _runs_needed(weights: list[int], cap: int) -> int:
    runs, current = 1, 0
    for w in weights:
        if current + w > cap:
            runs, current = runs + 1, w
        else:
            current += w
    return runs


def _even_runs(weights: list[int], cohorts: int, cap: int) -> list[tuple[int, int]]:
    """Exactly ``cohorts`` runs, none heavier than ``cap``, with the least sum of squares (DP)."""
    n = len(weights)
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = math.inf
    # cost[k][i]: least sum of squares cutting weights[:i] into k runs; cut[k][i]: where the last run starts
    cost = [[inf] * (n + 1) for _ in range(cohorts + 1)]
    cut = [[0] * (n + 1) for _ in range(cohorts + 1)]
    cost[0][0] = 0
    for k in range(1, cohorts + 1):
        for i in range(k, n - (cohorts - k) + 1):
            j = i - 1
            while j >= k - 1 and prefix[i] - prefix[j] <= cap:
                candidate = cost[k - 1][j] + (prefix[i] - prefix[j]) ** 2
                if candidate < cost[k][i]:
                    cost[k][i], cut[k][i] = candidate, j
                j -= 1
    runs: list[tuple[int, int]] = []
    i = n
    for k in range(cohorts, 0, -1):
        j = cut[k][i]
        runs.append((j, i - 1))
        i = j
    return runs[::-1]


def cohorts_for_max_share(units: Sequence[Unit], max_share: float) -> int:
    """The fewest cohorts whose heaviest stays within ``max_share`` of the total."""
    if not 0 < max_share <= 1:
        raise PlanError(f"--max-share must be between 0 and 1 (e.g. 0.10), not {max_share}")
    total = sum(u.weight for u in units)
    if total == 0:
        raise PlanError("there is nothing to balance: no mailboxes (or none still legacy with --weight legacy)")
    cap = math.floor(max_share * total + 1e-9)
    heaviest = max(units, key=lambda u: u.weight)
    if heaviest.weight > cap:
        raise PlanError(
            f"{display(heaviest.key)} alone holds {heaviest.weight / total:.1%} of the weight, more than "
            f"--max-share {max_share:.1%}; raise --max-share"
            + ("" if len(heaviest.key) > 1 else " or use --split-letters")
        )
    return _runs_needed([u.weight for u in units if u.weight > 0], cap)


def heavy_buckets(bucket_weights: dict[str, int], cohorts: int) -> set[str]:
    """Buckets heavier than an even cohort: the ones ``--split-letters`` cuts into prefixes."""
    total = sum(bucket_weights.values())
    return {b for b, w in bucket_weights.items() if cohorts > 0 and w * cohorts > total}


def display(key: str) -> str:
    """How a unit key reads in a range label: ``0`` for digits, ``~`` for the rest."""
    if key == DIGITS:
        return "0-9"
    if key == OTHER:
        return "other"
    return key


def range_label(first: str, last: str) -> str:
    if first == last:
        return display(first)
    start = "0" if first == DIGITS else display(first)
    return f"{start}–{display(last)}"


# --- time layout -------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Allowed local times of day and days of week for switching cohorts off."""

    opens: time
    closes: time
    skip_weekends: bool
    zone: ZoneInfo

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        if self.skip_weekends and local.weekday() >= 5:
            return False
        return self.opens <= local.time() < self.closes

    def next_open(self, moment: datetime) -> datetime:
        """``moment`` if it is inside the window, else the next time the window opens (aware, UTC)."""
        if self.contains(moment):
            return moment
        local = moment.astimezone(self.zone)
        day: date = local.date()
        if local.time() >= self.closes:
            day += timedelta(days=1)
        for _ in range(8):
            candidate = datetime.combine(day, self.opens, tzinfo=self.zone)
            if candidate >= moment and (not self.skip_weekends or candidate.weekday() < 5):
                return candidate.astimezone(ZoneInfo("UTC"))
            day += timedelta(days=1)
        raise AssertionError("a window that never opens")  # pragma: no cover - parse_window forbids it


def parse_window(text: str, zone_name: str, skip_weekends: bool) -> Window:
    """``08:00-17:00`` in ``Europe/Berlin`` → a Window; a clear PlanError on anything else."""
    zone = parse_zone(zone_name)
    try:
        opens_text, closes_text = text.split("-")
        opens, closes = time.fromisoformat(opens_text.strip()), time.fromisoformat(closes_text.strip())
    except ValueError:
        raise PlanError(f"window {text!r} is not HH:MM-HH:MM (e.g. 08:00-17:00)") from None
    if opens >= closes:
        raise PlanError(f"window {text!r} closes before it opens; overnight windows are not supported")
    return Window(opens, closes, skip_weekends, zone)


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PlanError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin or UTC)") from None


def layout(start: datetime, every: timedelta, count: int, window: Window) -> list[datetime]:
    """``count`` times from ``start`` every ``every``, each moved to the next allowed moment."""
    if every <= timedelta(0):
        raise PlanError("--every must be longer than zero")
    times: list[datetime] = []
    moment = window.next_open(start)
    for _ in range(count):
        times.append(moment)
        moment = window.next_open(moment + every)
    return times


MAX_EVERY = timedelta(days=366)  # a longer step interval is a typo, and sums of such overflow datetime


def parse_duration(text: str) -> timedelta:
    """``90m``, ``2h``, ``1d``, ``1h30m`` → timedelta."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    total, number = 0, ""
    for char in text.strip().lower():
        if char.isdigit():
            number += char
        elif char in units and number:
            total, number = total + int(number) * units[char], ""
        else:
            raise PlanError(f"duration {text!r} is not like 2h, 90m, 1d or 1h30m")
    if number or total == 0:
        raise PlanError(f"duration {text!r} is not like 2h, 90m, 1d or 1h30m (give a unit; zero is not allowed)")
    if total > MAX_EVERY.total_seconds():
        raise PlanError(f"duration {text!r} is longer than {MAX_EVERY.days} days")
    return timedelta(seconds=total)
