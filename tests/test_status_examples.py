"""The shipped examples stay true: the configuration reference and the scheduler's unit."""

import dataclasses
import tomllib

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
            present = setting.name in data[section.name] or f"# {setting.name} =" in text or f"# {setting.name}:" in text
            assert present, f"examples/rollout.toml lacks [{section.name}] {setting.name}"


def test_systemd_unit_runs_the_scheduler_and_stops_with_sigterm() -> None:
    """The unit starts `rollout scheduler` and gives a running job time to finish on stop."""
    unit = (REPO / "examples" / "rollout-scheduler.service").read_text()
    assert "ExecStart=/opt/rollout/venv/bin/rollout scheduler" in unit and "KillSignal=SIGTERM" in unit
