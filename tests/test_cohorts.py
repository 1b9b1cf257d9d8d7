"""The partition (exact, against brute force), cohort labels, and the time layout."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.errors import PlanError
from rollout.plan.cohorts import (
    Unit,
    cohorts_for_max_share,
    layout,
    parse_duration,
    parse_window,
    partition,
    range_label,
)

UTC = UTC


def brute_force(weights: list[int], k: int) -> tuple[int, int]:
    """(least possible heaviest run, least sum of squares among partitions achieving it)."""
    best: tuple[int, int] | None = None
    n = len(weights)
    for cuts in itertools.combinations(range(1, n), k - 1):
        bounds = (0, *cuts, n)
        runs = [sum(weights[a:b]) for a, b in itertools.pairwise(bounds)]
        candidate = (max(runs), sum(r * r for r in runs))
        best = candidate if best is None or candidate < best else best
    assert best is not None
    return best


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=10), st.integers(min_value=1, max_value=6))
def test_partition_is_optimal_against_brute_force(weights: list[int], k: int) -> None:
    """The heaviest cohort is as light as possible and ties go to the most even sizes."""
    units = [Unit(chr(ord("a") + i), w) for i, w in enumerate(weights)]
    nonzero = [w for w in weights if w > 0]
    if len(nonzero) < k:
        with pytest.raises(PlanError, match="at most"):
            partition(units, k)
        return
    slices = partition(units, k)
    assert len(slices) == k
    # contiguous, covering every unit once, each with some weight
    assert slices[0].first == 0 and slices[-1].last == len(units) - 1
    assert all(a.last + 1 == b.first for a, b in itertools.pairwise(slices))
    assert all(s.weight == sum(weights[s.first : s.last + 1]) > 0 for s in slices)
    assert (max(s.weight for s in slices), sum(s.weight**2 for s in slices)) == brute_force(nonzero, k)


def test_ties_break_towards_even_sizes() -> None:
    """With the same heaviest cohort, the more even split wins."""
    units = [Unit(k, w) for k, w in zip("abcd", (10, 1, 1, 10), strict=True)]
    slices = partition(units, 2)
    assert [s.weight for s in slices] == [11, 11]


def test_max_share_gives_the_fewest_cohorts() -> None:
    """--max-share finds the fewest cohorts within the share, and names a letter that is too heavy."""
    units = [Unit(k, 10) for k in "abcdefghij"]
    assert cohorts_for_max_share(units, 0.2) == 5
    assert cohorts_for_max_share(units, 0.25) == 5  # 2 units (20%) per cohort; 3 would be 30%
    with pytest.raises(PlanError, match=r"s alone holds 50\.0%.*--split-letters"):
        cohorts_for_max_share([Unit("a", 5), Unit("s", 10), Unit("t", 5)], 0.4)


@pytest.mark.parametrize(
    ("first", "last", "label"),
    [
        ("a", "c", "a–c"),
        ("0", "b", "0–b"),
        ("sa", "sm", "sa–sm"),
        ("u", "~", "u–other"),
        ("0", "0", "0-9"),
        ("k", "k", "k"),
    ],
)
def test_range_labels(first: str, last: str, label: str) -> None:
    """Ranges read as letters, two-letter prefixes, 0-9 and other."""
    assert range_label(first, last) == label


def test_layout_stays_inside_the_window_and_skips_weekends() -> None:
    """Times move to the next opening of the window, in the given zone, never on a weekend."""
    window = parse_window("08:00-17:00", "Europe/Berlin", skip_weekends=True)
    start = datetime(2026, 4, 16, 14, 0, tzinfo=UTC)  # Thursday 16:00 in Berlin (CEST)
    times = layout(start, timedelta(hours=2), 4, window)
    local = [t.astimezone(window.zone).strftime("%a %H:%M") for t in times]
    assert local == ["Thu 16:00", "Fri 08:00", "Fri 10:00", "Fri 12:00"]
    friday_late = datetime(2026, 4, 17, 15, 30, tzinfo=UTC)  # 17:30 Berlin: closed until Monday
    assert (
        layout(friday_late, timedelta(hours=1), 1, window)[0].astimezone(window.zone).strftime("%a %d %H:%M")
        == "Mon 20 08:00"
    )


def test_layout_across_daylight_saving_change() -> None:
    """The window is in local time: 08:00 Berlin is 07:00 UTC before the change and 06:00 after."""
    window = parse_window("08:00-09:00", "Europe/Berlin", skip_weekends=False)
    times = layout(datetime(2026, 3, 28, 7, 0, tzinfo=UTC), timedelta(days=1), 2, window)
    assert [t.hour for t in times] == [7, 6]


@pytest.mark.parametrize("bad", ["8-17", "17:00-08:00", "08:00"])
def test_bad_windows_are_refused(bad: str) -> None:
    """A window that is not HH:MM-HH:MM, or closes before it opens, is a clear error."""
    with pytest.raises(PlanError, match="window"):
        parse_window(bad, "UTC", False)


def test_unknown_zone_and_bad_durations() -> None:
    """Unknown zones and durations without units are named in the error."""
    with pytest.raises(PlanError, match="Mars/Olympus"):
        parse_window("08:00-17:00", "Mars/Olympus", False)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    for bad in ("90", "2x", "0h"):
        with pytest.raises(PlanError, match="duration"):
            parse_duration(bad)
