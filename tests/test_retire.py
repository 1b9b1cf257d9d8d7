"""The final step's prerequisites: configured, no writer feeding the legacy map (by name or by an open file)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rollout.enforcement.legacy import parse_legacy_map, running_writers
from rollout.errors import EnforcementError
from rollout.runtime import Runtime

from .conftest import Cli
from .plan_support import configure, import_locals, switch_off_every_cohort


def test_without_legacy_map_the_final_step_says_what_to_set(run: Cli, runtime: Runtime, tmp_path: Path) -> None:
    """After the last cohort `step` refuses, naming enforcement.legacy_map; status says the final step is next."""
    configure(runtime, tmp_path, backend="plain-list")
    import_locals(runtime, tmp_path, ["anna", "zoe"])
    switch_off_every_cohort(run, runtime, 1)
    result = run("step", "--yes", expect=1)
    assert "the final step needs enforcement.legacy_map" in result.stderr
    assert "next: the final step: retire the legacy path" in run("status").output
    configure(runtime, tmp_path, backend="plain-list", legacy_map=str(tmp_path / "pop"), retire="sometimes")
    assert "enforcement.retire 'sometimes' must be one of empty, check" in run("step", "--yes", expect=1).stderr


def wait_for_open(pid: int, path: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fds = Path(f"/proc/{pid}/fd")
        if any(str(path) == _link(fd) for fd in fds.iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError(f"{pid} never opened {path}")


def _link(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:
        return ""


@pytest.mark.parametrize(("mode", "named"), [("r+b", True), ("rb", False)])
def test_a_process_holding_the_map_open_for_writing_is_a_writer(tmp_path: Path, mode: str, named: bool) -> None:
    """Any process with the map's index open for writing is named; Postfix's readers are not."""
    legacy = parse_legacy_map(f"hash:{tmp_path / 'relay-ips'}", "hash")
    legacy.index.write_bytes(b"")
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time; f = open({str(legacy.index)!r}, {mode!r}); time.sleep(60)"]
    )
    try:
        wait_for_open(holder.pid, legacy.index)
        writers = running_writers(legacy, ())
        assert [(w.pid, w.how) for w in writers if w.pid == holder.pid] == (
            [(holder.pid, "has the map open for writing")] if named else []
        )
    finally:
        holder.kill()
        holder.wait(10)


def test_legacy_map_spec() -> None:
    """type:path as in main.cf, a bare path takes enforcement.map_type, an unknown type is an error."""
    assert parse_legacy_map("btree:/etc/postfix/relay", "hash").spec == "btree:/etc/postfix/relay"
    assert parse_legacy_map("/etc/postfix/pop-before-smtp", "hash").index == Path("/etc/postfix/pop-before-smtp.db")
    with pytest.raises(EnforcementError, match="map type 'mysql'"):
        parse_legacy_map("mysql:/etc/postfix/pop.cf", "hash")
