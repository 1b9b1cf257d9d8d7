"""Enforcement backends: atomic swaps with the real `postmap`, fail closed, versions kept, plain list."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rollout.clock import ManualClock
from rollout.config import EnforcementSettings
from rollout.enforcement import MapEntry, backend_for
from rollout.errors import EnforcementError
from rollout.models import AuditEvent, Cohort, MapVersion
from rollout.runtime import Runtime

from .conftest import T0, Cli
from .plan_support import apply_plan, configure, import_locals
from .scheduler_support import GATES_OFF

pytestmark = pytest.mark.skipif(
    shutil.which("postmap") is None, reason="needs Postfix's postmap (installed by .ci/run)"
)
LOCALS = ["anna", "bert", "carl", "dora"]


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def planned(run: Cli, runtime: Runtime, tmp_path: Path) -> Path:
    map_path = configure(runtime, tmp_path)
    import_locals(runtime, tmp_path, LOCALS)
    apply_plan(run, 2)
    return map_path


def snapshot(runtime: Runtime, map_path: Path) -> tuple:
    with runtime.sessions() as session:
        stages = tuple(session.scalars(select(Cohort.stage).order_by(Cohort.id)))
        versions = session.scalar(select(func.count()).select_from(MapVersion))
    index = Path(str(map_path) + ".db")
    return (
        stages,
        versions,
        map_path.read_text() if map_path.exists() else None,
        index.read_bytes() if index.exists() else None,
    )


def postmap_query(map_path: Path, key: str) -> str:
    done = subprocess.run(["postmap", "-q", key, f"hash:{map_path}"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def test_real_postmap_answers_the_action(run: Cli, runtime: Runtime, planned: Path) -> None:
    """After a step, `postmap -q` on the map in force gives our REJECT line; others get nothing."""
    run("step", "--yes")
    assert postmap_query(planned, "anna@example.de").startswith(
        "REJECT 5.7.1 SMTP-after-POP is switched off for anna@example.de"
    )
    assert postmap_query(planned, "dora@example.de") == ""


def test_failed_postmap_leaves_map_and_database(
    run: Cli, runtime: Runtime, clock: ManualClock, planned: Path, tmp_path: Path
) -> None:
    """postmap failing: Error naming it, the old map in force, the database unchanged."""
    run("step", "--yes")
    before = snapshot(runtime, planned)
    configure(runtime, tmp_path, postmap_command=script(tmp_path, "pm", "echo 'postmap: fatal: disk full' >&2; exit 1"))
    clock.advance(timedelta(hours=1))
    out = run("step", "--yes", expect=1).output
    assert "disk full" in out and "map in force is unchanged" in out
    assert snapshot(runtime, planned) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".smtp-after-pop-disabled.new")]


def test_failed_verification_fails_closed(run: Cli, runtime: Runtime, planned: Path, tmp_path: Path) -> None:
    """If the new index answers wrongly for a sample, nothing is swapped."""
    wrapper = script(
        tmp_path,
        "pm",
        'case "$1" in -q) cat >/dev/null; echo "anna@example.de\tOK"; exit 0;; *) exec postmap "$@";; esac',
    )
    configure(runtime, tmp_path, postmap_command=wrapper)
    before = snapshot(runtime, planned)
    assert "expected 'REJECT 5.7.1" in run("step", "--yes", expect=1).output
    assert snapshot(runtime, planned) == before


def test_killed_between_postmap_and_rename(
    run: Cli, runtime: Runtime, clock: ManualClock, planned: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A process killed after postmap, before the rename: old map in force, database unchanged, next step works."""
    run("step", "--yes")
    before = snapshot(runtime, planned)
    killer = script(tmp_path, "pm-kill", 'postmap "$@"; kill -9 $PPID; sleep 5')
    env = {
        **cli_env,
        "ROLLOUT_NOW": (T0 + timedelta(hours=1)).isoformat(),
        "ROLLOUT_ENFORCEMENT_MAP_PATH": str(planned),
        "ROLLOUT_ENFORCEMENT_POSTMAP_COMMAND": killer,
        "ROLLOUT_ENFORCEMENT_SOAK_HOURS": "0",
        "ROLLOUT_ROLLOUT_WINDOW": "00:00-23:59",
        "ROLLOUT_ROLLOUT_SKIP_WEEKENDS": "false",
        **{"ROLLOUT_" + key.replace(".", "_").upper(): value for key, value in GATES_OFF.items()},
    }
    done = subprocess.run(
        [sys.executable, "-m", "rollout", "step", "--yes"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -9
    assert snapshot(runtime, planned) == before
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".smtp-after-pop-disabled.new")]  # the half-done swap
    clock.advance(timedelta(hours=1))
    run("step", "--yes")
    assert "carl@example.de" in planned.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".smtp-after-pop-disabled.new")]


def test_hand_edited_map_is_reported_as_drift(run: Cli, runtime: Runtime, clock: ManualClock, planned: Path) -> None:
    """A map changed behind rollout's back is replaced at the next swap and the audit says so."""
    run("step", "--yes")
    planned.write_text(planned.read_text() + "intruder@example.de\tOK\n")
    clock.advance(timedelta(hours=1))
    run("step", "--yes")
    assert "intruder@example.de" not in planned.read_text()
    with runtime.sessions() as session:
        drift = [
            e.details["map_drifted"]
            for e in session.scalars(select(AuditEvent).where(AuditEvent.action == "step").order_by(AuditEvent.id))
        ]
    assert drift == [False, True]


def test_previous_versions_are_kept(tmp_path: Path) -> None:
    """Each swap keeps a copy of the map it replaced; only the newest N stay."""
    backend = backend_for(EnforcementSettings(map_path=str(tmp_path / "m"), keep_versions=2))
    for n in range(4):
        backend.publish([MapEntry(f"user{i}@example.de", "reject") for i in range(n + 1)])
    kept = sorted(p.name for p in (tmp_path / "m.versions").iterdir())
    assert kept == ["0002", "0003"]
    assert (tmp_path / "m.versions" / "0003" / "m").read_text().count("REJECT") == 3
    assert (tmp_path / "m.versions" / "0003" / "m.db").exists()


def test_missing_postmap_is_a_clear_error(tmp_path: Path) -> None:
    """A wrong postmap_command names the setting."""
    backend = backend_for(EnforcementSettings(map_path=str(tmp_path / "m"), postmap_command="/nonexistent/postmap"))
    with pytest.raises(EnforcementError, match="enforcement.postmap_command"):
        backend.publish([MapEntry("a@example.de", "reject")])
    assert not (tmp_path / "m").exists()


def test_plain_list_names_exactly_the_refused_addresses(tmp_path: Path) -> None:
    """The plain list (for MTAs without a warn action) holds the addresses at defer and reject, never warn."""
    backend = backend_for(EnforcementSettings(backend="plain-list", list_path=str(tmp_path / "disabled.txt")))
    entries = [MapEntry("w@example.de", "warn"), MapEntry("r@example.de", "reject"), MapEntry("d@example.de", "defer")]
    backend.publish(entries)
    assert (tmp_path / "disabled.txt").read_text() == "d@example.de\nr@example.de\n"


def test_plain_list_backend(run: Cli, runtime: Runtime, planned: Path, tmp_path: Path) -> None:
    """The plain-list backend writes one refused address per line, nothing for warn."""
    configure(runtime, tmp_path, backend="plain-list", ladder=("warn", "reject"))
    run("step", "--yes")
    assert (tmp_path / "disabled.txt").read_text() == ""
    run("step", "--yes")
    assert (tmp_path / "disabled.txt").read_text() == "anna@example.de\nbert@example.de\n"
    assert not planned.exists()
