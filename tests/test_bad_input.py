"""Every command, fed bad input: exit 1 (or 2 for misuse) with one `Error:` line, never a traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rollout.cli import cli
from rollout.config import load_settings

Setup = Callable[[Path], dict[str, str]]


def env(**values: str) -> Setup:
    return lambda tmp: dict(values)


def config_file(text: bytes) -> Setup:
    def setup(tmp: Path) -> dict[str, str]:
        (tmp / "bad.toml").write_bytes(text)
        return {"ROLLOUT_CONFIG": str(tmp / "bad.toml")}

    return setup


def file_as_map_dir(tmp: Path) -> dict[str, str]:
    (tmp / "postfix").write_text("a file, not a directory\n")
    return {"ROLLOUT_ENFORCEMENT_MAP_PATH": str(tmp / "postfix" / "map")}


def not_sqlite(tmp: Path) -> dict[str, str]:
    (tmp / "junk.db").write_bytes(b"this is not an SQLite database\n" * 200)
    return {"ROLLOUT_DATABASE_URL": f"sqlite:///{tmp / 'junk.db'}"}


def non_utf8_csv(tmp: Path) -> dict[str, str]:
    (tmp / "inv.csv").write_bytes("mailbox,customer_id\nj\xf6rg@example.de,K1\n".encode("latin-1"))
    return {}


def a_log(tmp: Path) -> dict[str, str]:
    (tmp / "mail.log").write_text("Mar  2 10:00:00 mx postfix/qmgr[9]: ABCDEF0123: removed\n")
    return {}


NONE: Setup = env()
# (command, arguments, set-up, allowed exit codes). {tmp} in an argument is the test's directory.
CASES: list[tuple[str, list[str], Setup, set[int]]] = [
    ("config show", [], config_file("x = 'caf\xe9'\n".encode("latin-1")), {1}),
    ("config show", [], lambda tmp: {"ROLLOUT_CONFIG": str(tmp)}, {1}),
    ("config show", [], config_file(b'[scan]\ntrusted_networks = ["banana"]\n'), {1}),
    ("config show", [], config_file(b"[scan\n"), {1}),
    ("config show", [], config_file(b"nonsense = 1\n"), {1}),
    ("config show", [], env(ROLLOUT_NOTICES_HELP_URL="javascript:alert(1)"), {1}),
    ("config show", [], env(ROLLOUT_SMTP_PORT="99999"), {1}),
    ("scan", ["{tmp}/mail.log"], env(ROLLOUT_SCAN_TRUSTED_NETWORKS="1.2.3.4/99"), {1}),
    ("scan", ["{tmp}/mail.log"], env(ROLLOUT_SCAN_TIMEZONE="Mars/Phobos"), {1}),
    ("scan", ["{tmp}/no-such.log"], NONE, {1, 2}),
    ("status", [], env(ROLLOUT_NOW="yesterday"), {1}),
    ("web user add", ["anna"], env(ROLLOUT_NOW="yesterday"), {1}),
    ("web user list", [], env(ROLLOUT_SMTP_PORT="99999"), {1}),
    ("web user remove", ["nobody"], NONE, {1}),
    ("status", [], env(ROLLOUT_NOW="9999-12-31T23:00:00"), {1}),
    ("status", ["--wait-for-step", "1", "--timeout", "99999999999d"], NONE, {2}),
    ("status", ["--wait-for-step", "7", "--timeout", "1s"], NONE, {1}),
    ("plan", ["--cohorts", "2", "--start", "2026-03-02", "--every", "99999999999d"], NONE, {2}),
    ("plan", ["--cohorts", "2", "--start", "9999-12-31 23:00", "--every", "1h"], NONE, {1}),
    ("plan", ["--cohorts", "2", "--start", "2026-03-02", "--every", "1h", "--tz", "Mars/Phobos"], NONE, {1}),
    ("plan", ["--cohorts", "2", "--start", "2026-03-02", "--every", "1h", "--window", "25:00-26:00"], NONE, {1}),
    ("plan", ["--cohorts", "0", "--start", "2026-03-02", "--every", "1h"], NONE, {2}),
    ("step", ["--yes"], file_as_map_dir, {1}),
    ("step", ["--yes"], NONE, {1}),
    ("step", ["--force"], NONE, {1, 2}),
    ("undo", ["--to-step", "-5"], NONE, {1, 2}),
    ("pause", [], NONE, {1, 2}),
    ("resume", [], NONE, {1}),
    ("exempt", ["nobody@example.org", "--until", "2026-06-01", "--reason", "x"], NONE, {1}),
    ("exempt", ["anna@example.org", "--until", "9999-01-01", "--reason", "x"], NONE, {1}),
    ("exempt", ["not an address", "--until", "2026-06-01", "--reason", "x"], NONE, {1}),
    ("exempt", [], NONE, {2}),
    ("lookup", ["nobody@example.org"], NONE, {1}),
    ("legacy", ["--since", "banana"], NONE, {2}),
    ("inventory import", ["{tmp}/inv.csv"], non_utf8_csv, {1}),
    ("inventory import", ["{tmp}/missing.csv"], NONE, {2}),
    ("inventory stats", [], env(ROLLOUT_DATABASE_URL="mysql://root@localhost/rollout"), {1}),
    ("db current", [], env(ROLLOUT_DATABASE_URL="not a url"), {1}),
    ("db current", [], env(ROLLOUT_DATABASE_URL="sqlite:////nonexistent/dir/x.db"), {1}),
    ("db current", [], not_sqlite, {1}),
    ("db current", [], env(ROLLOUT_DATABASE_URL="postgresql://u:hunter2@127.0.0.1:1/none"), {1}),
    ("db upgrade", ["--revision", "nosuch"], NONE, {1}),
    ("campaign start", ["--first", "9999-11-01", "--weeks", "52"], NONE, {1}),
    ("campaign start", ["--first", "2026-03-02", "--weeks", "99"], NONE, {2}),
    ("campaign start", ["--first", "2026-03-02", "--tz", "Mars/Phobos"], NONE, {1}),
    ("campaign start", ["--first", "2026-03-02", "--at", "25:99"], NONE, {1, 2}),
    ("campaign show", [], env(ROLLOUT_DATABASE_URL="sqlite:////nonexistent/dir/x.db"), {1}),
    ("notify", [], NONE, {1}),
    ("notify", ["--wave", "99"], NONE, {1, 2}),
    ("demo", ["{tmp}/mail.log"], a_log, {1, 2}),
    ("scheduler", [], env(ROLLOUT_DATABASE_URL="mysql://root@localhost/rollout"), {1}),
    ("attribute", ["999", "anna@example.de", "--reason", "x"], NONE, {1}),
    ("attribute", ["banana", "anna@example.de", "--reason", "x"], NONE, {2}),
    ("attribute", ["1", "anna@example.de"], NONE, {2}),
    ("dismiss", ["999", "--reason", "x"], NONE, {1}),
    ("dismiss", ["-1", "--reason", "x"], NONE, {1, 2}),
]


def _leaf_commands() -> set[str]:
    ctx = click.Context(cli)
    found: set[str] = set()

    def walk(group: click.Group, prefix: str) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if isinstance(command, click.Group):
                walk(command, f"{prefix}{name} ")
            elif command is not None:
                found.add(prefix + name)

    walk(cli, "")
    return found


def test_every_command_has_bad_input_cases() -> None:
    """The table below covers every command the CLI has: a new command needs its bad inputs here."""
    assert _leaf_commands() - {c for c, *_ in CASES} == set()


@pytest.mark.parametrize("command, args, setup, codes", CASES, ids=[f"{c} {' '.join(a)}"[:60] for c, a, *_ in CASES])
def test_bad_input_is_one_error_line(
    command: str,
    args: list[str],
    setup: Setup,
    codes: set[int],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exit 1 or 2, exactly one line starting `Error:`, no traceback, nothing created where it should not be."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("ROLLOUT_") and n != "ROLLOUT_TEST_DATABASE_URL"]:
        monkeypatch.delenv(name)
    environment = {
        "ROLLOUT_DATABASE_URL": database_url,
        "ROLLOUT_ENFORCEMENT_MAP_PATH": str(tmp_path / "map" / "m"),
        "ROLLOUT_ENFORCEMENT_LIST_PATH": str(tmp_path / "map" / "l.txt"),
        **setup(tmp_path),
    }
    argv = [*command.split(), *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    result = CliRunner().invoke(cli, argv, env=environment)
    output = result.output + (
        result.stderr if result.stderr_bytes is not None and result.stderr not in result.output else ""
    )
    assert result.exit_code in codes, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    assert [line for line in output.splitlines() if line.startswith("Error:")].__len__() == 1, output
    assert not Path("/nonexistent").exists()


def test_database_passwords_are_masked_everywhere(tmp_path: Path) -> None:
    """`config show` and connection errors never print a password, in the user part or as ?password=."""
    for url in [
        "postgresql://u:hunter2@127.0.0.1:1/db",
        "postgresql://u@127.0.0.1:1/db?password=hunter2&connect_timeout=1",
    ]:
        shown = CliRunner().invoke(cli, ["--database", url, "config", "show"])
        failed = CliRunner().invoke(cli, ["--database", url, "status"])
        assert shown.exit_code == 0 and failed.exit_code == 1
        assert "hunter2" not in shown.output + failed.output and "********" in shown.output
        assert "Error: cannot open the database" in failed.output


def test_settings_are_checked_when_loaded() -> None:
    """Networks, time zones, URLs and paths are checked when the settings load, named in the message."""
    for environ, named in [
        ({"ROLLOUT_SCAN_TRUSTED_NETWORKS": "banana"}, "scan.trusted_networks"),
        ({"ROLLOUT_SCAN_TIMEZONE": "Mars/Phobos"}, "scan.timezone"),
        ({"ROLLOUT_ROLLOUT_TIMEZONE": "Nowhere"}, "rollout.timezone"),
        ({"ROLLOUT_ENFORCEMENT_HELP_URL": "not a url"}, "enforcement.help_url"),
        ({"ROLLOUT_DATABASE_URL": "mysql://x/y"}, "database_url"),
        ({"ROLLOUT_ENFORCEMENT_MAP_PATH": "/etc/hostname/map"}, "enforcement.map_path"),
    ]:
        with pytest.raises(Exception) as caught:
            load_settings(environ=environ)
        assert named in str(caught.value)
