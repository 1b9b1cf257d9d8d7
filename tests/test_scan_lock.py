"""One scan at a time per database: a second `rollout scan` waits for the first, or gives up with a clear error;
either way nothing is counted twice and nothing is lost (SQLite: a lock file beside the database; PostgreSQL: an
advisory lock)."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from rollout import locks
from rollout.models import LegacyDay, ScanSource
from rollout.runtime import Runtime
from rollout.scan.inventory_workflow import import_inventory
from rollout.scan.scan_workflow import legacy_report
from rollout.synthetic.maillog import write_maillog

from .conftest import Cli, using_postgres
from .scan_support import write_inventory
from .test_scan import LEGACY, MAILBOXES, SASL, START

WAIT_FOR_WAITERS_SECONDS = 60  # bound on how long the test waits for both scans to reach the lock
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>, <linux/capability.h>
SQLITE_ONLY = pytest.mark.skipif(using_postgres(), reason="the lock file is SQLite's; PostgreSQL locks in the server")


def hold_scan_lock(runtime: Runtime):  # type: ignore[no-untyped-def]
    return locks.held(runtime.engine, "scan", locks.SCAN_LOCK_KEY, 0)


def waiting_for_the_lock(runtime: Runtime, pids: list[int]) -> bool:
    """Whether every one of these processes is waiting for the scan lock (as the server or the kernel sees it)."""
    if runtime.engine.dialect.name == "postgresql":
        key = locks.SCAN_LOCK_KEY
        with runtime.engine.connect() as conn:  # bigint advisory keys are split into classid (high) and objid (low)
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND NOT granted AND classid = :hi AND objid = :lo"
                ),
                {"hi": key >> 32, "lo": key & 0xFFFFFFFF},
            ).scalar_one()
        return waiting == len(pids)
    path = locks.lock_file(runtime.engine, "scan")
    assert path is not None
    return all(any(os.path.realpath(fd) == str(path) for fd in _fds(pid)) for pid in pids)


def _fds(pid: int) -> list[str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        return [str(fd_dir / name) for name in os.listdir(fd_dir)]
    except FileNotFoundError:
        return []


def test_two_scans_at_once_count_every_line_once(runtime: Runtime, cli_env: dict[str, str], tmp_path: Path) -> None:
    """Two `rollout scan` processes started while a scan holds the lock both wait, then run one after the other: both
    exit 0, the legacy use is the ground truth (not twice), and the file's lines are counted once."""
    import_inventory(runtime, write_inventory(tmp_path / "inventory.csv", MAILBOXES))
    log = tmp_path / "mail.log"
    truth = write_maillog(log, MAILBOXES, LEGACY, SASL, start=START, span=timedelta(hours=12), lines=20_000, seed=4)
    with hold_scan_lock(runtime):
        scans = [
            subprocess.Popen(
                [sys.executable, "-m", "rollout", "scan", str(log), "--json"],
                env=cli_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + WAIT_FOR_WAITERS_SECONDS
        while not waiting_for_the_lock(runtime, [p.pid for p in scans]):
            running = all(p.poll() is None for p in scans)
            assert time.monotonic() < deadline and running, [p.communicate() for p in scans]
            time.sleep(0.05)
    outputs = [p.communicate(timeout=120) for p in scans]
    assert [p.returncode for p in scans] == [0, 0], outputs
    lines = sorted(json.loads(out)["lines"] for out, _err in outputs)
    assert lines == [0, truth.lines]  # the second read what the first left: nothing
    assert {r.address: r.submissions for r in legacy_report(runtime)} == dict(truth.legacy)
    with runtime.sessions() as s:
        assert s.scalar(select(ScanSource.lines)) == truth.lines
        assert s.scalar(select(func.sum(LegacyDay.legacy_count))) == sum(truth.legacy.values())


def test_a_scan_that_waited_too_long_exits_1_having_recorded_nothing(runtime: Runtime, tmp_path: Path) -> None:
    """While another scan holds the lock, `rollout scan` waits scan.lock_wait_seconds, then says so (exit 1) and
    records nothing; once the lock is free the same scan reads the whole file."""
    import_inventory(runtime, write_inventory(tmp_path / "inventory.csv", MAILBOXES))
    log = tmp_path / "mail.log"
    truth = write_maillog(log, MAILBOXES, LEGACY, SASL, start=START, span=timedelta(hours=12), lines=2_000, seed=6)
    scan = dataclasses.replace(runtime.settings.scan, lock_wait_seconds=0.3)
    cli = Cli(Runtime(settings=dataclasses.replace(runtime.settings, scan=scan), clock=runtime.clock, actor="tester"))
    with hold_scan_lock(runtime):
        result = cli("scan", str(log), expect=1)
        with runtime.sessions() as s:
            assert s.scalar(select(func.count()).select_from(ScanSource)) == 0
    assert result.stderr.startswith("Error: another rollout scan is running on this database (")
    assert "waited 0.3 s (scan.lock_wait_seconds)" in result.stderr and "Traceback" not in result.stderr
    assert json.loads(cli("scan", str(log), "--json").stdout)["lines"] == truth.lines
    assert {r.address: r.submissions for r in legacy_report(runtime)} == dict(truth.legacy)
    cli.runtime.close()


def bound_by_file_modes() -> None:
    """In the child before exec: root gives up the capabilities that override file modes, so a read-only file is
    read-only to it as to any other user (a non-root user needs nothing)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@SQLITE_ONLY
def test_a_lock_file_the_user_cannot_write_is_an_error_naming_it(
    runtime: Runtime, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A scan lock file this user cannot write (left by a scan run as another user): `rollout scan` exits 1 naming
    the file and the reason, without a traceback, and records nothing; once the file is writable the scan runs."""
    import_inventory(runtime, write_inventory(tmp_path / "inventory.csv", MAILBOXES))
    log = tmp_path / "mail.log"
    truth = write_maillog(log, MAILBOXES, LEGACY, SASL, start=START, span=timedelta(hours=1), lines=500, seed=7)
    lock = locks.lock_file(runtime.engine, "scan")
    assert lock is not None
    lock.write_text("ops-host 4242\n")
    lock.chmod(0o444)
    scan = [sys.executable, "-m", "rollout", "scan", str(log), "--json"]
    refused = subprocess.run(scan, env=cli_env, capture_output=True, text=True, preexec_fn=bound_by_file_modes)
    assert refused.returncode == 1, refused
    assert refused.stderr.startswith(f"Error: cannot open the scan lock file {lock}: Permission denied. "), refused
    assert "Traceback" not in refused.stderr
    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ScanSource)) == 0
    lock.chmod(0o644)
    done = subprocess.run(scan, env=cli_env, capture_output=True, text=True, preexec_fn=bound_by_file_modes)
    assert done.returncode == 0, done
    assert json.loads(done.stdout)["lines"] == truth.lines


@SQLITE_ONLY
def test_a_lock_path_taken_by_a_directory_is_an_error_naming_it(run: Cli, runtime: Runtime, tmp_path: Path) -> None:
    """Where the scan lock file belongs there is a directory (no user can open it as a file): exit 1 naming the path
    and the reason, nothing recorded."""
    log = tmp_path / "mail.log"
    write_maillog(log, MAILBOXES, LEGACY, SASL, start=START, span=timedelta(hours=1), lines=200, seed=8)
    lock = locks.lock_file(runtime.engine, "scan")
    assert lock is not None
    lock.mkdir()
    result = run("scan", str(log), expect=1)
    assert result.stderr.startswith(f"Error: cannot open the scan lock file {lock}: Is a directory. "), result.stderr
    assert "one scan runs at a time per database" in result.stderr.lower()
    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ScanSource)) == 0


def test_scan_help_says_one_scan_at_a_time(run: Cli) -> None:
    """`rollout scan --help` tells the operator that a second scan waits scan.lock_wait_seconds, then exits 1."""
    text = " ".join(run("scan", "--help").stdout.split())
    assert "One scan runs at a time per database: a second one waits up to scan.lock_wait_seconds" in text
    assert "then exits 1 having recorded nothing" in text
