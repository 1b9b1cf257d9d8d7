"""Start-up: each command imports what it uses, so that every `rollout` process starts quickly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Runs the CLI as `rollout ARGS…` would and writes the names of the modules it loaded to a file.
PROBE = """
import sys
from rollout.cli import cli
out, args = sys.argv[1], sys.argv[2:]
try:
    cli.main(args, prog_name="rollout")
except SystemExit as exc:
    if exc.code:
        raise
with open(out, "w") as f:
    f.write("\\n".join(sorted(sys.modules)))
"""

COMMAND_MODULES = {
    "rollout.cli.campaign",
    "rollout.cli.configuration",
    "rollout.cli.database",
    "rollout.cli.inventory",
    "rollout.cli.operate",
    "rollout.cli.plan",
    "rollout.cli.scan",
}


def loaded_modules(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> set[str]:
    out = tmp_path / "modules.txt"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return set(out.read_text().split())


def top_level(modules: set[str]) -> set[str]:
    return {m.partition(".")[0] for m in modules}


def test_help_loads_no_command_and_no_database_library(tmp_path: Path) -> None:
    """`rollout --help` lists every command without importing one, SQLAlchemy, Alembic, Jinja2 or importlib.metadata."""
    modules = loaded_modules(tmp_path, "--help")
    assert not modules & COMMAND_MODULES
    assert not top_level(modules) & {"sqlalchemy", "alembic", "jinja2"}
    assert "importlib.metadata" not in modules


@pytest.mark.parametrize("args", [["scan", "--help"], ["legacy", "--help"], ["config", "show"]])
def test_commands_that_need_no_database_load_no_sqlalchemy(tmp_path: Path, args: list[str]) -> None:
    """A command's help, and `config show`, start without SQLAlchemy; only the command's own module is loaded."""
    modules = loaded_modules(tmp_path, *args)
    assert "sqlalchemy" not in top_level(modules)
    assert len(modules & COMMAND_MODULES) == 1


def test_a_command_on_a_current_schema_loads_no_alembic(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """`rollout legacy --json` on a database at head checks the schema without Alembic, renders nothing with Jinja2."""
    modules = loaded_modules(tmp_path, "legacy", "--json", env=cli_env)
    assert "rollout.cli.scan" in modules
    assert not top_level(modules) & {"alembic", "mako", "pygments", "jinja2"}
