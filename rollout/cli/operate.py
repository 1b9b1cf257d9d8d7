"""`rollout status`, `rollout lookup`: where the rollout stands, and one customer for support."""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import click

from ..rules import PHASES
from ..runtime import Runtime
from ..support.lookup import Lookup, MailboxReport
from ..support.operate_workflow import lookup, rollout_status, wait_for_step
from ..support.status import Status
from ._base import echo_json, echo_table, json_option, pass_runtime
from .plan import echo_gates

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
BAR_WIDTH = 40
MAX_DURATION = timedelta(days=366)


class Duration(click.ParamType):  # type: ignore[type-arg]  # not subscriptable in every click >= 8.1
    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = _DURATION.match(str(value))
        if not match:
            self.fail(f"{value!r} is not a duration such as 90s, 30m, 2h or 1d", param, ctx)
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if seconds > MAX_DURATION.total_seconds():
            self.fail(f"{value!r} is longer than {MAX_DURATION.days} days", param, ctx)
        return timedelta(seconds=seconds)


def stamp(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else ""


@click.command("status")
@json_option
@click.option("--watch", is_flag=True, help="Redraw every few seconds until interrupted.")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between redraws with --watch.")
@click.option(
    "--wait-for-step",
    "wait_step",
    type=click.IntRange(min=1),
    metavar="N",
    help="Exit 0 once cohort N is switched off.",
)
@click.option(
    "--timeout", type=Duration(), default="1h", show_default=True, help="How long --wait-for-step waits before exit 1."
)
@pass_runtime()
def status_command(
    runtime: Runtime, as_json: bool, watch: bool, interval: float, wait_step: int | None, timeout: timedelta
) -> None:
    """Where the rollout stands: phase, next action, waves, cohorts, legacy trend.

    Times are UTC. With --wait-for-step N it prints nothing and exits 0 when
    cohort N has been switched off, 1 if that has not happened within --timeout
    (for scripts).

    \b
    Example:
      rollout status
      rollout status --json | jq .cohorts
      rollout status --wait-for-step 3 --timeout 2h && echo "cohort 3 is off"
    """
    if wait_step is not None:
        if not wait_for_step(runtime, wait_step, timeout):
            raise click.ClickException(f"cohort {wait_step} was not switched off within {timeout}")
        return
    while True:
        report = rollout_status(runtime)
        if as_json:
            echo_json(report)
        else:
            if watch:
                click.clear()
            print_status(report)
        if not watch:
            return
        sys.stdout.flush()
        time.sleep(interval)


def print_status(s: Status) -> None:
    click.echo(f"phase: {s.phase}   ({' → '.join(p.upper() if p == s.phase else p for p in PHASES)})")
    click.echo(
        f"as of {stamp(s.now)} UTC: {s.customers} customers, {s.mailboxes} mailboxes, "
        f"{s.legacy_mailboxes} still using SMTP-after-POP"
    )
    if s.map_note:
        click.echo(f"MAP: {s.map_note}")
    if s.legacy_note:
        click.echo(f"LEGACY MAP: {s.legacy_note}")
    if s.paused:
        click.echo(f"PAUSED by {s.paused.by} at {stamp(s.paused.at)}: {s.paused.reason}")
    if s.next_action:
        click.echo(f"next: {s.next_action.action} at {stamp(s.next_action.at)}")
    if s.retired:
        retired = s.retired
        click.echo(f"legacy path retired {stamp(retired.at)} by {retired.by}: {retired.legacy_map} ({retired.mode})")
    if s.waves:
        click.echo("\nnotice waves")
        echo_table(
            [
                (w.wave, stamp(w.due_at), w.sent, w.failed, w.uncertain, w.pending, w.delivered, w.bounced, w.delayed)
                for w in s.waves
            ],
            ("wave", "due", "sent", "failed", "uncertain", "pending", "delivered", "bounced", "delayed"),
            "rlrrrrrrr",
        )
    if s.unreachable_count:
        click.echo(f"\nunreachable customers (their latest notice bounced; support calls them): {s.unreachable_count}")
        echo_table(
            [(u.customer, u.name, u.to_address, u.wave, u.reply or "") for u in s.unreachable],
            ("customer", "name", "address", "wave", "reply"),
        )
    if s.held_count:
        click.echo(f"\nheld back, not warned in time (kept out of the map): {s.held_count}")
        echo_table(
            [(h.address, h.customer, h.reason, h.cohort, h.redated_to or "no date yet") for h in s.held],
            ("mailbox", "customer", "reason", "held from", "switched off with"),
        )
    if s.open_sightings:
        click.echo(
            f"\nopen ambiguous sightings: {s.open_sightings} "
            "(`rollout legacy --review`, then `rollout attribute` or `rollout dismiss`)"
        )
    if s.cohorts:
        click.echo("\ncohorts")
        echo_table(
            [
                (
                    c.position,
                    c.label,
                    c.mailboxes,
                    f"{c.share * 100:.1f}%",
                    c.still_legacy,
                    c.stage,
                    stamp(c.scheduled_at),
                    stamp(c.enforced_at),
                    c.refusals,
                )
                for c in s.cohorts
            ],
            ("#", "range", "mailboxes", "share", "legacy", "stage", "scheduled", "enforced", "refusals"),
            "rlrrrllll",
        )
    if s.gates:
        click.echo("")
        echo_gates(s.gates)
    echo_refusal_chart(s)
    if s.trend:
        click.echo("\nmailboxes with legacy use per week")
        peak = max(w.mailboxes for w in s.trend) or 1
        for week in s.trend:
            bar = "█" * max(1 if week.mailboxes else 0, round(week.mailboxes / peak * BAR_WIDTH))
            click.echo(f"  {week.week.isoformat()}  {week.mailboxes:>7}  {bar}")
    if s.expiring:
        click.echo("\nexemptions ending within 7 days")
        echo_table([(e.address, stamp(e.until), e.reason) for e in s.expiring], ("mailbox", "until", "reason"))
    if s.jobs:
        click.echo("\nscheduler: latest run of each job")
        echo_table(
            [(j.job, stamp(j.started_at), j.outcome, j.note or "") for j in s.jobs],
            ("job", "started", "outcome", "note"),
        )


SPARKS = "▁▂▃▄▅▆▇█"
CHART_COLUMNS = 48


def echo_refusal_chart(s: Status) -> None:
    """Per switched-off cohort, refusals by our map per hour since its switch-off: the wave of calls."""
    switched = [c for c in s.cohorts if c.enforced_at]
    if not switched:
        return
    click.echo("\nrefusals by our map per hour since each switch-off (· none; █ the cohort's busiest column)")
    for c in switched:
        assert c.enforced_at is not None
        first = c.enforced_at.replace(minute=0, second=0, microsecond=0)
        hours = max(1, int((s.now - first).total_seconds() // 3600) + 1)
        per_column = -(-hours // CHART_COLUMNS)  # hours per column, so that a long rollout still fits a line
        columns = [0] * (-(-hours // per_column))
        for point in c.refusals_per_hour:
            index = int((point.hour - first).total_seconds() // 3600) // per_column
            if 0 <= index < len(columns):
                columns[index] += point.refusals
        peak = max(c.refusals_per_hour, key=lambda p: p.refusals, default=None)
        busiest = f"peak {peak.refusals}/h at {stamp(peak.hour)}" if peak else "none"
        unit = f", {per_column} h a column" if per_column > 1 else ""
        click.echo(f"  {c.position:>2} {c.label:<8} from {stamp(first)}  {sparkline(columns)}  {busiest}{unit}")


def sparkline(values: list[int]) -> str:
    top = max(values, default=0) or 1
    return "".join("·" if v == 0 else SPARKS[min(len(SPARKS) - 1, (v * len(SPARKS) - 1) // top)] for v in values)


@click.command("lookup")
@click.argument("query", metavar="ADDRESS|CUSTOMER")
@json_option
@pass_runtime()
def lookup_command(runtime: Runtime, query: str, as_json: bool) -> None:
    """One mailbox or customer, for support: legacy use, cohort, notices, reply text.

    QUERY is a mailbox address (any case), a POP/IMAP login, a customer id or
    the customer's contact address. Exits 1 when nothing matches. Times are UTC.

    \b
    Example:
      rollout lookup Anna.Schmidt@example.de
      rollout lookup K-1001 --json
    """
    found = lookup(runtime, query)
    if as_json:
        echo_json(found)
        return
    print_lookup(found)


def print_lookup(found: Lookup) -> None:
    click.echo(
        f"customer {found.customer_id}: {found.customer_name} <{found.customer_email}> ({found.locale}), "
        f"{found.mailbox_count} mailboxes"
    )
    for report in found.mailboxes:
        click.echo("")
        print_mailbox(report)
    if found.mailbox_count > len(found.mailboxes):
        click.echo(
            f"\n… and {found.mailbox_count - len(found.mailboxes)} more mailboxes, not shown "
            "(the ones with legacy use come first)"
        )
    click.echo("\nnotices to the customer")
    if not found.notices:
        click.echo("  none")
        return
    echo_table(
        [
            (n.wave, n.kind, n.state, n.delivery or "", stamp(n.sent_at), n.message_id, ", ".join(n.mailboxes))
            for n in found.notices
        ],
        ("wave", "kind", "state", "delivery", "sent", "message-id", "mailboxes listed"),
        "rllllll",
    )
    for n in found.notices:
        if n.delivery in ("bounced", "delayed") and n.delivery_reply:
            click.echo(f"  wave {n.wave} {n.delivery} {stamp(n.delivery_at)}: {n.delivery_reply}")


def print_mailbox(m: MailboxReport) -> None:
    click.echo(f"{m.address}" + (f"  (login {m.login})" if m.login else ""))
    legacy = m.legacy
    if legacy is None or not legacy.submissions:
        click.echo("  legacy use: none seen")
    else:
        click.echo(
            f"  legacy use: last {stamp(legacy.last_seen)} from {legacy.last_ip}, "
            f"{legacy.submissions} submissions on {legacy.days} days, confidence {legacy.confidence}; "
            f"client IPs {', '.join(legacy.client_ips)}; senders {', '.join(legacy.senders)}"
        )
    if legacy is not None and legacy.last_auth:
        click.echo(
            f"  SMTP AUTH: last {stamp(legacy.last_auth)}"
            + ("  → switched" if legacy.switched else "  (legacy use since)")
        )
    if m.cohort:
        c = m.cohort
        state = f"switched off {stamp(c.enforced_at)}, stage {c.stage}" if c.enforced_at else "not yet switched off"
        click.echo(f"  cohort {c.position} ({c.label}): scheduled {stamp(c.scheduled_at)}; {state}")
    else:
        click.echo("  cohort: none (no plan applied)")
    if m.held:
        h = m.held
        later = (
            f"switched off with cohort {h.redated_to} at {stamp(h.redated_at)}" if h.redated_to else "no new date yet"
        )
        click.echo(f"  HELD BACK from cohort {h.cohort} at {stamp(h.held_at)}: {h.reason}; not in the map; {later}")
    if m.exemption:
        e = m.exemption
        click.echo(
            f"  exemption {'until' if e.active else 'ended, was until'} {stamp(e.until)} by {e.actor}: {e.reason}"
        )
    if legacy is not None and legacy.refusals:
        click.echo(f"  refused by our map: {legacy.refusals} times, last {stamp(legacy.last_refused)}")
    if m.refused_reply:
        click.echo(f"  a client sending without AUTH now gets:\n    {m.refused_reply}")
    elif m.cohort and m.cohort.stage == "warn" and not (m.exemption and m.exemption.active):
        click.echo("  stage warn: mail sent without AUTH is still accepted; Postfix logs a warning")
    if m.evidence:
        click.echo(f"  evidence ({m.evidence_day}):")
        for line in m.evidence:
            click.echo(f"    {line.get('file', '')}:{line.get('offset', '')}: {line.get('line', '')}")


@click.command("scheduler")
@pass_runtime()
def scheduler_command(runtime: Runtime) -> None:
    """Run scan, notify, step and exemption expiry on time, until SIGTERM.

    Scans every scan.interval_minutes over scan.log_files; sends each notice wave
    at the campaign's time; takes each step at its scheduled time, obeying pause,
    window and guards; ends expired exemptions. A wave or step later than
    scheduler.misfire_grace_seconds is not run without an operator. Only one
    scheduler acts at a time (a second one waits and says so). SIGTERM lets the
    running job finish. Every run is logged and recorded (see `rollout status`).

    \b
    Example:
      rollout --config /etc/rollout/rollout.toml scheduler
    """
    from ..scheduler import Daemon  # apscheduler is only needed by this command

    logging.getLogger("rollout").setLevel(min(logging.getLogger("rollout").getEffectiveLevel(), logging.INFO))
    Daemon(runtime).run()


@click.command("demo")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default="rollout-demo")
@click.option(
    "--mailboxes",
    type=click.IntRange(min=100),
    default=5000,
    show_default=True,
    help="Mailboxes of the generated provider.",
)
@click.option(
    "--customers", type=click.IntRange(min=10), default=2000, show_default=True, help="Customers they belong to."
)
@click.option(
    "--seed", type=int, default=1, show_default=True, help="Seed of the generated provider and its mail logs."
)
@click.option("--smtp-host", default="127.0.0.1", hidden=True, help="Loopback address of the demo's SMTP server.")
def demo_command(directory: Path, mailboxes: int, customers: int, seed: int, smtp_host: str) -> None:
    """Run the whole rollout on a generated provider in DIRECTORY, in about a minute.

    Generates an inventory (about 8% of mailboxes still on SMTP-after-POP) and
    weekly mail logs, scans them, plans cohorts, runs a six-wave notice campaign
    on a simulated clock (notices go to an SMTP server inside this process and are
    kept as .eml files), switches every cohort off (the Postfix map is written
    into DIRECTORY), and prints the final status. Needs no database or settings:
    everything is inside DIRECTORY (default ./rollout-demo), which a second run
    clears.

    \b
    Example:
      rollout demo /tmp/rollout-demo
    """
    from ..demo import run_demo  # the demo's generators and SMTP server load only here

    if mailboxes < customers:
        raise click.BadParameter("need at least one mailbox per customer", param_hint="--mailboxes")
    result = run_demo(
        directory, report=click.echo, mailboxes=mailboxes, customers=customers, seed=seed, smtp_host=smtp_host
    )
    click.echo("")
    print_status(result.status)
    click.echo("")
    click.echo(
        f"{result.legacy_at_start} mailboxes used SMTP-after-POP at the start; "
        f"{result.switched} switched to SMTP AUTH after a notice."
    )
    click.echo(
        f"{result.notices_sent} notices sent, {result.eml_files} kept as .eml files; "
        f"{result.log_lines:,} log lines scanned."
    )
    click.echo("\nwhere to look:")
    click.echo(f"  notices          {result.directory / 'outbox'}/*.eml")
    click.echo(f"  enforcement map  {result.map_path}")
    click.echo(f"  mail logs        {result.directory / 'logs'}/")
    click.echo(f"  database         {result.database_url}")
    db_flag = f"--database {result.database_url}"
    click.echo(f"  try              rollout {db_flag} status")
    if result.sample_address:
        click.echo(f"                   rollout {db_flag} lookup {result.sample_address}")
