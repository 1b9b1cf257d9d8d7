"""`rollout web`: serve the support desk; `rollout web user …`: its accounts."""

from __future__ import annotations

import click

from ..runtime import Runtime
from ..support.web.server import serve_desk
from ..support.web_workflow import add_user, list_users, remove_user
from ._base import echo_json, echo_table, json_option, pass_runtime


@click.group("web", invoke_without_command=True)
@click.option("--bind", metavar="HOST:PORT", help="Where to listen (default: web.bind, 127.0.0.1:8080).")
@click.pass_context
def web_group(ctx: click.Context, bind: str | None) -> None:
    """Serve the read-only support desk in the browser (login required).

    Overview, search, one page per customer (what `rollout lookup` shows), cohort
    listings and the same as JSON under /api/. It listens on loopback unless told
    otherwise: put nginx or Apache with TLS in front of it. Create an account
    first with `rollout web user add NAME`. SIGTERM stops it cleanly.

    \b
    Example:
      rollout web user add anna
      rollout web --bind 127.0.0.1:8080
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(_serve, bind=bind)


@pass_runtime()
def _serve(runtime: Runtime, bind: str | None) -> None:
    serve_desk(
        runtime, bind, on_ready=lambda url: click.echo(f"support desk on {url} (SIGTERM or Ctrl-C stops it)", err=True)
    )


@web_group.group("user")
def user_group() -> None:
    """The support desk's accounts (argon2 password hashes in the database).

    \b
    Example:
      rollout web user add anna
    """


@user_group.command("add")
@click.argument("name")
@pass_runtime()
def user_add(runtime: Runtime, name: str) -> None:
    """Create an account; asks for its password twice (at least 10 characters).

    \b
    Example:
      rollout web user add anna
    """
    password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    account = add_user(runtime, name, password)
    click.echo(f"account {account.name} created")


@user_group.command("list")
@json_option
@pass_runtime()
def user_list(runtime: Runtime, as_json: bool) -> None:
    """List the accounts with when and by whom they were created.

    \b
    Example:
      rollout web user list --json
    """
    users = list_users(runtime)
    if as_json:
        echo_json(users)
        return
    echo_table(
        [(u.name, u.created_at.strftime("%Y-%m-%d %H:%M"), u.created_by) for u in users], ("account", "created", "by")
    )


@user_group.command("remove")
@click.argument("name")
@pass_runtime()
def user_remove(runtime: Runtime, name: str) -> None:
    """Delete an account; its open sessions stop working at once.

    \b
    Example:
      rollout web user remove anna
    """
    remove_user(runtime, name)
    click.echo(f"account {name} removed")
