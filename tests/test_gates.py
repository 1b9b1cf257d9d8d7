"""Gates before every step: figures and thresholds, a refused step by hand, a pause at a scheduled one."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from rollout.clock import ManualClock
from rollout.config import GateSettings
from rollout.models import AuditEvent, RefusalHour, RolloutState, ScanSource
from rollout.runtime import Runtime
from rollout.scheduler import run_until

from .conftest import T0, Cli
from .plan_support import add_legacy, apply_plan, configure, import_locals, mailbox_id

# 20 mailboxes, 4 cohorts of 5 (a-e, f-j, k-o, p-t), one every hour from T0
LOCALS = [
    "anna",
    "bert",
    "carl",
    "dora",
    "emil",
    "fritz",
    "gina",
    "hans",
    "ida",
    "jan",
    "karl",
    "lena",
    "mia",
    "nils",
    "olga",
    "paul",
    "quinn",
    "rosa",
    "sven",
    "tina",
]
QUIET = GateSettings(
    max_scan_age_minutes=30, window_hours=6, max_refusals_per_hour=10, max_refused_share=0.2, max_next_legacy_share=0.2
)


@pytest.fixture
def planned(run: Cli, runtime: Runtime, tmp_path: Path) -> Path:
    map_path = configure(runtime, tmp_path, gates=QUIET)
    import_locals(runtime, tmp_path, LOCALS)
    apply_plan(run, 4)
    return map_path


def gates(runtime: Runtime, **changes: object) -> None:
    import dataclasses

    runtime.settings = dataclasses.replace(
        runtime.settings, gates=dataclasses.replace(runtime.settings.gates, **changes)
    )  # type: ignore[arg-type]


def scanned(runtime: Runtime, at: datetime) -> None:
    """A scan of the mail log at ``at`` (what `rollout scan` records as its position)."""
    with runtime.sessions() as session, session.begin():
        row = session.scalar(select(ScanSource))
        if row is None:
            session.add(
                ScanSource(
                    host="mx1",
                    path="/var/log/mail.log",
                    device=1,
                    inode=2,
                    fingerprint="f" * 64,
                    offset=0,
                    lines=0,
                    last_scan_at=at,
                )
            )
        else:
            row.last_scan_at = at


def refused(runtime: Runtime, address: str, at: datetime, count: int = 1) -> None:
    with runtime.sessions() as session, session.begin():
        hour = at.replace(minute=0, second=0, microsecond=0)
        session.add(RefusalHour(mailbox_id=mailbox_id(runtime, address), hour=hour, count=count))


def gate_map(out: str) -> dict[str, dict]:
    return {g["name"]: g for g in json.loads(out)["gates"]}


def test_dry_run_and_status_show_every_gate_with_figure_and_threshold(
    run: Cli, runtime: Runtime, clock: ManualClock, planned: Path
) -> None:
    """Each gate's figure and threshold in step --dry-run, status and status --json."""
    scanned(runtime, T0 - timedelta(minutes=10))
    run("step", "--yes")
    clock.advance(timedelta(hours=1))
    scanned(runtime, clock.now() - timedelta(minutes=5))
    refused(runtime, "anna@example.de", clock.now() - timedelta(minutes=70), count=4)
    refused(runtime, "anna@example.de", clock.now() - timedelta(minutes=5), count=2)
    add_legacy(runtime, "fritz@example.de", clock.now().date())
    out = run("step", "--dry-run").output
    assert re.search(r"^ok\s+fresh_data\s+newest scan 5 min ago .*at most 30 min old$", out, re.MULTILINE)
    assert (
        "4 refusals by our map in the busiest hour of the last 6 h (6 in all)" in out and "at most 10 per hour" in out
    )
    assert "20.0% of cohort 1 (a–e) refused in the last 6 h (1 of 5 mailboxes)" in out
    assert "20.0% of cohort 2 (f–j) still use the legacy path (1 of 5 mailboxes)" in out
    text = run("status").output
    assert "gates before the next step" in text and "refused_share" in text
    figures = gate_map(run("status", "--json").output)
    assert set(figures) == {"fresh_data", "refusals_per_hour", "refused_share", "next_legacy_share"}
    assert figures["refusals_per_hour"] | {"figure": None, "threshold": None} == {
        "name": "refusals_per_hour",
        "passed": True,
        "value": 4.0,
        "limit": 10.0,
        "figure": None,
        "threshold": None,
    }
    assert figures["refused_share"]["value"] == 0.2 and figures["next_legacy_share"]["value"] == 0.2


def test_a_failed_gate_refuses_the_step_naming_each_gate(
    run: Cli, runtime: Runtime, clock: ManualClock, planned: Path
) -> None:
    """Exit 1 naming every failed gate; nothing changes; --force --reason steps and the audit keeps the figures."""
    scanned(runtime, T0)
    run("step", "--yes")
    clock.advance(timedelta(hours=1))
    refused(runtime, "anna@example.de", clock.now() - timedelta(minutes=30), count=11)
    refused(runtime, "bert@example.de", clock.now() - timedelta(minutes=30), count=1)
    result = run("step", "--yes", expect=1)
    assert "gate fresh_data: no scan since 2026-03-02 09:00 UTC (60 min ago)" in result.stderr
    assert "gate refusals_per_hour: 12 refusals by our map in the busiest hour" in result.stderr
    assert "gate refused_share: 40.0% of cohort 1 (a–e)" in result.stderr
    assert "next_legacy_share" not in result.stderr  # it passed
    assert [c["stage"] for c in json.loads(run("status", "--json").output)["cohorts"]] == [
        "reject",
        "pending",
        "pending",
        "pending",
    ]
    run("step", "--yes", "--force", "--reason", "support staffed up")
    with runtime.sessions() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "step").order_by(AuditEvent.id.desc())
        ).first()
    assert event is not None and event.details["reason"] == "support staffed up"
    assert (
        event.details["gates"]["refusals_per_hour"]["value"] == 12.0
        and not event.details["gates"]["refusals_per_hour"]["passed"]
    )
    assert any("refused_share" in f for f in event.details["forced"])


def test_refusals_leave_the_window(run: Cli, runtime: Runtime, clock: ManualClock, planned: Path) -> None:
    """The refusal gates look at the last window_hours only: once the wave has passed, the step goes ahead."""
    scanned(runtime, T0)
    run("step", "--yes")
    refused(runtime, "anna@example.de", T0 + timedelta(minutes=20), count=30)
    clock.advance(timedelta(hours=6))
    scanned(runtime, clock.now())
    assert "refusals_per_hour" in run("step", "--yes", expect=1).stderr
    clock.advance(timedelta(hours=1, minutes=1))
    scanned(runtime, clock.now())
    run("step", "--yes")


def test_a_threshold_set_off_shows_its_figure_and_does_not_gate(
    run: Cli, runtime: Runtime, clock: ManualClock, planned: Path
) -> None:
    """max_refusals_per_hour = "off": the figure is shown, the step goes ahead."""
    gates(runtime, max_refusals_per_hour=None, max_scan_age_minutes=None)
    run("step", "--yes")
    clock.advance(timedelta(hours=1))
    refused(runtime, "anna@example.de", clock.now() - timedelta(minutes=10), count=500)
    gates(runtime, max_refused_share=None)
    out = run("step", "--yes").output
    assert "500 refusals by our map" in out and "off: does not gate" in out
    assert "no scan yet" in out


def test_the_ladder_climb_passes_the_same_gates(run: Cli, runtime: Runtime, clock: ManualClock, planned: Path) -> None:
    """A cohort moving from defer to reject is refused by the same gates as a new cohort."""
    configure(runtime, planned.parent, gates=QUIET, ladder=("defer", "reject"))
    scanned(runtime, T0)
    run("step", "--yes")
    clock.advance(timedelta(minutes=20))
    scanned(runtime, clock.now())
    refused(runtime, "carl@example.de", clock.now(), count=11)
    result = run("step", "--yes", expect=1)
    assert (
        "cohort 1 (a–e) defer → reject" not in result.output and "gate refusals_per_hour: 11 refusals" in result.stderr
    )
    assert "defer → reject" in run("step", "--dry-run").output


def test_external_command_fails_with_its_first_line(run: Cli, runtime: Runtime, planned: Path, tmp_path: Path) -> None:
    """A check exiting non-zero fails the gate with its first output line as the reason; exit 0 passes."""
    check = tmp_path / "tickets"
    check.write_text('#!/bin/sh\necho "$TICKETS open tickets in the SMTP queue"\n[ "$TICKETS" -lt 40 ]\n')
    check.chmod(0o755)
    scanned(runtime, T0)
    gates(runtime, command=str(check), command_timeout_seconds=20)
    os.environ["TICKETS"] = "57"
    try:
        result = run("step", "--yes", expect=1)
        assert "gate command: 57 open tickets in the SMTP queue (exit 0 within 20 s)" in result.stderr
        os.environ["TICKETS"] = "12"
        out = run("step", "--yes").output
        assert re.search(r"^ok\s+command\s+12 open tickets in the SMTP queue", out, re.MULTILINE)
    finally:
        del os.environ["TICKETS"]


def test_external_command_that_hangs_is_killed_and_fails(
    run: Cli, runtime: Runtime, planned: Path, tmp_path: Path
) -> None:
    """A check still running at its timeout is killed (with what it started) and the gate fails."""
    pids = tmp_path / "pids"
    check = tmp_path / "hang"
    check.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {pids}\necho $$ >> {pids}\nwait\n")
    check.chmod(0o755)
    scanned(runtime, T0)
    gates(runtime, command=str(check), command_timeout_seconds=1)
    result = run("step", "--yes", expect=1)
    assert f"gate command: {check} did not answer within 1 s and was killed" in result.stderr
    assert not [pid for pid in pids.read_text().split() if still_running(pid, (str(check), "sleep"))]


def still_running(pid: str, names: tuple[str, ...]) -> bool:
    """The process is alive and still the one we started (a busy machine reuses pids)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and any(a in names or a.endswith("/hang") for a in argv)


def test_stale_scan_data_fails_the_gate(run: Cli, runtime: Runtime, clock: ManualClock, planned: Path) -> None:
    """No scan for longer than max_scan_age_minutes: "no scan since …"; never scanned: "no scan yet"."""
    assert "gate fresh_data: no scan yet: run `rollout scan`" in run("step", "--yes", expect=1).stderr
    scanned(runtime, T0 - timedelta(minutes=31))
    assert (
        "gate fresh_data: no scan since 2026-03-02 08:29 UTC (31 min ago) (at most 30 min old)"
        in run("step", "--yes", expect=1).stderr
    )
    scanned(runtime, T0 - timedelta(minutes=29))
    run("step", "--yes")


def test_scheduled_step_with_a_failed_gate_pauses_the_rollout(
    run: Cli, runtime: Runtime, clock: ManualClock, planned: Path
) -> None:
    """The scheduler pauses (actor scheduler, the failed gates as reason), records the run skipped, and after
    `resume` steps once the gates pass."""
    scanned(runtime, T0)
    run("step", "--yes")
    refused(runtime, "anna@example.de", T0 + timedelta(minutes=10), count=25)
    gates(runtime, max_scan_age_minutes=None)
    runs = run_until(runtime, clock, T0 + timedelta(hours=1, minutes=30))
    step_runs = [r for r in runs if r.job == "step"]
    assert [r.outcome for r in step_runs] == ["skipped"]
    assert "paused the rollout: gates failed: refusals_per_hour: 25 refusals" in step_runs[0].details["reason"]
    with runtime.sessions() as session:
        state = session.get(RolloutState, 1)
        assert state is not None and state.paused and state.paused_by == "scheduler"
        assert state.paused_reason.startswith(
            "gates failed: refusals_per_hour: 25 refusals by our map in the busiest hour"
        )
    assert [
        r for r in run_until(runtime, clock, T0 + timedelta(hours=3)) if r.job == "step"
    ] == []  # nothing steps while paused
    assert "PAUSED by scheduler" in run("status").output
    clock.set(T0 + timedelta(hours=7, minutes=5))  # the refusals have left the 6-hour window
    run("resume", "--reason", "calls handled")
    runs = run_until(runtime, clock, T0 + timedelta(hours=7, minutes=10))
    first = next(r for r in runs if r.job == "step")
    assert (first.details["id"], first.outcome, first.details["result"]["step"]["label"]) == (
        "step-2-reject",
        "ok",
        "f–j",
    )
    assert first.started_at == T0 + timedelta(hours=7, minutes=5)  # at the resume, not at the next cohort's time


def test_gates_settings_accept_off(tmp_path: Path) -> None:
    """A threshold "off" (file or environment) is unset; a bad one is a clear error."""
    from rollout.config import load_settings
    from rollout.errors import ConfigError

    path = tmp_path / "rollout.toml"
    path.write_text('[gates]\nmax_refusals_per_hour = "off"\nmax_refused_share = false\nwindow_hours = 12\n')
    settings = load_settings(path, environ={"ROLLOUT_GATES_MAX_SCAN_AGE_MINUTES": "off"})
    assert settings.gates.max_refusals_per_hour is None and settings.gates.max_refused_share is None
    assert settings.gates.max_scan_age_minutes is None and settings.gates.window_hours == 12
    path.write_text('[gates]\nmax_refusals_per_hour = "lots"\n')
    with pytest.raises(ConfigError, match="max_refusals_per_hour must be a number"):
        load_settings(path, environ={})


def test_status_charts_refusals_per_hour_since_each_switch_off(
    run: Cli, runtime: Runtime, clock: ManualClock, planned: Path
) -> None:
    """Per switched-off cohort: hourly refusals since its switch-off, a text chart in status and a series in --json."""
    gates(runtime, max_scan_age_minutes=None, max_refusals_per_hour=None, max_refused_share=None)
    run("step", "--yes")  # cohort 1 at 09:00
    refused(runtime, "anna@example.de", T0 - timedelta(hours=2), count=9)  # before its switch-off: not charted
    for hours, count in ((0, 2), (1, 8), (2, 4), (4, 1)):
        refused(runtime, "bert@example.de", T0 + timedelta(hours=hours, minutes=30), count=count)
    clock.advance(timedelta(hours=3))
    run("step", "--yes")  # cohort 2 at 12:00
    refused(runtime, "gina@example.de", T0 + timedelta(hours=4, minutes=10), count=3)
    clock.set(T0 + timedelta(hours=5, minutes=15))
    cohorts = json.loads(run("status", "--json").output)["cohorts"]
    assert cohorts[0]["refusals_per_hour"] == [
        {"hour": (T0 + timedelta(hours=h)).isoformat(), "refusals": n} for h, n in ((0, 2), (1, 8), (2, 4), (4, 1))
    ]
    assert cohorts[1]["refusals_per_hour"] == [{"hour": (T0 + timedelta(hours=4)).isoformat(), "refusals": 3}]
    assert cohorts[2]["refusals_per_hour"] == []
    text = run("status").output
    assert " 1 a–e      from 2026-03-02 09:00  ▂█▄·▁·  peak 8/h at 2026-03-02 10:00" in text
    assert " 2 f–j      from 2026-03-02 12:00  ·█·  peak 3/h at 2026-03-02 13:00" in text
