"""The click group, the shared options, and the one place errors become exit codes.

Exit codes: 0 ok, 1 operational failure (``Error: …``), 2 usage error.
"""

from __future__ import annotations

import atexit
import functools
import gc
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..clock import clock_from_env
from ..config import load_settings
from ..errors import InventoryError, RolloutError

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

    from ..runtime import Runtime

MAX_PROBLEMS_SHOWN = 20

# The commands: name → ("module:attribute", summary). A command's module (and what it needs:
# SQLAlchemy, Jinja2, the workflows) is imported only when that command runs; `rollout --help`
# lists them from here. tests/test_docs.py checks each summary against the command's own help.
COMMANDS: dict[str, tuple[str, str]] = {
    "attribute": (
        "rollout.cli.sightings:attribute_command",
        "Make an ambiguous sighting one mailbox's legacy use (audited): it is notified.",
    ),
    "campaign": ("rollout.cli.campaign:campaign_group", "The six-week notice schedule."),
    "config": (
        "rollout.cli.configuration:config_group",
        "Inspect the configuration (rollout.toml < environment < flags).",
    ),
    "db": ("rollout.cli.database:db_group", "Create and migrate the database schema (Alembic)."),
    "demo": (
        "rollout.cli.operate:demo_command",
        "Run the whole rollout on a generated provider in DIRECTORY, in about a minute.",
    ),
    "dismiss": (
        "rollout.cli.sightings:dismiss_command",
        "Close an ambiguous sighting as nobody's legacy use (audited): never notified.",
    ),
    "exempt": (
        "rollout.cli.plan:exempt_command",
        "Keep one mailbox out of the map until a date (one postponement unless --force).",
    ),
    "inventory": (
        "rollout.cli.inventory:inventory_group",
        "Customers and their mailboxes, imported from provisioning.",
    ),
    "legacy": (
        "rollout.cli.scan:legacy_command",
        "List the mailboxes still using SMTP-after-POP, with their evidence.",
    ),
    "lookup": (
        "rollout.cli.operate:lookup_command",
        "One mailbox or customer, for support: legacy use, cohort, notices, reply text.",
    ),
    "notify": (
        "rollout.cli.campaign:notify_command",
        "Send this week's notices, each customer once per wave (safe to rerun).",
    ),
    "pause": ("rollout.cli.plan:pause_command", "Stop all steps (by hand and scheduled) until `rollout resume`."),
    "plan": (
        "rollout.cli.plan:plan_command",
        "Divide the mailboxes into alphabetical cohorts balanced by share, and schedule them.",
    ),
    "resume": ("rollout.cli.plan:resume_command", "Allow steps again after `rollout pause`."),
    "scan": (
        "rollout.cli.scan:scan_command",
        "Read mail logs incrementally and record which mailboxes use SMTP-after-POP.",
    ),
    "scheduler": (
        "rollout.cli.operate:scheduler_command",
        "Run scan, notify, step and exemption expiry on time, until SIGTERM.",
    ),
    "status": (
        "rollout.cli.operate:status_command",
        "Where the rollout stands: phase, next action, waves, cohorts, legacy trend.",
    ),
    "step": ("rollout.cli.plan:step_command", "Switch off the next cohort, or move the current one to its next stage."),
    "undo": (
        "rollout.cli.plan:undo_command",
        "Re-enable the legacy path for the last step (or back to --to-step) via a map swap.",
    ),
    "web": ("rollout.cli.web:web_group", "Serve the read-only support desk in the browser (login required)."),
}


class RolloutGroup(click.Group):
    """Loads each command on first use, and translates ``RolloutError`` into ``Error: …`` and
    exit 1, once, for every command."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            module, _, attribute = self.lazy_commands[cmd_name][0].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's listing, with the summaries of commands not yet loaded taken from the table."""
        listed = {}
        for name in self.list_commands(ctx):
            if name in self.commands:
                if not self.commands[name].hidden:
                    listed[name] = self.commands[name]
            else:  # shortened exactly as click shortens the command's own help
                listed[name] = click.Command(name, help=self.lazy_commands[name][1])
        if listed:
            limit = formatter.width - 6 - max(map(len, listed))
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in listed.items()])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InventoryError as exc:
            raise click.ClickException(format_problems(exc)) from None
        except RolloutError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # a full disk, a permission, a file vanished: operational, not a bug
            where = f" ({exc.filename})" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None
        except Exception as exc:
            database_failure = _database_failure(exc)
            if database_failure is None:
                raise  # a bug: keep its traceback
            raise click.ClickException(database_failure) from None


def _database_failure(exc: Exception) -> str | None:
    """The database refused or failed (locked, full, gone): one line for ``Error:``, no password."""
    errors = sys.modules.get("sqlalchemy.exc")  # loaded only if the command used the database
    if errors is None or not isinstance(exc, (errors.OperationalError, errors.InterfaceError)):
        return None
    from ..config import mask_url

    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return mask_url(f"the database failed: {reason}")


def format_problems(exc: InventoryError) -> str:
    lines = [str(exc)]
    for line_no, reason in exc.problems[:MAX_PROBLEMS_SHOWN]:
        lines.append(f"  line {line_no}: {reason}")
    if exc.total > MAX_PROBLEMS_SHOWN:
        lines.append(f"  … and {exc.total - MAX_PROBLEMS_SHOWN} more ({exc.total} bad rows in all)")
    return "\n".join(lines)


@click.group(
    cls=RolloutGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Settings file (default: $ROLLOUT_CONFIG, else ./rollout.toml if present).",
)
@click.option(
    "--database", "database_url", metavar="URL", help="Database URL; overrides the file and $ROLLOUT_DATABASE_URL."
)
@click.option("--actor", metavar="NAME", help="Who is acting, for the audit log (default: the OS user).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="rollout")
@click.pass_context
def cli(
    ctx: click.Context, config_path: Path | None, database_url: str | None, actor: str | None, verbose: int
) -> None:
    """Retire SMTP-after-POP in stages: find the mailboxes still using it in the mail
    logs, notify their customers weekly, then switch the legacy path off in balanced
    alphabetical cohorts.

    \b
    Example:
      rollout db upgrade && rollout inventory import mailboxes.csv && rollout inventory stats
    """
    gc.disable()  # start-up makes long-lived objects only (modules, classes, SQLAlchemy's tables): nothing to collect
    ctx.call_on_close(_collector_resumed)
    logging.basicConfig(
        level=logging.WARNING - 10 * verbose,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if ctx.obj is None:  # tests may pass a ready Runtime as obj
        from ..runtime import Runtime  # SQLAlchemy: not needed to print help

        settings = load_settings(config_path, overrides={"database_url": database_url})
        try:
            clock = clock_from_env()
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        ctx.obj = Runtime(settings=settings, clock=clock)
        ctx.call_on_close(ctx.obj.close)
    if actor:
        ctx.obj.actor = actor


def _collector_resumed() -> None:
    gc.unfreeze()
    gc.enable()


# At exit the interpreter collects once more over everything still alive (all of SQLAlchemy):
# a tenth of a second that frees nothing the process's end would not free anyway.
atexit.register(gc.freeze)


def pass_runtime(check_schema: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Hand the command the Runtime; by default refuse to run on a missing or stale schema."""

    def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        @click.pass_obj
        def wrapper(runtime: Runtime, *args: Any, **kwargs: Any) -> Any:
            if check_schema:
                runtime.require_schema()
            if not gc.isenabled():
                gc.freeze()  # what start-up made stays out of every later collection
                gc.enable()
            return f(runtime, *args, **kwargs)

        return wrapper

    return decorator


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
dry_run_option = click.option("--dry-run", is_flag=True, help="Show what would happen; change nothing.")


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def echo_json(value: Any) -> None:
    click.echo(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False, sort_keys=False))


def echo_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], align: str | None = None) -> None:
    """A plain aligned table; ``align`` is one letter per column, ``l`` or ``r``."""
    text_rows = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    align = align or "l" * len(headers)

    def fmt(row: Sequence[str]) -> str:
        cells = [v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(row, widths, align, strict=True)]
        return "  ".join(cells).rstrip()

    click.echo(fmt(headers))
    click.echo(fmt(["-" * w for w in widths]))
    for row in text_rows:
        click.echo(fmt(row))


def progress_reporter(label: str, total: int | None) -> Any:
    """A progress bar on a terminal, nothing otherwise. Use as a context manager giving a callback."""
    return _Progress(label, total)


class _Progress:
    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total = label, total
        self.bar: ProgressBar[int] | None = None

    def __enter__(self) -> Callable[[int], None]:
        if sys.stderr.isatty():
            bar: ProgressBar[int] = click.progressbar(length=self.total, label=self.label, file=sys.stderr)
            self.bar = bar.__enter__()
            return bar.update
        return lambda n: None

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
