"""A full disk or a failed commit at each point of a step: map, database, status and undo still agree."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from rollout.enforcement import files, postfix
from rollout.models import AuditEvent, Cohort, CohortMember, Mailbox, MapVersion
from rollout.runtime import Runtime

from .conftest import T0, Cli
from .plan_support import add_legacy, apply_plan, configure, import_locals
from .scheduler_support import GATES_OFF

pytestmark = pytest.mark.skipif(
    shutil.which("postmap") is None, reason="needs Postfix's postmap (installed by .ci/run)"
)
LOCALS = ["anna", "bert", "carl", "dora"]


class Fault:
    """Makes one call of an ``os``/``shutil`` function fail as on a full disk: the first whose arguments match."""

    def __init__(self, module: Any, name: str, matches: Callable[..., bool]) -> None:
        self.module, self.name, self.matches = module, name, matches
        self.original = getattr(module, name)
        self.hits = 0

    def install(self, mp: pytest.MonkeyPatch) -> None:
        def failing(*args: Any, **kwargs: Any) -> Any:
            if self.hits == 0 and self.matches(*args):
                self.hits += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.original(*args, **kwargs)

        mp.setattr(self.module, self.name, failing)


@pytest.fixture
def planned(run: Cli, runtime: Runtime, tmp_path: Path) -> Path:
    map_path = configure(runtime, tmp_path / "postfix")
    import_locals(runtime, tmp_path, LOCALS)
    apply_plan(run, 2)
    return map_path


def rejected(map_path: Path) -> set[str]:
    """Who the map in force (its index, what Postfix reads) refuses."""
    found = set()
    for local in LOCALS:
        key = f"{local}@example.de"
        done = subprocess.run(["postmap", "-q", key, f"hash:{map_path}"], capture_output=True, text=True, timeout=30)
        if done.stdout.startswith("REJECT"):
            found.add(key)
    return found


def switched_off(runtime: Runtime) -> set[str]:
    """Who the database says is switched off."""
    with runtime.sessions() as session:
        query = (
            select(Mailbox.address_key)
            .join(CohortMember, CohortMember.mailbox_id == Mailbox.id)
            .join(Cohort, Cohort.id == CohortMember.cohort_id)
            .where(Cohort.stage != "pending")
        )
        return set(session.scalars(query))


def assert_agree(run: Cli, runtime: Runtime, map_path: Path) -> None:
    """Map (source and index) = database; status has no MAP line; lookup and undo say what the map does."""
    db = switched_off(runtime)
    assert rejected(map_path) == db if Path(str(map_path) + ".db").exists() else not db
    with runtime.sessions() as session:
        recorded = session.scalars(select(MapVersion.checksum).where(MapVersion.active)).first()
    in_force = hashlib.sha256(map_path.read_bytes()).hexdigest() if map_path.exists() else None
    assert recorded == in_force or (recorded is None and not db)
    assert "MAP:" not in run("status").output
    assert not files.journal_path(map_path).exists()
    lookup = run("lookup", "anna@example.de").output
    assert ("not yet switched off" in lookup) == ("anna@example.de" not in db) or "switched off" in lookup


def modes(map_path: Path) -> set[int]:
    found = {os.stat(map_path.parent).st_mode & 0o777}
    for p in [map_path, Path(str(map_path) + ".db")]:
        if p.exists():
            found.add(os.stat(p).st_mode & 0o777)
    return found


def _named(prefix: str) -> Callable[..., bool]:
    return lambda path, *rest: Path(path).name.startswith(prefix)


MAP = ".smtp-after-pop-disabled"
POINTS: dict[str, Callable[[Path], Fault]] = {
    "intent": lambda m: Fault(os, "open", _named(f".{MAP}.intent.new-")),
    "temp map": lambda m: Fault(os, "open", _named(f"{MAP}.new-")),
    "kept copy": lambda m: Fault(shutil, "copyfile", lambda src, dst, *r: ".versions" in str(dst)),
    "index rename": lambda m: Fault(os, "replace", lambda src, dst, *r: str(dst).endswith(".db")),
    "source rename": lambda m: Fault(os, "replace", lambda src, dst, *r: Path(dst) == m),
    "directory sync": lambda m: Fault(
        os, "fsync", lambda fd, *r: os.path.samefile(f"/proc/self/fd/{fd}", m.parent) and _db_is_new(m)
    ),
}


def _postmap_fails(fault: Fault, original: Callable[..., Any]) -> Callable[..., Any]:
    def run(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        if fault.hits == 0 and "-q" not in argv:
            fault.hits += 1
            return subprocess.CompletedProcess(argv, 1, "", "postmap: fatal: write /x.db: No space left on device\n")
        return original(argv, *args, **kwargs)

    return run


def _db_is_new(map_path: Path) -> bool:
    """The index was just replaced (the sync after the renames, not the one after the intent)."""
    index = Path(str(map_path) + ".db")
    return (
        index.exists()
        and not map_path.read_text().count("carl@")
        and index.stat().st_mtime_ns > map_path.stat().st_mtime_ns
    )


@pytest.mark.parametrize("point", [*POINTS, "postmap"])
def test_a_full_disk_at_each_point_of_a_step(
    run: Cli, runtime: Runtime, planned: Path, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step exits 1 with one Error line; map, database, status, lookup and undo agree; the next step works."""
    run("step", "--yes")
    assert_agree(run, runtime, planned)
    with monkeypatch.context() as mp:
        fault = (
            POINTS[point](planned)
            if point != "postmap"
            else Fault(subprocess, "run", lambda argv, *r: "-q" not in argv)
        )
        fault.install(mp)
        if point == "postmap":  # postmap itself finds the disk full: it says so and exits 1
            mp.setattr(subprocess, "run", _postmap_fails(fault, subprocess.run))
        result = run("step", "--yes", "--force", "--reason", "test", expect=1)
    assert fault.hits == 1
    assert result.output.count("Error:") == 1 and "Traceback" not in result.output
    assert switched_off(runtime) == {"anna@example.de", "bert@example.de"}
    assert_agree(run, runtime, planned)
    run("step", "--yes", "--force", "--reason", "test")
    assert_agree(run, runtime, planned)
    assert switched_off(runtime) == set(f"{n}@example.de" for n in LOCALS)
    assert modes(planned) <= {0o644, 0o755}


@pytest.fixture
def failing_commit(runtime: Runtime) -> Iterator[list[int]]:
    """The next COMMITs fail, as SQLite's does on a full disk: one for each item put in the list."""
    armed: list[int] = []

    def commit(conn: Any) -> None:
        if armed:
            armed.pop()
            raise OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full"))

    event.listen(runtime.engine, "commit", commit)
    yield armed
    event.remove(runtime.engine, "commit", commit)


def test_a_failed_commit_puts_the_map_back(
    run: Cli, runtime: Runtime, planned: Path, failing_commit: list[int]
) -> None:
    """The map was published, the commit failed: the map is put back at once and the Error says so."""
    run("step", "--yes")
    failing_commit.append(1)
    out = run("step", "--yes", "--force", "--reason", "test", expect=1).output
    assert "database or disk is full" in out and "put back" in out and out.count("Error:") == 1
    assert_agree(run, runtime, planned)


def test_map_ahead_of_the_database_is_reported_then_repaired(
    run: Cli, runtime: Runtime, planned: Path, failing_commit: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commit and the put-back both fail (the disk stays full): status says so; the next command repairs it."""
    with monkeypatch.context() as mp:
        calls = [0]
        original = postfix.replace

        def replace_then_full(src: Path, dst: Path) -> None:
            calls[0] += 1
            if calls[0] > 2:  # the step's own swap works; the put-back finds the disk full
                raise postfix.EnforcementError("cannot move: No space left on device", unchanged=False)
            original(src, dst)

        mp.setattr(postfix, "replace", replace_then_full)
        failing_commit.append(1)
        out = run("step", "--yes", expect=1).output
    assert "AHEAD of the database" in out and out.count("Error:") == 1
    assert rejected(planned) == {"anna@example.de", "bert@example.de"} and switched_off(runtime) == set()
    status = run("status").output
    assert "MAP: map ahead of the database" in status
    assert "nothing to undo" in run("undo", expect=1).output  # ...after putting the map back first
    assert_agree(run, runtime, planned)
    with runtime.sessions() as session:
        actions = list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions.count("map.repair") == 1 and "step" not in actions


def test_umask_000_gives_0644_files_and_0755_directories(run: Cli, runtime: Runtime, planned: Path) -> None:
    """The map, its index, its directory, the kept versions and the lock follow fixed modes, not the umask."""
    old = os.umask(0)
    try:
        run("step", "--yes")
        run("step", "--yes", "--force", "--reason", "twice, for a kept version")
    finally:
        os.umask(old)
    versions = Path(str(planned) + ".versions")
    found = {p: os.stat(p).st_mode & 0o777 for p in [planned.parent, *planned.parent.rglob("*")]}
    assert versions in found and any(p.parent == versions for p in found)
    assert {p: m for p, m in found.items() if m != (0o755 if p.is_dir() else 0o644)} == {}


def test_a_sender_that_cannot_be_written_is_left_out(run: Cli, runtime: Runtime, planned: Path) -> None:
    """``#x@example.org`` (a comment line), ``@example.org`` (a whole domain), a space: left out; the rest works."""
    add_legacy(
        runtime,
        "anna@example.de",
        T0.date(),
        senders=["anna@example.de", "#x@example.org", "@example.org", "a b@example.org", "ok@example.org"],
    )
    run("step", "--yes")
    text = planned.read_text()
    assert "ok@example.org\t" in text and "#x@" not in text and "\n@example.org" not in text and "a b@" not in text
    run("step", "--yes", "--force", "--reason", "a later step still verifies")
    assert_agree(run, runtime, planned)


def _concurrently(
    cli_env: dict[str, str], planned: Path, tmp_path: Path, *commands: list[str]
) -> list[subprocess.CompletedProcess[str]]:
    """Start the commands at the same moment, each with a postmap that takes a second."""
    slow = tmp_path / "slow-postmap"
    slow.write_text('#!/bin/sh\ncase "$1" in -q) ;; *) sleep 1;; esac\nexec postmap "$@"\n')
    slow.chmod(0o755)
    env = {
        **cli_env,
        "ROLLOUT_NOW": T0.isoformat(),
        "ROLLOUT_ENFORCEMENT_MAP_PATH": str(planned),
        "ROLLOUT_ENFORCEMENT_POSTMAP_COMMAND": str(slow),
        "ROLLOUT_ENFORCEMENT_SOAK_HOURS": "0",
        "ROLLOUT_ROLLOUT_WINDOW": "00:00-23:59",
        "ROLLOUT_ROLLOUT_SKIP_WEEKENDS": "false",
        "ROLLOUT_ROLLOUT_TIMEZONE": "UTC",
        **{"ROLLOUT_" + key.replace(".", "_").upper(): value for key, value in GATES_OFF.items()},
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "rollout", *c], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c in commands
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=120), *p.communicate()) for p in procs]


def test_two_steps_at_once_take_turns(
    run: Cli, runtime: Runtime, planned: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Two `step` at once: one after the other, one audit event per cohort moved, the map agrees."""
    done = _concurrently(cli_env, planned, tmp_path, ["step", "--yes"], ["step", "--yes"])
    for d in done:
        assert d.returncode in (0, 1) and "Traceback" not in d.stderr, d.stderr
        assert d.returncode == 0 or d.stderr.count("Error:") == 1
    with runtime.sessions() as session:
        steps = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "step")))
        moved = list(session.scalars(select(Cohort).where(Cohort.stage != "pending")))
    assert len(steps) == len(moved) == sum(d.returncode == 0 for d in done)
    assert sorted(e.details["cohort"] for e in steps) == sorted(c.label for c in moved)
    assert_agree(run, runtime, planned)


def test_step_and_exempt_at_once(
    run: Cli, runtime: Runtime, planned: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A step and an exemption at once: neither removes the other's temp file; both land; the map agrees."""
    until = (T0 + timedelta(days=30)).strftime("%Y-%m-%d")
    done = _concurrently(
        cli_env,
        planned,
        tmp_path,
        ["step", "--yes"],
        ["exempt", "carl@example.de", "--until", until, "--reason", "travel"],
    )
    assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
    assert "carl@example.de" not in planned.read_text()
    assert_agree(run, runtime, planned)


def test_a_step_blocked_by_another_writer_is_one_error_line(
    runtime: Runtime, planned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: while another process holds the write lock past the busy timeout, `step` exits 1 with a clear message."""
    if not runtime.settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock; PostgreSQL's advisory lock waits (test_two_steps_at_once_take_turns)")
    from rollout import db

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    blocked = Runtime(settings=runtime.settings, clock=runtime.clock, actor="second")
    holder = sqlite3.connect(runtime.settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        result = Cli(blocked)("step", "--yes", expect=1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        blocked.close()
    assert result.output.count("Error:") == 1 and "another command is changing the rollout" in result.output
    assert switched_off(runtime) == set() and not files.journal_path(planned).exists()
