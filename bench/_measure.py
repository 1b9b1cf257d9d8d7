"""Shared by the benchmarks: run a child process with its wall time and peak RSS (from wait4, or
of its whole process tree), and make a throw-away PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    processes: int = 1  # how many processes the tree had (tree=True)
    peaks_sum_mb: float = 0.0  # tree=True: each process's own peak, added up (an upper bound)


def measure(argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None, tree: bool = False) -> Run:
    """Run ``argv``; with ``tree``, peak RSS is that of the whole process tree (see ``TreeSampler``)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err)
        sampler = TreeSampler(proc.pid) if tree else None
        _, status, usage = os.wait4(proc.pid, 0)  # reap it ourselves to get its own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        run = Run(seconds, usage.ru_maxrss / 1024, proc.returncode, out.read(), err.read())
        if sampler is not None:
            sampler.stop()
            # wait4's figure is the top process's own peak; it counts too (the sampler may miss its last moments)
            run.peak_rss_mb = max(sampler.peak_sum_mb, sampler.own_peak_mb(proc.pid))
            run.processes, run.peaks_sum_mb = len(sampler.peaks), sum(sampler.peaks.values())
        return run


class TreeSampler:
    """Every 10 ms, the RSS of a process and all its descendants (from /proc), added up; the maximum.

    Worker processes count with everything they hold, shared pages included: the
    figure is what the run occupies at its worst moment. ``peaks`` keeps each
    process's own high-water mark (VmHWM, reset by exec, so a child's fork of the
    parent does not count): their sum bounds the true peak from above.
    """

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid, self.interval = pid, interval
        self.peak_sum_mb = 0.0
        self.peaks: dict[int, float] = {}
        self._parents: dict[int, int] = {}  # pid → parent pid, read once per pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def own_peak_mb(self, pid: int) -> float:
        return self.peaks.get(pid, 0.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0.0
            for pid in self._tree():
                status = _status(pid)
                if status:
                    total += status.get("VmRSS", 0.0)
                    self.peaks[pid] = max(self.peaks.get(pid, 0.0), status.get("VmHWM", 0.0))
            self.peak_sum_mb = max(self.peak_sum_mb, total)
            self._stop.wait(self.interval)

    def _tree(self) -> list[int]:
        """The process and its descendants. A pid's parent is read once, when the pid first
        appears (reading every process's stat file every 10 ms cost the sampler a quarter of a
        core, taken from the run it measures); pids that are gone are forgotten, so a reused
        one is read afresh."""
        pids = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        for gone in self._parents.keys() - pids:
            del self._parents[gone]
        for pid in pids - self._parents.keys():
            self._parents[pid] = _parent(pid)
        children: dict[int, list[int]] = {}
        for pid, ppid in self._parents.items():
            children.setdefault(ppid, []).append(pid)
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        return found


def _parent(pid: int) -> int:
    """The parent pid from /proc/PID/stat; -1 if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process in MB; empty if it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {
        k: int(v.split()[0]) / 1024 for k, _, v in (line.partition(":") for line in lines) if k in ("VmRSS", "VmHWM")
    }


def check(run: Run) -> Run:
    if run.returncode != 0:
        raise SystemExit(f"command failed ({run.returncode}):\n{run.stderr}")
    return run


def postgres_database(server_url: str) -> tuple[str, Callable[[], None]]:
    """Create a database on the server; return its URL and a function that drops it."""
    server = make_url(server_url).set(drivername="postgresql+psycopg")
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"rollout_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return server.set(database=name).render_as_string(hide_password=False), drop


def statistics_as_in_production(engine: Engine) -> None:
    """PostgreSQL: ANALYZE, as autovacuum does after a bulk load. SQLite: nothing, as in production (rollout never
    runs ANALYZE there), so that its planner is measured without statistics."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
