"""A small rollout ready for the scheduler: inventory, legacy use, a campaign, a plan, a mail server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from sqlalchemy import select

from rollout.config import load_settings
from rollout.models import JobRun, Mailbox
from rollout.notify.campaign_workflow import start_campaign
from rollout.plan.plan_workflow import PlanRequest, make_plan
from rollout.runtime import Runtime
from rollout.synthetic.maillog import write_maillog

from .campaign_support import SmtpServer, add_customers, add_legacy
from .conftest import T0

# Every gate threshold off: these tests are about timing (tests/test_gates.py turns them on).
GATES_OFF = {
    f"gates.{name}": "off"
    for name in ("max_scan_age_minutes", "max_refusals_per_hour", "max_refused_share", "max_next_legacy_share")
}
HOST = "127.0.0.40"  # operate's loopback range: 127.0.0.40-49
LEGACY = ("anna@example.de", "max@example.de", "zoe@example.de")


def configure(runtime: Runtime, tmp_path: Path, server: SmtpServer | None = None, **overrides: object) -> None:
    settings = {
        "database_url": runtime.settings.database_url,
        "scan.interval_minutes": 720,
        "enforcement.backend": "plain-list",
        "enforcement.list_path": str(tmp_path / "disabled.txt"),
        "enforcement.soak_hours": 1.0,
        "rollout.window": "08:00-17:00",
        "rollout.timezone": "UTC",
        "rollout.skip_weekends": False,
        "scheduler.lock_file": str(tmp_path / "scheduler.lock"),
        **GATES_OFF,
        **({"smtp.host": server.host, "smtp.port": server.port, "smtp.timeout_seconds": 5.0} if server else {}),
        **overrides,
    }
    runtime.settings = load_settings(environ={}, overrides=settings)


def small_rollout(
    runtime: Runtime,
    tmp_path: Path,
    first_wave: datetime,
    weeks: int = 2,
    plan_start: datetime | None = None,
    log: Path | None = None,
) -> None:
    """Three customers with legacy use, a campaign whose wave 1 is at ``first_wave``, two cohorts.

    With ``log``, the legacy use is not recorded directly but written to that mail log
    (the two days before T0), for the scheduler's scan to find.
    """
    add_customers(
        runtime,
        tmp_path,
        [
            "anna@example.de,K1,k1@example.org,Anna,de",
            "bert@example.de,K1,k1@example.org,Anna,de",
            "max@example.de,K2,k2@example.org,Max,en",
            "nora@example.de,K2,k2@example.org,Max,en",
            "zoe@example.de,K3,k3@example.org,Zoe,en",
            "yann@example.de,K3,k3@example.org,Zoe,en",
        ],
    )
    if log is None:
        for address in LEGACY:
            add_legacy(runtime, address, T0 - timedelta(days=1))
    else:
        with runtime.sessions() as session:
            boxes = [(a, login) for a, login in session.execute(select(Mailbox.address, Mailbox.login))]
        write_maillog(
            log,
            boxes,
            legacy=LEGACY,
            sasl=["bert@example.de"],
            start=T0 - timedelta(days=2),
            span=timedelta(days=2),
            lines=12000,
            seed=3,
        )
    start_campaign(
        runtime,
        first_wave.date(),
        weeks=weeks,
        weekday=first_wave.strftime("%a").lower(),
        at=first_wave.strftime("%H:%M"),
        tz="UTC",
    )
    start = plan_start or first_wave + timedelta(weeks=weeks - 1, days=1)
    make_plan(
        runtime,
        PlanRequest(
            start=start, every=timedelta(days=1), cohorts=2, tz="UTC", window="08:00-17:00", skip_weekends=False
        ),
        apply=True,
    )


def job_runs(runtime: Runtime) -> list[JobRun]:
    with runtime.sessions() as session:
        return list(session.scalars(select(JobRun).order_by(JobRun.id)))


class Daemon:
    """`rollout scheduler` as a child process, its stderr read line by line."""

    def __init__(self, env: dict[str, str], config: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rollout", "--config", str(config), "scheduler"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from the scheduler within {timeout} s; it said:\n" + "\n".join(self.lines))

    def wait_exit(self, timeout: float = 20.0) -> int:
        """Wait for the process to end by itself (no further signal)."""
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def write_config(path: Path, runtime: Runtime, **sections: dict[str, object]) -> Path:
    """A rollout.toml with the test runtime's settings that matter to a scheduler process."""
    s = runtime.settings
    lines = [f'database_url = "{s.database_url}"']
    base = {
        "scheduler": {"lock_file": s.scheduler.lock_file, "misfire_grace_seconds": s.scheduler.misfire_grace_seconds},
        "enforcement": {"backend": s.enforcement.backend, "list_path": s.enforcement.list_path},
        "rollout": {"window": "00:00-23:59", "timezone": "UTC", "skip_weekends": False},
        "gates": {key.split(".", 1)[1]: value for key, value in GATES_OFF.items()},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    for name, values in base.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
