"""`rollout db …`: create and migrate the schema."""

from __future__ import annotations

import click

from .. import db
from ..runtime import Runtime
from ._base import pass_runtime


@click.group("db")
def db_group() -> None:
    """Create and migrate the database schema (Alembic).

    \b
    Example:
      rollout db upgrade
    """


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_runtime(check_schema=False)
def db_upgrade(runtime: Runtime, revision: str) -> None:
    """Create the schema, or migrate it to the newest revision.

    \b
    Example:
      rollout --database postgresql://postgres@127.0.0.1/rollout db upgrade
    """
    before, after = db.upgrade(runtime.engine, revision)
    url = runtime.engine.url.render_as_string(hide_password=True)
    if before == after:
        click.echo(f"{url}: schema already at {after}")
    else:
        click.echo(f"{url}: schema upgraded from {before or 'empty'} to {after}")


@db_group.command("current")
@pass_runtime(check_schema=False)
def db_current(runtime: Runtime) -> None:
    """Show the schema revision of the database and the one this rollout expects.

    \b
    Example:
      rollout db current
    """
    click.echo(f"database: {db.current_revision(runtime.engine) or 'empty'}; expected: {db.head_revision()}")
