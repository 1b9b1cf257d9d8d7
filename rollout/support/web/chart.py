"""The legacy trend as bars for an inline SVG (drawn by the template; no JavaScript, no images)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

WIDTH, HEIGHT, LABEL_SPACE = 640, 200, 36


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    week: date


def trend_bars(weeks: list[tuple[date, int]]) -> list[Bar]:
    """One bar per week, scaled to the highest week; a week with any use gets at least a sliver."""
    if not weeks:
        return []
    peak = max(count for _, count in weeks) or 1
    slot = WIDTH / len(weeks)
    plot = HEIGHT - LABEL_SPACE
    bars = []
    for i, (week, count) in enumerate(weeks):
        height = max(2.0 if count else 0.0, plot * count / peak)
        bars.append(
            Bar(
                round(i * slot + slot * 0.15, 1),
                round(plot - height + 16, 1),
                round(slot * 0.7, 1),
                round(height, 1),
                count,
                week,
            )
        )
    return bars
