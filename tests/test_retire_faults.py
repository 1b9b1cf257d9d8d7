"""The final step and its undo killed between changing the legacy map (or main.cf) and the database commit: status
says so and the next step or undo makes the legacy side what the database says; undo in mode check puts main.cf back.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from rollout.models import AuditEvent
from rollout.runtime import Runtime

from .conftest import T0, Cli
from .plan_support import configure, import_locals, switch_off_every_cohort
from .scheduler_support import write_config

pytestmark = pytest.mark.skipif(
    shutil.which("postmap") is None or shutil.which("postconf") is None,
    reason="needs Postfix's postmap and postconf (installed by .ci/run)",
)
CLIENT = "192.0.2.7"  # an IP that logged in to POP: the legacy map lets it relay
NOW = T0 + timedelta(hours=1)  # the one cohort has been switched off: the final step is due
# Runs `rollout` and SIGKILLs it the moment the legacy map's files are in place and synced: before the commit.
KILLED_AFTER_THE_LEGACY_MAP_CHANGED = """
import os, runpy, signal, sys
from rollout.enforcement import legacy
synced = legacy.fsync_dir
def synced_then_killed(directory):
    synced(directory)
    os.kill(os.getpid(), signal.SIGKILL)
legacy.fsync_dir = synced_then_killed
sys.argv = ["rollout", *sys.argv[1:]]
runpy.run_module("rollout", run_name="__main__")
"""


def relays(pop: Path) -> bool:
    """Whether the legacy map in force (its index, what Postfix reads) lets CLIENT relay."""
    done = subprocess.run(["postmap", "-q", CLIENT, f"hash:{pop}"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip() == "OK"


def restrictions(postfix: Path) -> str:
    done = subprocess.run(
        ["postconf", "-c", str(postfix), "-h", "smtpd_recipient_restrictions"], capture_output=True, text=True
    )
    return done.stdout.strip()


def audit_actions(runtime: Runtime) -> list[str]:
    with runtime.sessions() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def final_step_due(run: Cli, runtime: Runtime, tmp_path: Path, **enforcement: str) -> Path:
    """One cohort switched off an hour ago; the legacy map (returned) lets CLIENT relay; next: the final step."""
    postfix = tmp_path / "postfix"
    pop = postfix / "pop-before-smtp"
    # no daemon names: another test's process called pop-before-smtp (in parallel runs) must not refuse the step
    configure(runtime, postfix, legacy_map=f"hash:{pop}", legacy_writers=(), **enforcement)
    postfix.mkdir(exist_ok=True)
    pop.write_text(f"{CLIENT}\tOK\n")
    subprocess.run(["postmap", f"hash:{pop}"], check=True, timeout=30)
    import_locals(runtime, tmp_path, ["anna", "zoe"])
    switch_off_every_cohort(run, runtime, 1)
    assert relays(pop)
    return pop


def rollout_process(
    runtime: Runtime, tmp_path: Path, cli_env: dict[str, str], *args: str, killed: bool = False
) -> subprocess.CompletedProcess[str]:
    """`rollout ARGS` as its own process with the test's settings (SIGKILLed after the legacy map changed)."""
    s = runtime.settings.enforcement
    keys = ("map_path", "legacy_map", "retire", "postconf_command", "reload_command", "soak_hours", "legacy_writers")
    config = write_config(tmp_path / "rollout.toml", runtime, enforcement={k: getattr(s, k) for k in keys})
    start = ["-c", KILLED_AFTER_THE_LEGACY_MAP_CHANGED] if killed else ["-m", "rollout"]
    env = {**cli_env, "ROLLOUT_NOW": NOW.isoformat()}
    argv = [sys.executable, *start, "--config", str(config), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def test_a_final_step_killed_after_emptying_the_map(
    run: Cli, runtime: Runtime, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Killed after the legacy map was emptied, before the database recorded the final step: status says so; the next
    step puts the map back (audited) and takes the final step again; its undo brings back the original map."""
    pop = final_step_due(run, runtime, tmp_path)
    done = rollout_process(runtime, tmp_path, cli_env, "step", "--yes", killed=True)
    assert done.returncode == -9, done.stderr
    assert not relays(pop)  # the empty map was in force when the process died
    status = run("status").output
    assert json.loads(run("status", "--json").output)["phase"] == "switch-off"
    assert f"LEGACY MAP: the final step changed hash:{pop} but the database did not record it" in status
    assert f"the legacy path is retired: hash:{pop}" in run("step", "--yes").output
    assert not relays(pop)
    assert audit_actions(runtime).count("legacy.repair") == 1 and "LEGACY MAP" not in run("status").output
    run("undo", "--reason", "test")
    assert relays(pop)  # what the final step kept was the original map, not the one the killed run had emptied


def test_an_undo_killed_after_restoring_the_map(
    run: Cli, runtime: Runtime, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Killed after the kept map was put back, before the database recorded the undo: status says so; the database
    still says retired, so the next command empties the map again; undo then restores it for good."""
    pop = final_step_due(run, runtime, tmp_path)
    run("step", "--yes")
    done = rollout_process(runtime, tmp_path, cli_env, "undo", "--reason", "test", killed=True)
    assert done.returncode == -9, done.stderr
    assert relays(pop)
    assert json.loads(run("status", "--json").output)["phase"] == "done"
    status = run("status").output
    assert f"LEGACY MAP: the undo of the final step changed hash:{pop} but the database did not record it" in status
    assert "the rollout is done" in run("step", "--yes", expect=1).stderr
    assert not relays(pop)  # the database says retired: the map says so again
    assert audit_actions(runtime).count("legacy.repair") == 1
    assert f"the legacy map hash:{pop} is back" in run("undo", "--reason", "test").output
    assert relays(pop)
    assert json.loads(run("status", "--json").output)["phase"] == "switch-off"


def postfix_config(postfix: Path, restrictions: str) -> None:
    """A main.cf that postconf reads (nothing runs it): the restrictions as the operator left them."""
    (postfix / "main.cf").write_text(
        f"compatibility_level = 3.6\nsmtpd_recipient_restrictions = {restrictions}\n", encoding="utf-8"
    )
    (postfix / "master.cf").write_text("", encoding="utf-8")


def script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def check_mode(run: Cli, runtime: Runtime, tmp_path: Path, reload_body: str) -> tuple[Path, str, str]:
    """retire = "check", main.cf without the legacy map, the final step taken: (main.cf's folder, the restrictions
    before the operator took the legacy map out, and after)."""
    postfix = tmp_path / "postfix"
    postfix.mkdir()
    ours = f"check_sender_access hash:{postfix / 'smtp-after-pop-disabled'}"
    legacy = f"check_client_access hash:{postfix / 'pop-before-smtp'}"
    with_legacy = f"permit_mynetworks, permit_sasl_authenticated, {ours}, {legacy}, reject_unauth_destination"
    without = f"permit_mynetworks, permit_sasl_authenticated, {ours}, reject_unauth_destination"
    postfix_config(postfix, without)
    reload = script(tmp_path / "reload", reload_body)
    final_step_due(
        run, runtime, tmp_path, retire="check", postconf_command=f"postconf -c {postfix}", reload_command=reload
    )
    run("step", "--yes")
    assert json.loads(run("status", "--json").output)["retired"]["mode"] == "check"
    return postfix, with_legacy, without


def test_undo_in_check_mode_puts_the_main_cf_element_back(run: Cli, runtime: Runtime, tmp_path: Path) -> None:
    """retire = "check": undo puts `check_client_access <legacy map>` back into smtpd_recipient_restrictions right
    after our map, reloads Postfix and says so; the phase is switch-off again."""
    postfix, with_legacy, _without = check_mode(run, runtime, tmp_path, f'echo reloaded >> "{tmp_path}/reloads"')
    out = run("undo", "--reason", "test").output
    assert restrictions(postfix) == with_legacy
    assert f"main.cf: smtpd_recipient_restrictions = {with_legacy} (Postfix reloaded)" in out
    assert (tmp_path / "reloads").read_text() == "reloaded\n"
    assert json.loads(run("status", "--json").output)["phase"] == "switch-off"
    with runtime.sessions() as session:
        undo = session.scalars(select(AuditEvent).where(AuditEvent.action == "undo")).one()
    assert undo.details["main_cf"]["after"] == with_legacy


def test_undo_in_check_mode_killed_while_postfix_reloads(
    run: Cli, runtime: Runtime, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Killed after main.cf got the element back, before the database recorded the undo: the next step takes it out
    of main.cf again (the database says retired), audited; undo then puts it back."""
    postfix, with_legacy, without = check_mode(run, runtime, tmp_path, "kill -9 $PPID; sleep 5")
    done = rollout_process(runtime, tmp_path, cli_env, "undo", "--reason", "test")
    assert done.returncode == -9, done.stderr
    assert restrictions(postfix) == with_legacy
    assert "LEGACY MAP: the undo of the final step changed" in run("status").output
    configure(runtime, postfix, reload_command="true")
    assert "the rollout is done" in run("step", "--yes", expect=1).stderr
    assert restrictions(postfix) == without
    assert audit_actions(runtime).count("legacy.repair") == 1
    run("undo", "--reason", "test")
    assert restrictions(postfix) == with_legacy
    assert not [p for p in os.listdir(postfix) if p.endswith(".intent")]
