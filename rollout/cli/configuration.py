"""`rollout config show`: the effective settings, secrets masked."""

from __future__ import annotations

import click

from ..config import describe
from ..runtime import Runtime
from ._base import echo_json, json_option, pass_runtime


@click.group("config")
def config_group() -> None:
    """Inspect the configuration (rollout.toml < environment < flags).

    \b
    Example:
      rollout --config /etc/rollout/rollout.toml config show
    """


@config_group.command("show")
@json_option
@pass_runtime(check_schema=False)
def config_show(runtime: Runtime, as_json: bool) -> None:
    """Print the effective settings, with secrets masked.

    \b
    Example:
      ROLLOUT_SMTP_PASSWORD=s3cret rollout config show --json
    """
    data = describe(runtime.settings)
    if as_json:
        echo_json(data)
        return
    click.echo(f"# from {runtime.settings.source}, then environment, then flags")
    for key, value in data.items():
        if isinstance(value, dict):
            click.echo(f"\n[{key}]")
            for name, inner in value.items():
                click.echo(f"{name} = {_toml(inner)}")
        elif key != "source":
            click.echo(f"{key} = {_toml(value)}")


def _toml(value: object) -> str:
    if value is None:
        return "# (unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
