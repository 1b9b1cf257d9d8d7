"""`rollout plan`, `step`, `pause`, `resume`, `undo`, `exempt`: cohorts and the staged switch-off."""

from __future__ import annotations

from datetime import datetime, timedelta

import click

from ..errors import PlanError
from ..plan import plan_workflow as wf
from ..plan.cohorts import parse_duration
from ..plan.gates import Gate
from ..runtime import Runtime
from ._base import dry_run_option, echo_json, echo_table, json_option, pass_runtime

DATETIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"]
DIFF_SHOWN = 10


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except PlanError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("plan")
@click.option("--cohorts", type=click.IntRange(min=1), help="Number of cohorts.")
@click.option(
    "--max-share", type=click.FloatRange(0, 1, min_open=True), help="Largest share one cohort may have, e.g. 0.10."
)
@click.option(
    "--weight",
    type=click.Choice(["mailboxes", "legacy"]),
    default="mailboxes",
    show_default=True,
    help="Balance all mailboxes, or only those still using the legacy path.",
)
@click.option("--split-letters", is_flag=True, help="Cut a letter heavier than one cohort at two-letter prefixes.")
@click.option("--start", type=click.DateTime(DATETIME_FORMATS), required=True, help="First cohort's time, in --tz.")
@click.option("--every", callback=_duration, required=True, help="Time between cohorts: 2h, 90m, 1d.")
@click.option("--window", help="Allowed local time of day, e.g. 08:00-17:00 (default: rollout.window).")
@click.option(
    "--skip-weekends/--no-skip-weekends",
    default=None,
    help="Never schedule on Saturday or Sunday (default: rollout.skip_weekends).",
)
@click.option("--tz", help="Time zone of --start and --window (default: rollout.timezone).")
@click.option("--apply", is_flag=True, help="Store the plan (without it nothing is stored).")
@json_option
@pass_runtime()
def plan_command(
    runtime: Runtime,
    cohorts: int | None,
    max_share: float | None,
    weight: str,
    split_letters: bool,
    start: datetime,
    every: timedelta,
    window: str | None,
    skip_weekends: bool | None,
    tz: str | None,
    apply: bool,
    as_json: bool,
) -> None:
    """Divide the mailboxes into alphabetical cohorts balanced by share, and schedule them.

    The partition is exact: it minimises the largest cohort's share (ties towards
    even sizes). Before the first step the plan may be replaced freely; after it,
    only cohorts not yet started change, and never to a date earlier than one a
    customer was already told.

    \b
    Example:
      rollout plan --cohorts 8 --start '2026-04-13 08:00' --every 2h --tz Europe/Berlin
      rollout plan --max-share 0.10 --split-letters --start 2026-04-13T08:00 --every 1d --apply
    """
    if (cohorts is None) == (max_share is None):
        raise click.UsageError("give exactly one of --cohorts N or --max-share SHARE")
    request = wf.PlanRequest(
        start=start,
        every=every,
        cohorts=cohorts,
        max_share=max_share,
        weight=weight,
        split_letters=split_letters,
        window=window,
        skip_weekends=skip_weekends,
        tz=tz,
    )
    result = wf.make_plan(runtime, request, apply=apply)
    proposal = result.proposal
    if as_json:
        echo_json(
            {
                "applied": result.applied,
                "plan_id": result.plan_id,
                "weight": proposal.weight,
                "largest_share": proposal.largest_share,
                "smallest_share": proposal.smallest_share,
                "cohorts": proposal.cohorts,
                "too_early": proposal.too_early,
            }
        )
        return
    echo_table(
        [
            (
                c.position,
                c.label,
                c.mailboxes,
                f"{c.share * 100:.2f}%",
                "" if c.kept else c.legacy,
                "" if c.kept else c.customers,
                f"{c.scheduled_at:%Y-%m-%d %H:%M} UTC",
                c.stage if c.kept else "",
            )
            for c in proposal.cohorts
        ],
        ("#", "range", "mailboxes", "share", "still legacy", "customers", "scheduled", "started"),
        "rlrrrrll",
    )
    click.echo(
        f"largest share {proposal.largest_share * 100:.2f}%, smallest {proposal.smallest_share * 100:.2f}% "
        f"(weight: {proposal.weight}, ideal {100 / max(1, sum(not c.kept for c in proposal.cohorts)):.2f}%)"
    )
    if proposal.too_early:
        click.echo(
            f"warning: {len(proposal.too_early)} mailboxes would get an earlier date than their customer was told "
            f"(e.g. {proposal.too_early[0].address}); --apply would refuse",
            err=True,
        )
    click.echo(f"stored as plan {result.plan_id}" if result.applied else "not stored (add --apply)")


def _print_gate(upcoming: wf.NextStep) -> None:
    if upcoming.kind == "retire":
        click.echo(f"next: the final step: retire the legacy path {upcoming.label} (every cohort is switched off)")
        echo_gates(upcoming.gates)
        return
    click.echo(
        f"next: cohort {upcoming.position} ({upcoming.label}, {upcoming.mailboxes} mailboxes) "
        f"{upcoming.from_stage} → {upcoming.to_stage}"
    )
    click.echo(
        f"gate: {upcoming.still_legacy} mailboxes of this cohort still use the legacy path; "
        f"{upcoming.refusals_since_switch} refusals of switched-off mailboxes since their switch"
    )
    echo_gates(upcoming.gates)


def echo_gates(gates: list[Gate]) -> None:
    """Each gate with its figure and threshold ([gates] in rollout.toml)."""
    if not gates:
        return
    click.echo("gates before the next step")
    echo_table(
        [("ok" if g.passed else "FAILED", g.name, g.figure, g.threshold) for g in gates],
        ("", "gate", "figure", "threshold"),
    )


def _print_diff(result: wf.StepResult) -> None:
    if result.diff is None:
        return
    for sign, keys in (("+", result.diff.added), ("-", result.diff.removed), ("~", result.diff.changed)):
        for key in keys[:DIFF_SHOWN]:
            click.echo(f"  {sign} {key}")
        if len(keys) > DIFF_SHOWN:
            click.echo(f"  {sign} … and {len(keys) - DIFF_SHOWN} more")
    click.echo(
        f"map: {len(result.diff.added)} added, {len(result.diff.removed)} removed, {len(result.diff.changed)} changed"
    )


def _print_held(result: wf.StepResult) -> None:
    """Who the step keeps out of the map (not warned in time), and who it includes unwarned."""
    if result.held:
        click.echo(f"held back, not warned in time ({len(result.held)}): kept out of the map")
        for h in result.held[:DIFF_SHOWN]:
            later = (
                f"; switched off with cohort {h.redated_to} at {h.redated_at:%Y-%m-%d %H:%M} UTC"
                if h.redated_to and h.redated_at
                else "; no date yet"
            )
            click.echo(f"  {h.address} ({h.customer}): {h.reason}{later}")
    if result.included_unwarned:
        click.echo(
            "switched off although not warned in time (--include-unwarned): "
            + ", ".join(result.included_unwarned[:DIFF_SHOWN])
        )
    if result.released:
        click.echo(f"held earlier, warned since, switched off now: {', '.join(result.released[:DIFF_SHOWN])}")


@click.command("step")
@dry_run_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Override the guards (needs --reason).")
@click.option("--reason", help="Why: recorded in the audit log (required with --force and --include-unwarned).")
@click.option(
    "--include-unwarned",
    is_flag=True,
    help="Also switch off mailboxes held back as not warned in time (needs --reason).",
)
@json_option
@pass_runtime()
def step_command(
    runtime: Runtime, dry_run: bool, yes: bool, force: bool, reason: str | None, include_unwarned: bool, as_json: bool
) -> None:
    """Switch off the next cohort, or move the current one to its next stage.

    Guards: the notice campaign's last wave has gone out, the rollout is not
    paused, the time is inside the window, the cohort's time has come and the
    previous step has soaked. Gates ([gates] in rollout.toml): fresh scan data,
    refusals by our map per hour, the share of the last switched cohort refused,
    the share of the next cohort still on the legacy path, and an optional
    external check; a failed gate refuses the step (exit 1, each named) unless
    --force --reason. Prints the gate figures and asks before acting.
    Mailboxes still on the legacy path without a notice delivered
    notices.min_warning_days before are held back (listed, kept out of the map)
    and get a later cohort's date; --force does not include them.

    After the last cohort, the final step retires the legacy path: the map in
    enforcement.legacy_map is replaced by an empty one (refused while the daemon
    that feeds it runs), or with enforcement.retire = "check" its removal from
    every smtpd_*_restrictions is verified with postconf. Then the phase is done.

    \b
    Example:
      rollout step --dry-run
      rollout step --yes
      rollout step --yes --include-unwarned --reason "support phoned every held customer"
    """
    if force and not reason:
        raise click.UsageError("--force needs --reason TEXT")
    if include_unwarned and not reason:
        raise click.UsageError("--include-unwarned needs --reason TEXT")
    if as_json and not (yes or dry_run):
        raise click.UsageError("--json cannot ask for confirmation: add --yes or --dry-run")

    def confirm(preview: wf.StepResult) -> bool:
        _print_gate(preview.step)
        if preview.step.kind == "retire":
            return click.confirm(f"retire the legacy path {preview.step.label}?", default=False)
        _print_held(preview)
        return click.confirm(f"switch cohort {preview.step.label} to {preview.step.to_stage}?", default=False)

    result = wf.step(
        runtime,
        dry_run=dry_run,
        yes=yes,
        force=force,
        reason=reason,
        confirm=confirm,
        include_unwarned=include_unwarned,
    )
    if as_json:
        echo_json(result)
        return
    if dry_run or yes:
        _print_gate(result.step)
        _print_held(result)
    for blocker in result.step.blockers:
        click.echo(f"{'overridden' if result.forced else 'guard'}: {blocker}")
    if dry_run:
        click.echo(
            f"dry run, nothing changed; customers affected ({len(result.customers)} shown): "
            + ", ".join(result.customers[:10])
        )
        _print_diff(result)
    elif result.retired:
        click.echo(f"the legacy path is retired: {result.retired}; the rollout is done (`rollout undo` restores it)")
    elif result.applied:
        _print_diff(result)
        checksum = result.checksum_after[:12] if result.checksum_after else ""
        click.echo(f"cohort {result.step.label} is now {result.step.to_stage} (map {checksum})")
    else:
        click.echo("not confirmed; nothing changed")


@click.command("pause")
@click.option("--reason", required=True, help="Why: shown to anyone who tries to step.")
@pass_runtime()
def pause_command(runtime: Runtime, reason: str) -> None:
    """Stop all steps (by hand and scheduled) until `rollout resume`.

    \b
    Example:
      rollout pause --reason "support queue over 50 tickets"
    """
    state = wf.pause(runtime, reason)
    click.echo(f"paused by {state.paused_by}: {state.paused_reason}")


@click.command("resume")
@click.option("--reason", help="Why, for the audit log.")
@pass_runtime()
def resume_command(runtime: Runtime, reason: str | None) -> None:
    """Allow steps again after `rollout pause`.

    \b
    Example:
      rollout resume --reason "queue back to normal"
    """
    wf.resume(runtime, reason)
    click.echo("resumed")


@click.command("undo")
@click.option(
    "--to-step", type=click.IntRange(min=0), help="Go back to the state after this step (0 = nothing enforced)."
)
@click.option("--reason", help="Why, for the audit log.")
@json_option
@pass_runtime()
def undo_command(runtime: Runtime, to_step: int | None, reason: str | None, as_json: bool) -> None:
    """Re-enable the legacy path for the last step (or back to --to-step) via a map swap.

    Undoing the final step puts the legacy map back as it was before it
    (enforcement.retire = "check": `check_client_access <legacy_map>` goes back
    into smtpd_recipient_restrictions in main.cf, then enforcement.reload_command).

    \b
    Example:
      rollout undo --reason "printer fleet at K-1001 cannot do AUTH"
      rollout undo --to-step 0
    """
    result = wf.undo(runtime, to_step=to_step, reason=reason)
    if as_json:
        echo_json(result)
        return
    if result.legacy_restored:
        click.echo(f"the legacy map {result.legacy_restored} is back as it was before the final step")
        if result.main_cf:
            click.echo(f"main.cf: {result.main_cf.parameter} = {result.main_cf.after} (Postfix reloaded)")
    click.echo(
        f"undone from step {result.from_step} to step {result.to_step}; "
        f"{len(result.diff.removed)} addresses back on the legacy path, map now {result.checksum_after[:12]}"
    )


@click.command("exempt")
@click.argument("address", required=False)
@click.option("--until", type=click.DateTime(DATETIME_FORMATS), help="Back in the map at this time (UTC).")
@click.option("--reason", help="Why: recorded with the exemption.")
@click.option("--force", is_flag=True, help="Allow a second postponement of the same mailbox.")
@click.option("--list", "list_", is_flag=True, help="List the exemptions in force.")
@click.option("--all", "include_ended", is_flag=True, help="With --list: ended ones too.")
@json_option
@pass_runtime()
def exempt_command(
    runtime: Runtime,
    address: str | None,
    until: datetime | None,
    reason: str | None,
    force: bool,
    list_: bool,
    include_ended: bool,
    as_json: bool,
) -> None:
    """Keep one mailbox out of the map until a date (one postponement unless --force).

    It goes back in automatically at the next step or scheduler tick after --until.

    \b
    Example:
      rollout exempt anna@example.de --until 2026-05-01 --reason "scanner firmware update pending"
      rollout exempt --list
    """
    if list_:
        rows = wf.list_exemptions(runtime, include_ended=include_ended)
        if as_json:
            echo_json(rows)
            return
        echo_table(
            [
                (
                    r.address,
                    f"{r.until:%Y-%m-%d %H:%M}",
                    r.actor,
                    r.reason,
                    f"{r.ended_at:%Y-%m-%d %H:%M}" if r.ended_at else "",
                )
                for r in rows
            ],
            ("mailbox", "until (UTC)", "by", "reason", "ended"),
        )
        return
    if not address or until is None or not reason:
        raise click.UsageError("give ADDRESS --until DATE --reason TEXT (or --list)")
    view = wf.exempt(runtime, address, until, reason, force=force)
    if as_json:
        echo_json(view)
        return
    click.echo(f"{view.address} is exempt until {view.until:%Y-%m-%d %H:%M} UTC")
