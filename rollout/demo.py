"""`rollout demo`: the whole rollout on a generated provider, on a simulated clock, in about a minute.

Everything lives in one directory: the SQLite database, the generated inventory
and weekly mail logs, every notice as an .eml file (delivered over SMTP to a
server running inside this process), and the Postfix map. The clock starts on a
Monday; the scheduler's own job loop (`rollout.scheduler.run_until`) fast-forwards
it through six weekly notice waves and the steps, so the demo exercises the same
jobs the daemon runs. Between waves a quarter of the mailboxes still on the
legacy path switch to SMTP AUTH, which the next scan sees.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from . import db
from .clock import ManualClock
from .config import (
    EnforcementSettings,
    GateSettings,
    NoticeSettings,
    RolloutSettings,
    ScanSettings,
    SchedulerSettings,
    Settings,
    SmtpSettings,
)
from .errors import RolloutError
from .models import JobRun, Mailbox
from .notify.campaign_workflow import start_campaign
from .plan.plan_workflow import PlanRequest, make_plan, step
from .runtime import Runtime
from .scan.inventory_workflow import import_inventory
from .scheduler import run_until
from .support.status import Status, build_status
from .synthetic.maillog import write_maillog
from .synthetic.provider import write_inventory_csv

MARKER = ".rollout-demo"
START = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # a Monday, 08:00 in Berlin
WEEKS = 6
COHORTS = 6
LEGACY_SHARE = 0.08
SASL_SHARE = 0.3  # mailboxes already sending with SMTP AUTH
SWITCH_PER_WEEK = 0.25  # of those still on the legacy path, after each wave
LINES_PER_LEGACY_MAILBOX = 900  # log lines it takes for one legacy mailbox to show up once
MIN_LINES = 30_000
LAST_DAY = START + timedelta(weeks=WEEKS + 2)

Report = Callable[[str], None]


@dataclass
class DemoResult:
    directory: Path
    database_url: str
    mailboxes: int
    customers: int
    legacy_at_start: int
    switched: int
    log_lines: int
    notices_sent: int
    eml_files: int
    map_path: Path
    backend_note: str | None
    status: Status
    sample_address: str | None
    job_runs: dict[str, int] = field(default_factory=dict)


def run_demo(
    directory: Path,
    report: Report,
    mailboxes: int = 5000,
    customers: int = 2000,
    seed: int = 1,
    smtp_host: str = "127.0.0.1",
) -> DemoResult:
    directory = prepare_directory(directory)
    with Inbox(directory / "outbox", smtp_host) as inbox:
        settings, note = demo_settings(directory, inbox.host, inbox.port)
        clock = ManualClock(START)
        runtime = Runtime(settings=settings, clock=clock, actor="demo")
        try:
            return Story(runtime, clock, directory, report, random.Random(seed)).tell(mailboxes, customers, seed, note)
        finally:
            runtime.close()


def prepare_directory(directory: Path) -> Path:
    """An empty directory, or one a previous demo made (then it is cleared)."""
    directory = directory.expanduser().resolve()
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise RolloutError(
                f"{directory} is not empty and was not made by `rollout demo`: give a new or empty directory"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by `rollout demo`; running it again clears this directory\n")
    return directory


def demo_settings(directory: Path, smtp_host: str, smtp_port: int) -> tuple[Settings, str | None]:
    """Settings for the demo only (no rollout.toml, no environment): everything inside ``directory``."""
    postmap = shutil.which("postmap") or shutil.which("/usr/sbin/postmap")
    note = (
        None
        if postmap
        else "postmap is not installed: the demo writes the plain-list map instead of a Postfix hash map"
    )
    (directory / "postfix").mkdir()
    enforcement = EnforcementSettings(
        backend="postfix-sender-map" if postmap else "plain-list",
        map_path=str(directory / "postfix" / "smtp-after-pop-disabled"),
        postmap_command=postmap or "postmap",
        list_path=str(directory / "postfix" / "smtp-after-pop-disabled.txt"),
        soak_hours=1.0,
        legacy_map=legacy_map(directory / "postfix", postmap),
    )
    settings = Settings(
        database_url=f"sqlite:///{directory / 'rollout.db'}",
        scan=ScanSettings(log_files=(str(directory / "logs" / "*.log"),), interval_minutes=24 * 60),
        smtp=SmtpSettings(host=smtp_host, port=smtp_port, timeout_seconds=10.0),
        notices=NoticeSettings(from_address="Example Mail Support <support@example.net>", grace_hours=48),
        enforcement=enforcement,
        rollout=RolloutSettings(window="08:00-17:00", timezone="Europe/Berlin", skip_weekends=True),
        scheduler=SchedulerSettings(lock_file=str(directory / "scheduler.lock"), expire_minutes=24 * 60),
        gates=GateSettings(max_scan_age_minutes=25 * 60),  # the demo's log host hands over a day's log each morning
        source="rollout demo",
    )
    return settings, note


def legacy_map(directory: Path, postmap: str | None) -> str | None:
    """The provider's POP-before-SMTP client map as its daemon left it: what the final step retires."""
    if postmap is None:
        return None
    path = directory / "pop-before-smtp"
    path.write_text("".join(f"198.51.100.{n} OK\n" for n in range(1, 41)))
    subprocess.run([postmap, f"hash:{path}"], check=True, capture_output=True, timeout=60)
    return f"hash:{path}"


class Story:
    def __init__(
        self, runtime: Runtime, clock: ManualClock, directory: Path, report: Report, rng: random.Random
    ) -> None:
        self.runtime, self.clock, self.directory, self.report, self.rng = runtime, clock, directory, report, rng
        self.logs = directory / "logs"
        self.logs.mkdir()
        self.log_lines = 0
        self.week = 0

    def tell(self, mailboxes: int, customers: int, seed: int, note: str | None) -> DemoResult:
        db.upgrade(self.runtime.engine)
        self.report(f"demo directory {self.directory} (clock starts {START:%a %Y-%m-%d %H:%M} UTC)")
        if note:
            self.report(note)
        csv_path = self.directory / "inventory.csv"
        write_inventory_csv(csv_path, mailboxes, customers, seed)
        summary = import_inventory(self.runtime, csv_path)
        self.report(
            f"inventory: {summary.mailboxes_added} mailboxes of {summary.customers_added} customers "
            f"imported from {csv_path.name}"
        )
        boxes = self.mailboxes()
        addresses = [address for address, _ in boxes]
        self.legacy = set(self.rng.sample(addresses, round(len(addresses) * LEGACY_SHARE)))
        others = [a for a in addresses if a not in self.legacy]
        self.sasl = set(self.rng.sample(others, round(len(addresses) * SASL_SHARE)))
        legacy_at_start, switched = len(self.legacy), 0
        self.write_week_log(boxes)  # the week before the demo starts: what the first scan finds
        self.plan_and_campaign()
        self.runtime_jobs: dict[str, int] = {}
        while self.clock.now() < LAST_DAY and not self.switched_off():
            self.week += 1
            run_until(self.runtime, self.clock, START + timedelta(weeks=self.week), on_run=self.on_run)
            switched += self.switch_some()  # after this week's notice some customers act on it...
            self.write_week_log(boxes)  # ...which the log of the week, scanned next morning, shows
        self.final_step()
        return self.result(mailboxes, customers, legacy_at_start, switched, note)

    def mailboxes(self) -> list[tuple[str, str | None]]:
        with self.runtime.sessions() as session:
            return [
                (a, login) for a, login in session.execute(select(Mailbox.address, Mailbox.login).order_by(Mailbox.id))
            ]

    def write_week_log(self, boxes: list[tuple[str, str | None]]) -> None:
        """The mail log of the week that just ended, as a log host would rotate it."""
        end = self.clock.now()
        path = self.logs / f"{end:%Y-%m-%d}.log"
        # Each legacy mailbox sends in every other week's log: still inside the notices'
        # 14-day lookback, and half the log to generate and scan.
        legacy = sorted(self.legacy)[self.week % 2 :: 2]
        lines = max(MIN_LINES, LINES_PER_LEGACY_MAILBOX * len(legacy))
        truth = write_maillog(
            path,
            boxes,
            legacy=legacy,
            sasl=sorted(self.sasl),
            start=end - timedelta(days=7),
            span=timedelta(days=7) - timedelta(minutes=30),
            lines=lines,
            seed=self.week,
        )
        self.log_lines += truth.lines

    def plan_and_campaign(self) -> None:
        first_step = START + timedelta(weeks=WEEKS, hours=2)  # the Monday after the last wave, 10:00 Berlin
        request = PlanRequest(start=first_step, every=timedelta(hours=2), cohorts=COHORTS, tz="Europe/Berlin")
        plan = make_plan(self.runtime, request, apply=True)
        cohorts = plan.proposal.cohorts
        self.report(
            f"plan: {len(cohorts)} cohorts ({', '.join(c.label for c in cohorts)}), "
            f"largest {max(c.share for c in cohorts) * 100:.1f}% of mailboxes, "
            f"first {cohorts[0].scheduled_at:%a %Y-%m-%d %H:%M} UTC"
        )
        campaign = start_campaign(
            self.runtime, START.date(), weeks=WEEKS, weekday="mon", at="10:00", tz="Europe/Berlin"
        )
        self.report(
            f"campaign: {campaign.weeks} weekly waves, Mondays 10:00 Europe/Berlin from {campaign.first_at:%Y-%m-%d}"
        )

    def switch_some(self) -> int:
        """Customers read the notice: some turn on SMTP AUTH in their mail client."""
        switching = set(self.rng.sample(sorted(self.legacy), round(len(self.legacy) * SWITCH_PER_WEEK)))
        self.legacy -= switching
        self.sasl |= switching
        return len(switching)

    def on_run(self, run: JobRun) -> None:
        self.runtime_jobs[run.job] = self.runtime_jobs.get(run.job, 0) + 1
        at = f"{run.started_at:%a %Y-%m-%d %H:%M}"
        result = run.details.get("result") or {}
        if run.outcome != "ok":
            self.report(
                f"{at}  {run.details['id']}: {run.outcome}: {run.details.get('reason') or run.details.get('error')}"
            )
        elif run.job == "notify":
            self.report(
                f"{at}  notice wave {result.get('wave')}: {result.get('sent')} sent, {result.get('failed')} failed"
            )
        elif run.job == "step":
            step = result.get("step", {})
            self.report(
                f"{at}  step: cohort {step.get('position')} ({step.get('label')}) → {step.get('to_stage')}, "
                f"{step.get('still_legacy')} of its mailboxes still on the legacy path"
            )
        elif run.job == "scan" and result.get("lines"):
            self.report(
                f"{at}  scan: {result.get('lines'):,} new log lines, "
                f"{result.get('mailboxes')} mailboxes with legacy use"
            )

    def switched_off(self) -> bool:
        """Every cohort at its last stage: what is left is the final step, which ops take."""
        with self.runtime.sessions() as session:
            status = build_status(session, self.runtime.settings, self.clock.now())
        final = self.runtime.settings.enforcement.ladder[-1]
        return bool(status.cohorts) and all(c.stage == final for c in status.cohorts)

    def final_step(self) -> None:
        """As ops would, once the pop-before-smtp daemon is stopped: `rollout step` retires the legacy map."""
        at = f"{self.clock.now():%a %Y-%m-%d %H:%M}"
        if not self.runtime.settings.enforcement.legacy_map:
            self.report(f"{at}  final step not taken: it needs Postfix's postmap to empty the POP-before-SMTP map")
            return
        try:
            result = step(self.runtime, yes=True, reason="demo: every cohort has settled")
        except RolloutError as exc:
            self.report(f"{at}  final step refused: {exc}")
            return
        self.report(f"{at}  final step: the legacy path is retired ({result.retired} is empty now)")

    def result(
        self, mailboxes: int, customers: int, legacy_at_start: int, switched: int, note: str | None
    ) -> DemoResult:
        with self.runtime.sessions() as session:
            status = build_status(session, self.runtime.settings, self.clock.now())
        enforcement = self.runtime.settings.enforcement
        map_path = Path(enforcement.map_path if enforcement.backend == "postfix-sender-map" else enforcement.list_path)
        return DemoResult(
            directory=self.directory,
            database_url=self.runtime.settings.database_url,
            mailboxes=mailboxes,
            customers=customers,
            legacy_at_start=legacy_at_start,
            switched=switched,
            log_lines=self.log_lines,
            notices_sent=sum(w.sent for w in status.waves),
            eml_files=len(list((self.directory / "outbox").glob("*.eml"))),
            map_path=map_path,
            backend_note=note,
            status=status,
            sample_address=sorted(self.legacy)[0] if self.legacy else None,
            job_runs=self.runtime_jobs,
        )


class Inbox:
    """An SMTP server inside this process that keeps every message as an .eml file."""

    def __init__(self, outbox: Path, host: str) -> None:
        try:
            from aiosmtpd.controller import Controller
        except ImportError:
            raise RolloutError(
                "rollout demo needs aiosmtpd for its SMTP server: pip install aiosmtpd (or pip install -e '.[test]')"
            ) from None
        outbox.mkdir(parents=True, exist_ok=True)
        self.outbox, self.host, self.port = outbox, host, free_port(host)
        self.controller = Controller(self, hostname=host, port=self.port, ready_timeout=10)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        match = re.search(rb"^Message-ID:\s*<([^>]+)>", envelope.content, flags=re.M | re.I)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", match.group(1).decode() if match else f"message-{id(envelope)}")
        await asyncio.to_thread((self.outbox / f"{name}.eml").write_bytes, envelope.content)
        return "250 2.0.0 Ok: kept as .eml"

    def __enter__(self) -> Inbox:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
