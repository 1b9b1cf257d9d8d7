"""`rollout scan` and `rollout legacy`: find the mailboxes still sending via SMTP-after-POP."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ..runtime import Runtime
from ._base import echo_json, echo_table, json_option, pass_runtime, progress_reporter


@click.command("scan")
@click.argument("logfiles", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", metavar="NAME", help="Host name for lines without one (Dovecot log_path, Exim mainlog).")
@json_option
@pass_runtime()
def scan_command(runtime: Runtime, logfiles: tuple[Path, ...], host: str | None, as_json: bool) -> None:
    """Read mail logs incrementally and record which mailboxes use SMTP-after-POP.

    Files may be plain, gzip, bzip2, xz or zstd. Each run continues where the last one
    stopped (rotation and copytruncate are detected); scanning the same files
    again adds nothing.

    One scan runs at a time per database: a second one waits up to
    scan.lock_wait_seconds (default 300) for the first to finish, then exits 1
    having recorded nothing. On SQLite the lock is the file <database>.scan.lock
    beside the database, so the user running the scan must be able to write it.

    \b
    Example:
      rollout scan /var/log/mail.log /var/log/dovecot.log
      rollout scan --host mx1 /srv/logs/mx1/dovecot.log.1.gz --json
    """
    from ..scan.scan_workflow import scan_logs  # here, not at the top: `rollout scan --help` needs no SQLAlchemy

    total = sum(os.path.getsize(p) for p in logfiles)
    with progress_reporter("scanning", total) as progress:
        summary = scan_logs(runtime, list(logfiles), host=host, progress=progress)
    if as_json:
        echo_json(summary)
        return
    echo_table(
        [
            (f.path, f.lines, f.unparsed, f.kinds.get("login", 0), f.kinds.get("accept", 0), f.kinds.get("refusal", 0))
            for f in summary.files
        ],
        ("file", "lines", "unparsed", "logins", "accepted", "refusals"),
        "lrrrrr",
    )
    for f in summary.files:
        if f.warning:
            click.echo(f"warning: {f.warning}", err=True)
        if f.restarted:
            click.echo(f"note: {f.path} was rotated or truncated since the last scan; read from its start")
    click.echo(
        f"{summary.legacy_submissions} legacy submissions by {summary.mailboxes} mailboxes; "
        f"{summary.authenticated} authenticated; "
        f"{summary.ambiguous} ambiguous and {summary.unexplained} unexplained (see --review); "
        f"{summary.near_misses} near misses; {summary.refused} refused by our map; "
        f"{summary.unknown_logins} unknown login users"
    )
    if summary.notices:
        click.echo("our notices: " + ", ".join(f"{n} {state}" for state, n in sorted(summary.notices.items())))
    click.echo(f"{summary.lines} lines in {summary.elapsed_seconds:.2f} s ({summary.lines_per_second} lines/s)")


def _resolution(e: Any) -> str:
    if e.resolution is None:
        return "open" if e.kind == "ambiguous" else ""
    return f"{e.resolution}{' to ' + e.mailbox if e.mailbox else ''} by {e.resolved_by}"


@click.command("legacy")
@json_option
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), help="Only use on or after this day (UTC).")
@click.option("--customer", metavar="ID", help="Only this customer's mailboxes (customer_id from the inventory).")
@click.option(
    "--review",
    is_flag=True,
    help="List ambiguous sightings (with their ids, for attribute and dismiss) and unexplained relays instead.",
)
@pass_runtime()
def legacy_command(runtime: Runtime, as_json: bool, since: datetime | None, customer: str | None, review: bool) -> None:
    """List the mailboxes still using SMTP-after-POP, with their evidence.

    `switched` means an authenticated submission was seen after the last legacy use.

    \b
    Example:
      rollout legacy --since 2026-03-01
      rollout legacy --review --json
    """
    from ..scan.scan_workflow import legacy_report, review_report

    day = since.date() if since else None
    if review:
        entries = review_report(runtime, since=day)
        if as_json:
            echo_json(entries)
            return
        echo_table(
            [
                (
                    e.id,
                    e.kind,
                    e.at.strftime("%Y-%m-%d %H:%M:%S"),
                    e.host,
                    e.queue_id,
                    e.client_ip,
                    e.sender,
                    ", ".join(e.candidates),
                    _resolution(e),
                )
                for e in entries
            ],
            ("id", "kind", "at (UTC)", "host", "queue id", "client ip", "sender", "candidates", "resolved"),
        )
        return
    rows = legacy_report(runtime, since=day, customer=customer)
    if as_json:
        echo_json(rows)
        return
    echo_table(
        [
            (
                r.address,
                r.customer,
                r.last_seen.strftime("%Y-%m-%d %H:%M") if r.last_seen else "",
                r.submissions,
                r.days,
                ", ".join(r.client_ips[:3]),
                ", ".join(r.senders[:3]),
                r.confidence,
                "yes" if r.switched else "",
            )
            for r in rows
        ],
        (
            "mailbox",
            "customer",
            "last seen (UTC)",
            "submissions",
            "days",
            "client ips",
            "senders",
            "confidence",
            "switched",
        ),
        "lllrrllll",
    )
