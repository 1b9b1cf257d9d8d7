"""Benchmark `rollout notify`: 100,000 customers with 1-5 affected mailboxes each, sent to smtp-sink.

    python bench/notify.py [--customers 100000]

Builds a SQLite database (inventory, one confident legacy day per mailbox, a
campaign whose wave 1 is due), then times `rollout notify` as a child process
(audience and ledger rows, the preflight that renders every notice into the
workers' spool, then sending each one with its ledger transactions) against
Postfix's `smtp-sink` on 127.0.0.34: once with one SMTP connection and once
with the default concurrency. Peak memory is that of the whole process tree
(`rollout notify` and its worker processes, sampled every 10 ms and added up),
with each process's own peak added up as an upper bound. In the same run, to
the same sink, Postfix's `smtp-source` sends the same number of messages of a
similar size with the same number of sessions: the wire's limit. Target: at
least 1,500 messages/s with the default settings, peak memory under 300 MB.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from rollout import db  # noqa: E402
from rollout.clock import ManualClock  # noqa: E402
from rollout.config import SmtpSettings, load_settings  # noqa: E402
from rollout.models import LegacyDay, Mailbox  # noqa: E402
from rollout.notify.campaign_workflow import start_campaign  # noqa: E402
from rollout.runtime import Runtime  # noqa: E402
from rollout.scan.inventory_workflow import import_inventory  # noqa: E402

HOST = "127.0.0.34"
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
ROLLOUT = [sys.executable, "-m", "rollout"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rollout-bench-notify-"))
    sink = None
    try:
        template = work / "template.db"
        start = time.perf_counter()
        mailboxes = build_database(template, work, args.customers)
        took = time.perf_counter() - start
        print(f"database: {args.customers:,} customers, {mailboxes:,} affected mailboxes in {took:.1f} s")
        port = free_port()
        sink = subprocess.Popen(
            ["smtp-sink", *(["-u", "nobody"] if os.geteuid() == 0 else []), "-c", f"{HOST}:{port}", "1000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(port)
        default = SmtpSettings().concurrency
        rows = []
        for connections in (1, default):
            run = notify(template, work / f"run{connections}.db", port, connections)
            size = sample_size(work / f"run{connections}.db")
            source = smtp_source(port, connections, args.customers, size)
            rows.append((connections, run, source, size))
        print()
        print(
            f"| notify, {args.customers:,} customers (SQLite) | connections | processes | wall time | messages/s "
            "| peak RSS, tree (bound) | smtp-source, same sessions and size | ratio |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for connections, run, source, size in rows:
            rate = args.customers / run.seconds
            print(
                f"| render + send, ~{size / 1000:.1f} kB each | {connections} | {run.processes} "
                f"| {run.seconds:.1f} s | {rate:,.0f} | {run.peak_rss_mb:.0f} MB ({run.peaks_sum_mb:.0f} MB) "
                f"| {source:,.0f} msg/s | {rate / source:.2f} |"
            )
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def build_database(path: Path, work: Path, customers: int) -> int:
    """Inventory through the real import, then one high-confidence legacy day per mailbox."""
    rng = random.Random(5)
    csv = work / "inventory.csv"
    with open(csv, "w", encoding="utf-8") as fh:
        fh.write("mailbox,customer_id,customer_email,customer_name,locale\n")
        for c in range(customers):
            locale = "de" if c % 3 else "en"
            for m in range(rng.randint(1, 5)):
                contact = f"kontakt{c}@customer{c % 89}.example"
                fh.write(f"box{m}.kunde{c}@example{c % 97}.de,K{c},{contact},Kunde {c} GmbH,{locale}\n")
    runtime = Runtime(
        load_settings(environ={}, overrides={"database_url": f"sqlite:///{path}"}),
        clock=ManualClock(NOW),
        actor="bench",
    )
    db.upgrade(runtime.engine)
    import_inventory(runtime, csv)
    with runtime.sessions() as session, session.begin():
        ids = session.scalars(select(Mailbox.id)).all()
        seen = NOW - timedelta(days=2)
        for i in range(0, len(ids), 20_000):
            session.execute(
                insert(LegacyDay),
                [
                    dict(
                        mailbox_id=m,
                        day=seen.date(),
                        legacy_count=3,
                        high_count=1,
                        first_seen=seen,
                        last_seen=seen + timedelta(minutes=m % 600),
                        last_ip=f"198.51.{m % 256}.{m % 250 + 1}",
                        client_ips=[],
                        senders=[],
                        confidence="high",
                    )
                    for m in ids[i : i + 20_000]
                ],
            )
    start_campaign(runtime, date(2026, 3, 2), at="10:00")
    runtime.close()
    return len(ids)


def notify(template: Path, target: Path, port: int, connections: int):
    shutil.copyfile(template, target)
    env = {
        **os.environ,
        "ROLLOUT_DATABASE_URL": f"sqlite:///{target}",
        "ROLLOUT_NOW": NOW.isoformat(),
        "ROLLOUT_SMTP_HOST": HOST,
        "ROLLOUT_SMTP_PORT": str(port),
        "ROLLOUT_SMTP_CONCURRENCY": str(connections),
    }
    run = measure(ROLLOUT + ["-v", "notify", "--json"], env=env, tree=True)
    if run.returncode != 0:
        raise SystemExit(f"rollout notify failed ({run.returncode}):\n{run.stderr[-3000:]}")
    phases = "; ".join(line.split("notify: ", 1)[1] for line in run.stderr.splitlines() if "notify: " in line)
    print(
        f"notify with {connections} connection(s): {run.seconds:.1f} s ({phases}), peak {run.peak_rss_mb:.0f} MB "
        f"over {run.processes} processes (their own peaks add up to {run.peaks_sum_mb:.0f} MB)"
    )
    return run


def sample_size(database: Path) -> int:
    """The size of one rendered notice, from the outbox of a one-notice run on a copy."""
    copy = database.with_name("sample.db")
    shutil.copyfile(database, copy)
    from sqlalchemy import update

    from rollout.models import Notice

    runtime = Runtime(
        load_settings(environ={}, overrides={"database_url": f"sqlite:///{copy}"}),
        clock=ManualClock(NOW),
        actor="bench",
    )
    with runtime.sessions() as session, session.begin():
        first = session.scalars(select(Notice.id).order_by(Notice.id).limit(1)).one()
        session.execute(update(Notice).where(Notice.id == first).values(state="pending"))
    runtime.close()
    outbox = database.parent / "outbox"
    env = {**os.environ, "ROLLOUT_DATABASE_URL": f"sqlite:///{copy}", "ROLLOUT_NOW": NOW.isoformat()}
    subprocess.run(
        ROLLOUT + ["notify", "--outbox", str(outbox), "--limit", "1"], env=env, check=True, capture_output=True
    )
    return max(f.stat().st_size for f in outbox.glob("*.eml"))


def smtp_source(port: int, sessions: int, messages: int, size: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            "smtp-source",
            "-s",
            str(sessions),
            "-m",
            str(messages),
            "-l",
            str(size),
            "-f",
            "a@example.net",
            "-t",
            "b@example.org",
            f"{HOST}:{port}",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    rate = messages / (time.perf_counter() - start)
    print(f"smtp-source with {sessions} session(s): {rate:,.0f} msg/s")
    return rate


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"smtp-sink did not start on {HOST}:{port}")


if __name__ == "__main__":
    main()
