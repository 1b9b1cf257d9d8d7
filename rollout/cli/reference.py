"""docs/cli.md, written from the commands' own ``--help``: ``python -m rollout.cli.reference``.

The help text is the single source; tests/test_docs.py regenerates the page and fails while the
file in the repository differs, so the reference cannot drift from the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._base import cli

WIDTH = 100  # help is wrapped to a fixed width, whatever the terminal, so the page is reproducible
PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

HEADER = """\
# Command reference

Generated from each command's `--help` by `python -m rollout.cli.reference` (a test fails while
this page differs from the commands). Exit codes: 0 ok, 1 operational failure (`Error: …`),
2 usage error. Every command reads the configuration as described in
[configuration.md](configuration.md); `rollout --help` lists the commands.
"""


def walk(command: click.Command, parent: click.Context | None = None, name: str = "rollout") -> list[tuple[str, str]]:
    """(command path, help text) for ``command`` and every command below it, in listing order."""
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    ctx = click.Context(command, info_name=name, parent=parent, **settings)  # as click builds it to run the command
    found = [(ctx.command_path, command.get_help(ctx))]
    if isinstance(command, click.Group):
        for sub_name in command.list_commands(ctx):
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                found += walk(sub, ctx, sub_name)
    return found


def render() -> str:
    """The whole page: one section per command, its help verbatim."""
    sections = [HEADER]
    for path, text in walk(cli):
        sections.append(f"## `{path}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    """Write the page (or, with ``--check``, exit 1 if it is out of date)."""
    args = sys.argv[1:] if argv is None else argv
    page = render()
    if "--check" in args:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != page:
            print(f"{PAGE} is out of date: run python -m rollout.cli.reference", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
