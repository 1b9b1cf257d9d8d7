"""The click group, the shared options, and the one place errors become exit codes.

Exit codes: 0 ok, 1 operational failure (``Error: …``), 2 usage error.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import click

from ..clock import clock_from_env
from ..config import load_settings
from ..errors import InventoryError, RolloutError
from ..runtime import Runtime

MAX_PROBLEMS_SHOWN = 20


class RolloutGroup(click.Group):
    """Translates ``RolloutError`` into ``Error: …`` and exit 1, once, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InventoryError as exc:
            raise click.ClickException(format_problems(exc)) from None
        except RolloutError as exc:
            raise click.ClickException(str(exc)) from None


def format_problems(exc: InventoryError) -> str:
    lines = [str(exc)]
    for line_no, reason in exc.problems[:MAX_PROBLEMS_SHOWN]:
        lines.append(f"  line {line_no}: {reason}")
    if exc.total > MAX_PROBLEMS_SHOWN:
        lines.append(f"  … and {exc.total - MAX_PROBLEMS_SHOWN} more ({exc.total} bad rows in all)")
    return "\n".join(lines)


@click.group(cls=RolloutGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Settings file (default: $ROLLOUT_CONFIG, else ./rollout.toml if present).",
)
@click.option("--database", "database_url", metavar="URL", help="Database URL; overrides the file and $ROLLOUT_DATABASE_URL.")
@click.option("--actor", metavar="NAME", help="Who is acting, for the audit log (default: the OS user).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="rollout")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, database_url: str | None, actor: str | None, verbose: int) -> None:
    """Retire SMTP-after-POP in stages: find the mailboxes still using it in the mail
    logs, notify their customers weekly, then switch the legacy path off in balanced
    alphabetical cohorts.

    \b
    Example:
      rollout db upgrade && rollout inventory import mailboxes.csv && rollout inventory stats
    """
    logging.basicConfig(
        level=logging.WARNING - 10 * verbose, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if ctx.obj is None:  # tests may pass a ready Runtime as obj
        settings = load_settings(config_path, overrides={"database_url": database_url})
        ctx.obj = Runtime(settings=settings, clock=clock_from_env())
        ctx.call_on_close(ctx.obj.close)
    if actor:
        ctx.obj.actor = actor


def pass_runtime(check_schema: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Hand the command the Runtime; by default refuse to run on a missing or stale schema."""

    def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        @click.pass_obj
        def wrapper(runtime: Runtime, *args: Any, **kwargs: Any) -> Any:
            if check_schema:
                runtime.require_schema()
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
        widths = [max(w, len(v)) for w, v in zip(widths, row)]
    align = align or "l" * len(headers)

    def fmt(row: Sequence[str]) -> str:
        cells = [v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(row, widths, align)]
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
        self.label, self.total, self.bar = label, total, None

    def __enter__(self) -> Callable[[int], None]:
        if sys.stderr.isatty():
            self.bar = click.progressbar(length=self.total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
            return self.bar.update
        return lambda n: None

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
