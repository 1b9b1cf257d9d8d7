"""`rollout inventory …`: customers and mailboxes from provisioning."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..runtime import Runtime
from ..scan.inventory_workflow import import_inventory, inventory_stats
from ._base import dry_run_option, echo_json, echo_table, json_option, pass_runtime, progress_reporter


@click.group("inventory")
def inventory_group() -> None:
    """Customers and their mailboxes, imported from provisioning.

    \b
    Example:
      rollout inventory import mailboxes.csv && rollout inventory stats
    """


@inventory_group.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@dry_run_option
@click.option("--prune", is_flag=True, help="Delete mailboxes (and then empty customers) that are not in the file.")
@json_option
@pass_runtime()
def inventory_import(runtime: Runtime, csv_file: Path, dry_run: bool, prune: bool, as_json: bool) -> None:
    """Import (upsert) customers and mailboxes from a CSV file, all or nothing.

    Columns: mailbox,customer_id,customer_email,customer_name,locale and optional
    login (the POP/IMAP login when it is not the address); a header row is
    required, extra columns are ignored, UTF-8 with or without BOM. If any row is
    bad, nothing is imported and every bad row is reported with its line number.

    \b
    Example:
      rollout inventory import --dry-run mailboxes.csv
      rollout inventory import --prune mailboxes.csv
    """
    with progress_reporter("importing", os.path.getsize(csv_file)) as progress:
        summary = import_inventory(runtime, csv_file, dry_run=dry_run, prune=prune, progress=progress)
    if as_json:
        echo_json(summary)
        return
    prefix = "dry run, nothing written: " if dry_run else ""
    click.echo(f"{prefix}{summary.rows} rows from {csv_file}")
    echo_table(
        [
            ("customers", summary.customers_added, summary.customers_updated, summary.customers_unchanged),
            ("mailboxes", summary.mailboxes_added, summary.mailboxes_updated, summary.mailboxes_unchanged),
        ],
        ("", "added", "updated", "unchanged"),
        "lrrr",
    )
    if summary.mailboxes_pruned:
        click.echo(
            f"pruned {summary.mailboxes_pruned} mailboxes and {summary.customers_pruned} customers not in the file"
        )
    elif summary.mailboxes_absent:
        sample = ", ".join(summary.absent_sample[:5])
        click.echo(
            f"{summary.mailboxes_absent} mailboxes in the database are not in the file "
            f"(kept; --prune deletes them): {sample}…"
        )


@inventory_group.command("stats")
@json_option
@pass_runtime()
def inventory_stats_command(runtime: Runtime, as_json: bool) -> None:
    """Counts, and the share of mailboxes per initial letter (what cohorts balance).

    Initial = first character of the local part, case-folded, accents stripped;
    digits are one bucket before a, anything else one bucket after z.

    \b
    Example:
      rollout inventory stats --json
    """
    stats = inventory_stats(runtime)
    if as_json:
        echo_json(stats)
        return
    click.echo(f"{stats.customers} customers, {stats.mailboxes} mailboxes in {stats.domains} domains")
    echo_table(
        [
            (b.label, b.mailboxes, f"{b.share * 100:.2f}%", "#" * round(b.share * 200))
            for b in stats.buckets
            if b.mailboxes
        ],
        ("initial", "mailboxes", "share", ""),
        "lrrl",
    )
