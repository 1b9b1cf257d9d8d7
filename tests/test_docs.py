"""Every command has help with an example and is listed in the README."""

import re

import click
import pytest

from rollout.cli import cli
from rollout.cli._base import COMMANDS

from .conftest import REPO


def all_commands(group: click.Group = cli, prefix: str = "rollout") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # loads each lazily registered command
        command = group.get_command(ctx, name)
        assert command is not None, f"{prefix} {name} is listed but cannot be loaded"
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found += all_commands(command, path)
        else:
            found.append((path, command))
    return found


@pytest.mark.parametrize(("path", "command"), all_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_command_has_help_with_an_example(path: str, command: click.Command) -> None:
    """Each command explains itself and shows an example invocation."""
    assert command.help and "Example" in command.help, f"{path} lacks help with an example"
    assert command.get_short_help_str(limit=200)


def test_readme_lists_every_command_with_its_summary() -> None:
    """The README's command table matches the commands and their one-line help."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("<!-- commands -->")[1].split("<!-- /commands -->")[0]
    documented = dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|$", table, flags=re.M))
    actual = {path: command.get_short_help_str(limit=200) for path, command in all_commands()}
    assert sorted(documented) == sorted(actual)
    for path, summary in actual.items():
        assert documented[path] == summary, f"README summary of {path} differs from --help"


def test_command_table_gives_each_command_its_own_summary() -> None:
    """`rollout --help` lists commands from a table without loading them: each entry names its command and summary."""
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name, (_, summary) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(limit=200) == summary, f"update the summary of {name} in rollout/cli/_base.py"
