"""The shipped examples stay true: the configuration reference and the scheduler's unit."""

import dataclasses
import re
import shlex
import tomllib

import click
import pytest

from rollout.config import Settings, load_settings

from .conftest import REPO


def test_example_config_lists_every_setting_with_its_default() -> None:
    """examples/rollout.toml names every setting, and each value is the default."""
    path = REPO / "examples" / "rollout.toml"
    text = path.read_text()
    defaults = Settings()
    loaded = load_settings(path, environ={})
    assert dataclasses.replace(loaded, source="defaults") == defaults
    data = tomllib.loads(text)
    for section in dataclasses.fields(Settings):
        value = getattr(defaults, section.name)
        if section.name == "source":
            continue
        if not dataclasses.is_dataclass(value):
            assert section.name in data
            continue
        for setting in dataclasses.fields(value):
            present = (
                setting.name in data[section.name] or f"# {setting.name} =" in text or f"# {setting.name}:" in text
            )
            assert present, f"examples/rollout.toml lacks [{section.name}] {setting.name}"


def test_crontab_and_unit_name_real_commands_and_options() -> None:
    """Every `rollout …` line of the crontab and the systemd unit names a command and options that exist."""
    from rollout.cli import cli

    ctx = click.Context(cli)
    invocations = []
    for name in ("crontab", "rollout-scheduler.service"):
        for line in (REPO / "examples" / name).read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            for segment in re.split(r"&&|\||>|;", line.replace("ExecStart=", "")):
                words = shlex.split(segment)
                starts = [
                    i
                    for i, w in enumerate(words)
                    if w.rpartition("/")[2] == "rollout"
                    and i + 1 < len(words)
                    and words[i + 1] in cli.list_commands(ctx)
                ]
                invocations += [words[i + 1 :] for i in starts[-1:]]
    assert len(invocations) >= 4
    for words in invocations:
        command: click.Command = cli
        while isinstance(command, click.Group):
            word = words.pop(0)
            command = command.get_command(ctx, word) or pytest.fail(
                f"examples name `rollout … {word}`, which does not exist"
            )
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        for word in words:
            if word.startswith("--"):
                assert word.split("=")[0] in options, f"`rollout {command.name}` has no option {word}"
