"""CI (.ci/run) checks format, lint and types, then runs the README's test command on both databases."""

import re

from .conftest import REPO


def ci_steps() -> list[str]:
    return [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]


def test_ci_checks_format_lint_and_types_before_the_tests() -> None:
    """ruff format --check, ruff check and mypy run, each under its header, before the first test pass."""
    steps = ci_steps()
    first_tests = next(i for i, step in enumerate(steps) if step.endswith("python -m pytest"))
    for check in ("ruff format --check .", "ruff check .", "mypy"):
        assert check in steps[:first_tests], f".ci/run does not run `{check}` before the tests"
        assert steps[steps.index(check) - 1].startswith('echo "== '), f"`{check}` has no header in .ci/run"


def test_ci_runs_the_readmes_test_command_on_sqlite_and_postgresql() -> None:
    """The command the README gives for the tests is the one CI runs, once as it is and once on PostgreSQL."""
    readme = (REPO / "README.md").read_text()
    commands = set(re.findall(r"^(python -m pytest\b.*)$", readme, flags=re.M))
    assert commands == {"python -m pytest"}, "the README's test command changed: change .ci/run with it"
    steps = ci_steps()
    assert "python -m pytest" in steps
    assert any(re.fullmatch(r'ROLLOUT_TEST_DATABASE_URL="\$\w+" python -m pytest', step) for step in steps)
