"""Settings: file < environment < flags; secrets masked."""

from pathlib import Path

import pytest

from rollout.config import describe, load_settings
from rollout.errors import ConfigError


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    """The environment overrides the file, and flags override both."""
    path = tmp_path / "rollout.toml"
    path.write_text(
        'database_url = "sqlite:///file.db"\n'
        '[smtp]\nhost = "mx.file"\nport = 2525\n'
        '[scan]\nlocal_domains = ["a.example"]\n'
    )
    settings = load_settings(path, environ={"ROLLOUT_SMTP_HOST": "mx.env", "ROLLOUT_DATABASE_URL": "sqlite:///env.db"})
    assert settings.smtp.host == "mx.env"
    assert settings.smtp.port == 2525
    assert settings.database_url == "sqlite:///env.db"
    assert settings.scan.local_domains == ("a.example",)
    flagged = load_settings(
        path, environ={"ROLLOUT_DATABASE_URL": "sqlite:///env.db"}, overrides={"database_url": "sqlite:///flag.db"}
    )
    assert flagged.database_url == "sqlite:///flag.db"


def test_rollout_config_env_names_the_file(tmp_path: Path) -> None:
    """ROLLOUT_CONFIG points at the file when --config is not given."""
    path = tmp_path / "elsewhere.toml"
    path.write_text('[notices]\ndefault_locale = "de"\n')
    assert load_settings(environ={"ROLLOUT_CONFIG": str(path)}).notices.default_locale == "de"


def test_environment_values_are_converted_to_the_setting_type() -> None:
    """Numbers, booleans and lists can be given as environment strings."""
    settings = load_settings(
        environ={
            "ROLLOUT_SCAN_WINDOW_MINUTES": "15",
            "ROLLOUT_SCAN_SESSION_TRACKING": "no",
            "ROLLOUT_SCAN_TRUSTED_NETWORKS": "10.0.0.0/8, 127.0.0.0/8",
        }
    )
    assert settings.scan.window_minutes == 15
    assert settings.scan.session_tracking is False
    assert settings.scan.trusted_networks == ("10.0.0.0/8", "127.0.0.0/8")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("nonsense = 1\n", "unknown setting 'nonsense'"),
        ('[smtp]\nport = "many"\n', "must be a number"),
        ("[smtp\n", "not valid TOML"),
        ("smtp = 3\n", "must be a table"),
    ],
)
def test_bad_config_files_are_named_and_explained(tmp_path: Path, toml: str, message: str) -> None:
    """A wrong setting fails with the file name and what is wrong."""
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(path, environ={})
    assert "bad.toml" in str(info.value)


def test_describe_masks_secrets() -> None:
    """config show never prints the SMTP password or a database password."""
    settings = load_settings(
        environ={"ROLLOUT_SMTP_PASSWORD": "hunter2", "ROLLOUT_DATABASE_URL": "postgresql://rollout:pw@db/rollout"}
    )
    data = describe(settings)
    assert data["smtp"]["password"] == "********"
    assert "pw" not in data["database_url"] and "rollout:********@db" in data["database_url"]


def test_config_show_command_masks_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rollout config show` prints effective settings with the secret masked."""
    from click.testing import CliRunner

    from rollout.cli import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli, ["config", "show"], env={"ROLLOUT_SMTP_PASSWORD": "hunter2", "ROLLOUT_SMTP_HOST": "mx.example"}
    )
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert 'host = "mx.example"' in result.output
    assert 'password = "********"' in result.output


def test_secrets_cannot_be_given_as_flags() -> None:
    """There is no command-line flag for the SMTP password."""
    from click.testing import CliRunner

    from rollout.cli import cli

    result = CliRunner().invoke(cli, ["--smtp-password", "x", "config", "show"])
    assert result.exit_code == 2
