"""`rollout campaign …` and `rollout notify`: the weekly notices."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from ..notify.campaign_workflow import (
    CampaignOverview,
    NotifySummary,
    campaign_overview,
    notify,
    preview_notice,
    start_campaign,
)
from ..runtime import Runtime
from ._base import dry_run_option, echo_json, echo_table, json_option, pass_runtime, progress_reporter


@click.group("campaign")
def campaign_group() -> None:
    """The six-week notice schedule.

    \b
    Example:
      rollout campaign start --first 2026-03-02 && rollout campaign show
    """


@campaign_group.command("start")
@click.option(
    "--first",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Date of wave 1 (moved to the next --weekday if needed).",
)
@click.option("--weeks", default=6, show_default=True, type=click.IntRange(1, 52), help="Number of weekly waves.")
@click.option(
    "--weekday", default="mon", show_default=True, type=click.Choice(["mon", "tue", "wed", "thu", "fri", "sat", "sun"])
)
@click.option("--at", "at_time", default="09:00", show_default=True, metavar="HH:MM", help="Local time of each wave.")
@click.option("--tz", default="Europe/Berlin", show_default=True, help="IANA time zone of --at.")
@click.option("--replace", is_flag=True, help="Deactivate the active campaign and start this one (its ledger is kept).")
@json_option
@pass_runtime()
def campaign_start(
    runtime: Runtime, first: datetime, weeks: int, weekday: str, at_time: str, tz: str, replace: bool, as_json: bool
) -> None:
    """Define the weekly notice waves: wave k is due k-1 weeks after the first.

    \b
    Example:
      rollout campaign start --first 2026-03-02 --weeks 6 --weekday mon --at 09:00 --tz Europe/Berlin
    """
    overview = start_campaign(runtime, first.date(), weeks=weeks, weekday=weekday, at=at_time, tz=tz, replace=replace)
    _show(overview, as_json)


@campaign_group.command("show")
@json_option
@pass_runtime()
def campaign_show(runtime: Runtime, as_json: bool) -> None:
    """The campaign's waves: when each is due and how many notices are sent.

    \b
    Example:
      rollout campaign show --json
    """
    overview = campaign_overview(runtime)
    if overview is None:
        if as_json:
            echo_json(None)
        else:
            click.echo("no campaign yet: run `rollout campaign start --first DATE`")
        return
    _show(overview, as_json)


def _show(overview: CampaignOverview, as_json: bool) -> None:
    if as_json:
        echo_json(overview)
        return
    state = "active" if overview.active else "inactive"
    due = f"wave {overview.due_wave} is due now" if overview.due_wave else "no wave is due now"
    when = f"{overview.weekday} {overview.at_time} {overview.timezone}"
    click.echo(f"campaign {overview.id} ({state}): {overview.weeks} weekly waves, {when}; {due}")
    rows: list[tuple[int | str, ...]] = [
        (
            w.wave,
            f"{w.due_at:%Y-%m-%d %H:%M} UTC",
            w.pending,
            w.sending,
            w.sent,
            w.failed,
            w.delivered,
            w.bounced,
            w.delayed,
        )
        for w in overview.waves
    ]
    if overview.thanks:
        t = overview.thanks
        rows.append(("thanks", "", t.pending, t.sending, t.sent, t.failed, t.delivered, t.bounced, t.delayed))
    echo_table(
        rows, ("wave", "due", "pending", "sending", "sent", "failed", "delivered", "bounced", "delayed"), "lrrrrrrrr"
    )
    if overview.unreachable:
        click.echo(f"unreachable (their latest notice bounced; call them): {len(overview.unreachable)}")
        for u in overview.unreachable[:20]:
            click.echo(f"  {u.customer} {u.name} <{u.to_address}> wave {u.wave}: {u.reply or 'bounced'}")


@click.command("notify")
@click.option(
    "--wave",
    type=click.IntRange(1),
    help="Send this wave (default: the wave due now; needed when it is past the grace period).",
)
@dry_run_option
@click.option(
    "--outbox",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write .eml files into DIR instead of sending (recorded as sent).",
)
@click.option(
    "--preview",
    "preview",
    metavar="CUSTOMER",
    help="Print one customer's rendered notice (id or e-mail); records nothing.",
)
@click.option(
    "--test-to",
    metavar="ADDRESS",
    help="Send the preview (or the first affected customer's notice) to ADDRESS; records nothing.",
)
@click.option("--limit", type=click.IntRange(1), help="Send at most N notices in this run; the rest stay pending.")
@click.option(
    "--resend-uncertain", is_flag=True, help="Also resend notices a killed run left in flight (they may arrive twice)."
)
@json_option
@pass_runtime()
def notify_command(
    runtime: Runtime,
    wave: int | None,
    dry_run: bool,
    outbox: Path | None,
    preview: str | None,
    test_to: str | None,
    limit: int | None,
    resend_uncertain: bool,
    as_json: bool,
) -> None:
    """Send this week's notices, each customer once per wave (safe to rerun).

    Without --wave, sends the wave due now by the campaign schedule. Exit 1 if
    any notice failed (5xx, or it could not be built) or the SMTP server could
    not be reached (the rest stays pending for the next run). Notices a killed run left in flight are reported
    as uncertain and not resent unless --resend-uncertain.

    \b
    Example:
      rollout notify --dry-run
      rollout notify --preview K-1001 --test-to ops@example.net
      rollout notify --outbox /tmp/notices --json
    """
    if preview or test_to:
        shown = preview_notice(runtime, preview, wave=wave, test_to=test_to)
        if as_json:
            echo_json(shown)
        else:
            click.echo(f"To: {shown.to_address}  (customer {shown.customer}, wave {shown.wave}, {shown.locale})")
            click.echo(f"Subject: {shown.subject}\n")
            click.echo(shown.text)
            if shown.sent_to:
                click.echo(f"sent to {shown.sent_to}: {shown.reply}", err=True)
        return
    with progress_reporter("notifying", None) as progress:
        summary = notify(
            runtime,
            wave=wave,
            dry_run=dry_run,
            outbox=outbox,
            limit=limit,
            resend_uncertain=resend_uncertain,
            progress=progress,
        )
    if as_json:
        echo_json(summary)
    else:
        _print_summary(summary)
    if summary.stopped:
        left = summary.deferred + summary.remaining
        raise click.ClickException(
            f"the SMTP server could not be reached: {left} notices left pending for the next run"
        )
    if summary.failed:
        sys.exit(1)


def _print_summary(s: NotifySummary) -> None:
    if s.note:
        click.echo(s.note)
    if s.wave is None:
        return
    prefix = "dry run, nothing sent: " if s.dry_run else ""
    where = f" into {s.outbox}" if s.outbox else ""
    click.echo(f"{prefix}campaign {s.campaign_id}, wave {s.wave}{where}")
    echo_table(
        [(s.selected, s.sent, s.failed, s.deferred, s.skipped, s.uncertain, s.remaining)],
        ("selected", "sent", "failed", "deferred", "skipped", "uncertain", "pending"),
        "rrrrrrr",
    )
    for f in s.failures[:20]:
        click.echo(f"failed: customer {f['customer']} <{f['to']}>: {f['reply']}")
    if s.unreachable:
        click.echo(
            f"{s.unreachable} customers left out: an earlier notice to their address bounced with a 5xx "
            "(see `rollout campaign show`)"
        )
    if s.uncertain:
        click.echo(
            f"{s.uncertain} notices were in flight when an earlier run stopped: maybe delivered; "
            "`--resend-uncertain` sends them again"
        )
