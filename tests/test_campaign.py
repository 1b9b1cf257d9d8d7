"""`rollout campaign start|show`: the weekly schedule."""

from __future__ import annotations

import json

from sqlalchemy import select

from rollout.models import AuditEvent
from rollout.runtime import Runtime

from .conftest import Cli


def test_start_moves_to_the_weekday_and_shows_six_waves(run: Cli) -> None:
    """--first on a Thursday with --weekday mon starts the next Monday at 09:00 Berlin; six waves a week apart."""
    out = json.loads(run("campaign", "start", "--first", "2026-02-26", "--json").output)
    assert out["first_at"] == "2026-03-02T08:00:00+00:00" and out["weeks"] == 6
    assert [w["due_at"][:16] for w in out["waves"]][:2] == ["2026-03-02T08:00", "2026-03-09T08:00"]
    assert len(out["waves"]) == 6


def test_waves_keep_local_time_across_daylight_saving(run: Cli) -> None:
    """A wave after the switch to summer time is still due at 09:00 local (07:00 UTC)."""
    out = json.loads(run("campaign", "start", "--first", "2026-03-16", "--weeks", "3", "--json").output)
    assert [w["due_at"][11:16] for w in out["waves"]] == ["08:00", "08:00", "07:00"]


def test_second_start_needs_replace(run: Cli, runtime: Runtime) -> None:
    """An active campaign is not silently replaced; --replace does it and the audit log says so."""
    run("campaign", "start", "--first", "2026-03-02")
    result = run("campaign", "start", "--first", "2026-03-09", expect=1)
    assert "use --replace" in result.output
    out = json.loads(run("campaign", "start", "--first", "2026-03-09", "--replace", "--json").output)
    assert out["id"] == 2 and out["active"]
    with runtime.sessions() as session:
        details = session.scalars(select(AuditEvent.details).where(AuditEvent.action == "campaign.start")).all()
    assert [d["replaced"] for d in details] == [None, 1]


def test_show_without_campaign_and_with_one(run: Cli) -> None:
    """show says how to start a campaign, then lists each wave with its counts."""
    assert "rollout campaign start" in run("campaign", "show").output
    run("campaign", "start", "--first", "2026-03-02", "--weeks", "2", "--at", "10:30", "--tz", "UTC")
    out = run("campaign", "show").output
    assert "campaign 1 (active): 2 weekly waves, mon 10:30 UTC; no wave is due now" in out  # T0 is 09:00, before 10:30
    assert "2026-03-09 10:30 UTC" in out


def test_bad_time_zone_and_time_are_clear_errors(run: Cli) -> None:
    """An unknown zone or a malformed --at exits 1 with what is wrong."""
    assert (
        "unknown time zone 'Mars/Base'"
        in run("campaign", "start", "--first", "2026-03-02", "--tz", "Mars/Base", expect=1).output
    )
    assert "--at must be HH:MM" in run("campaign", "start", "--first", "2026-03-02", "--at", "nine", expect=1).output
