"""`rollout scheduler`: jobs fire in order on an injected clock, stale waves wait, one acts, SIGTERM is graceful."""

import signal
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from rollout.clock import ManualClock
from rollout.runtime import Runtime
from rollout.scheduler import SchedulerLock, planned_jobs, run_until
from rollout.support.operate_workflow import rollout_status

from .campaign_support import SmtpServer
from .conftest import T0, using_postgres
from .scheduler_support import HOST, LEGACY, Daemon, configure, job_runs, small_rollout, write_config


def test_jobs_fire_in_order_on_an_injected_clock(runtime: Runtime, clock: ManualClock, tmp_path: Path) -> None:
    """Scan first (it finds the legacy senders), then each wave at its time, then each cohort's step, to the end."""
    with SmtpServer(HOST) as server:
        configure(runtime, tmp_path, server, **{"scan.log_files": str(tmp_path / "*.log")})
        small_rollout(runtime, tmp_path, first_wave=T0 + timedelta(hours=2), log=tmp_path / "mail.log")
        run_until(runtime, clock, T0 + timedelta(days=10))
        messages = list(server.inbox.messages)
    runs = job_runs(runtime)
    assert (runs[0].job, runs[0].outcome, runs[0].started_at) == ("scan", "ok", T0)
    assert runs[0].details["result"]["mailboxes"] == len(LEGACY)
    acting = [(r.job, r.details["id"], r.outcome, r.started_at) for r in runs if r.job in ("notify", "step")]
    plan_start = T0 + timedelta(weeks=1, days=1, hours=2)
    assert [a[:3] for a in acting] == [
        ("notify", "notify-1-1", "ok"),
        ("notify", "notify-1-2", "ok"),
        ("step", "step-1-reject", "ok"),
        ("step", "step-2-reject", "ok"),
    ]
    assert [a[3] for a in acting] == [
        T0 + timedelta(hours=2),
        T0 + timedelta(weeks=1, hours=2),
        plan_start,
        plan_start + timedelta(days=1),
    ]
    assert sorted(m["To"].addresses[0].addr_spec for m in messages) == [
        "k1@example.org",
        "k1@example.org",
        "k2@example.org",
        "k2@example.org",
        "k3@example.org",
        "k3@example.org",
    ]
    assert {r.job for r in runs} == {"scan", "expire", "notify", "step"}
    assert all(r.finished_at is not None and r.outcome in ("ok", "skipped") for r in runs)
    status = rollout_status(runtime)
    assert [c.stage for c in status.cohorts] == ["reject", "reject"]
    assert status.phase == "switch-off" and status.next_action is not None  # ops take the final step
    assert "the final step" in status.next_action.action
    disabled = (tmp_path / "disabled.txt").read_text()
    assert all(address in disabled for address in LEGACY)


def test_a_wave_later_than_the_grace_is_not_sent(runtime: Runtime, clock: ManualClock, tmp_path: Path) -> None:
    """A wave whose time passed more than the grace ago is recorded as skipped, sends nothing; the next goes out."""
    with SmtpServer(HOST) as server:
        configure(runtime, tmp_path, server, **{"scheduler.misfire_grace_seconds": 3600})
        small_rollout(runtime, tmp_path, first_wave=T0 - timedelta(hours=3))
        run_until(runtime, clock, T0 + timedelta(days=6))
        assert server.inbox.messages == []
        (stale,) = [r for r in job_runs(runtime) if r.job == "notify"]
        assert stale.outcome == "skipped"
        assert "notify-1-1 is 3.0 h late (grace 1.0 h): not run without an operator" in stale.details["reason"]
        assert "rollout notify --wave 1" in stale.details["reason"]
        run_until(runtime, clock, T0 + timedelta(days=7))
        assert len(server.inbox.messages) == 3  # wave 2, on time, to each affected customer
    assert [r.outcome for r in job_runs(runtime) if r.job == "notify"] == ["skipped", "ok"]


def test_a_paused_rollout_is_not_stepped(runtime: Runtime, clock: ManualClock, tmp_path: Path) -> None:
    """At a cohort's time a paused rollout records the step as skipped with the pause's reason."""
    from rollout.plan.plan_workflow import pause

    configure(runtime, tmp_path, **{"smtp.port": 1})
    small_rollout(runtime, tmp_path, first_wave=T0 - timedelta(days=14), weeks=1, plan_start=T0 + timedelta(hours=1))
    pause(runtime, "support queue is full")
    run_until(runtime, clock, T0 + timedelta(hours=2))
    (refused,) = [r for r in job_runs(runtime) if r.job == "step"]
    assert refused.outcome == "skipped" and "paused (support queue is full" in refused.details["reason"]
    assert rollout_status(runtime).cohorts[0].stage == "pending"


def test_planned_jobs_follow_the_database(runtime: Runtime, tmp_path: Path) -> None:
    """Without a campaign or plan only scan and expiry are planned; with them, each wave and the next step."""
    configure(runtime, tmp_path)
    assert [p.id for p in planned_jobs(runtime)] == ["scan", "expire"]
    small_rollout(runtime, tmp_path, first_wave=T0 + timedelta(hours=2))
    planned = {p.id: p for p in planned_jobs(runtime)}
    assert set(planned) == {"scan", "expire", "notify-1-1", "notify-1-2", "step-1-reject"}
    assert planned["scan"].every == timedelta(minutes=720)
    assert planned["notify-1-2"].at == T0 + timedelta(weeks=1, hours=2)


@pytest.mark.skipif(using_postgres(), reason="the lock file is SQLite's; PostgreSQL's advisory lock has its own test")
def test_sqlite_lock_file_admits_one_scheduler(runtime: Runtime, tmp_path: Path) -> None:
    """A second holder of the lock file is refused until the first releases it."""
    configure(runtime, tmp_path)
    first, second = SchedulerLock(runtime), SchedulerLock(runtime)
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


@pytest.mark.slow
def test_sigterm_lets_the_running_job_finish(runtime: Runtime, tmp_path: Path, cli_env: dict[str, str]) -> None:
    """SIGTERM while a job runs: the job completes and is recorded, then the scheduler exits 0."""
    configure(runtime, tmp_path)
    config = write_config(tmp_path / "rollout.toml", runtime)
    with hold_job_runs(runtime) as release:  # the job's first write waits for this
        daemon = Daemon(cli_env, config)
        try:
            daemon.wait_for("job scan started")
            daemon.proc.send_signal(signal.SIGTERM)
            daemon.wait_for("SIGTERM received: letting the running job finish")
            assert daemon.proc.poll() is None, "the scheduler exited while its job was still running"
            release()
            assert daemon.wait_exit() == 0  # the one SIGTERM suffices: no second signal
        finally:
            daemon.kill()
    runs = job_runs(runtime)
    assert runs and runs[0].job == "scan" and runs[0].outcome == "skipped" and runs[0].finished_at is not None
    assert "no log files to scan" in runs[0].details["reason"]
    assert all(r.outcome != "running" for r in runs)
    assert "scheduler stopped" in daemon.lines[-1]
    finished = [i for i, line in enumerate(daemon.lines) if "job scan skipped" in line]
    assert finished and finished[0] < len(daemon.lines) - 1  # the job ended before the scheduler let go of its lock


@contextmanager
def hold_job_runs(runtime: Runtime) -> Iterator[Callable[[], None]]:
    """Block every write to job_runs until the returned function is called."""
    if using_postgres():
        conn = runtime.engine.connect()
        transaction = conn.begin()
        conn.execute(text("LOCK TABLE job_runs IN SHARE ROW EXCLUSIVE MODE"))
        try:
            yield transaction.commit
        finally:
            conn.close()
        return
    blocker = sqlite3.connect(make_url(runtime.settings.database_url).database, timeout=5, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield lambda: blocker.execute("COMMIT")
    finally:
        blocker.close()


@pytest.mark.slow
@pytest.mark.skipif(using_postgres(), reason="the lock file is SQLite's; PostgreSQL's advisory lock has its own test")
def test_second_scheduler_on_sqlite_waits_and_says_so(
    runtime: Runtime, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """While the lock file is held, `rollout scheduler` says it waits and runs no job; SIGTERM ends the wait."""
    configure(runtime, tmp_path)
    config = write_config(tmp_path / "rollout.toml", runtime)
    holder = SchedulerLock(runtime)
    assert holder.try_acquire()
    daemon = Daemon(cli_env, config)
    try:
        line = daemon.wait_for("another scheduler is acting")
        assert str(tmp_path / "scheduler.lock") in line
        assert daemon.terminate() == 0
    finally:
        holder.release()
        daemon.kill()
    assert job_runs(runtime) == []


@pytest.mark.slow
@pytest.mark.postgres_only
def test_two_schedulers_on_postgresql_only_one_acts(runtime: Runtime, tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Of two schedulers on one PostgreSQL database one acts, the other waits; it takes over when the first stops."""
    configure(runtime, tmp_path)
    config = write_config(tmp_path / "rollout.toml", runtime)
    first = Daemon(cli_env, config)
    second = None
    try:
        first.wait_for("scheduler acting")
        first.wait_for("job expire ok")
        second = Daemon(cli_env, config)
        second.wait_for("another scheduler is acting (PostgreSQL advisory lock")
        assert {r.details["pid"] for r in job_runs(runtime)} == {first.proc.pid}
        assert first.terminate() == 0
        second.wait_for("the other scheduler stopped: this one acts now", timeout=30)
        second.wait_for("job expire ok")
        assert {r.details["pid"] for r in job_runs(runtime)} == {first.proc.pid, second.proc.pid}
        assert second.terminate() == 0
    finally:
        first.kill()
        if second:
            second.kill()


def test_a_scheduler_started_mid_campaign_plans_only_the_current_and_later_waves(
    runtime: Runtime, clock: ManualClock, tmp_path: Path
) -> None:
    """Waves before the one due now are history: a scheduler started in week 3 plans waves 3 to 6 only."""
    configure(runtime, tmp_path)
    small_rollout(runtime, tmp_path, first_wave=T0 - timedelta(weeks=2, hours=1), weeks=6)
    waves = [p.params["wave"] for p in planned_jobs(runtime) if p.job == "notify"]
    assert waves == [3, 4, 5, 6]
