"""Atomic file replacement, the kept previous versions, the swap lock and the intent journal.

Every file and directory is created with an explicit mode (0644 / 0755), whatever the umask:
Postfix's daemons must be able to read the map, and no one else may write it. Temp files are
unique (``mkstemp``: ``O_EXCL``, unpredictable names), and a swap holds ``.NAME.lock`` next to
the map, so the clean-up of a killed run's leftovers never removes a file another swap is writing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import EnforcementError

FILE_MODE = 0o644
DIR_MODE = 0o755
UNCHANGED = "the map in force is unchanged"


def read_if_exists(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise EnforcementError(f"cannot read the map in force {path}: {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def ensure_dir(directory: Path) -> None:
    """Create the map's directory (0755) if missing; a file in its place is a clear error."""
    if directory.is_dir():
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, DIR_MODE)
    except OSError as exc:
        raise EnforcementError(f"cannot create the map's directory {directory}: {_why(exc)}; {UNCHANGED}") from None


def temp_path(target: Path) -> Path:
    """A new, empty, uniquely named file next to ``target`` (0644), for the swap to fill."""
    ensure_dir(target.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.new-", dir=target.parent)
    except OSError as exc:
        raise EnforcementError(f"cannot create a file next to {target}: {_why(exc)}; {UNCHANGED}") from None
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    return Path(name)


def remove_stale_temps(target: Path) -> None:
    """Leftovers of a run killed mid-swap: never in force, safe to delete (called under the swap lock only)."""
    for stale in target.parent.glob(f".{target.name}.new-*"):
        stale.unlink(missing_ok=True)


@contextmanager
def swap_lock(target: Path) -> Iterator[None]:
    """One swap of ``target`` at a time, across processes: a second one waits here."""
    ensure_dir(target.parent)
    lock = target.with_name(f".{target.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise EnforcementError(f"cannot open the swap lock {lock}: {_why(exc)}; {UNCHANGED}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_synced(path: Path, text: str) -> None:
    try:
        ensure_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # the umask narrowed O_CREAT's mode, or the file existed
        with open(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise EnforcementError(f"cannot write {path}: {_why(exc)}; {UNCHANGED}") from None


def keep_version(files: list[Path], keep: int) -> None:
    """Copy the files in force into ``<dir>/<name>.versions/NNNN/`` and drop all but the newest ``keep``."""
    existing = [f for f in files if f.exists()]
    if not existing or keep <= 0:
        return
    store = existing[0].with_name(files[0].name + ".versions")
    try:
        ensure_dir(store)
        numbers = sorted(int(p.name) for p in store.iterdir() if p.name.isdigit())
        target = store / f"{(numbers[-1] + 1) if numbers else 1:04d}"
        target.mkdir()
        os.chmod(target, DIR_MODE)
        for f in existing:
            shutil.copyfile(f, target / f.name)
            os.chmod(target / f.name, FILE_MODE)
        for old in sorted((p for p in store.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))[:-keep]:
            shutil.rmtree(old)
    except OSError as exc:
        raise EnforcementError(f"cannot keep a copy of the map in force in {store}: {_why(exc)}; {UNCHANGED}") from None


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError as exc:
        raise EnforcementError(f"cannot move the new map to {target}: {_why(exc)}", unchanged=False) from None


# --- the intent journal --------------------------------------------------------------------------


def journal_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.intent")


def write_intent(target: Path, intent: dict[str, Any]) -> None:
    """Record, durably and before the map changes, which version is about to be published."""
    journal = journal_path(target)
    tmp = temp_path(journal)
    try:
        write_synced(tmp, json.dumps(intent, sort_keys=True) + "\n")
        replace(tmp, journal)
        fsync_dir(target.parent)
    except (EnforcementError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise EnforcementError(f"cannot record the swap's intent in {journal}: {exc}") from None


def read_intent(target: Path) -> dict[str, Any] | None:
    journal = journal_path(target)
    try:
        value = json.loads(journal.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        # A torn journal cannot be trusted to say anything: treat the swap as unfinished.
        return {"checksum": None, "torn": str(exc)}
    return value if isinstance(value, dict) else {"checksum": None, "torn": "not an object"}


def clear_intent(target: Path) -> None:
    try:
        journal_path(target).unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise EnforcementError(f"cannot remove {journal_path(target)}: {_why(exc)}") from None
