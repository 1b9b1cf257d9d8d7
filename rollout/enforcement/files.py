"""Atomic file replacement and the kept previous versions, shared by the backends."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import EnforcementError


def read_if_exists(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def temp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.new-{os.getpid()}")


def remove_stale_temps(target: Path) -> None:
    """Leftovers of a run killed mid-swap: never in force, safe to delete."""
    for stale in target.parent.glob(f".{target.name}.new-*"):
        stale.unlink(missing_ok=True)


def write_synced(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise EnforcementError(f"cannot write {path}: {exc.strerror}; the map in force is unchanged") from None


def keep_version(files: list[Path], keep: int) -> None:
    """Copy the files in force into ``<dir>/<name>.versions/NNNN/`` and drop all but the newest ``keep``."""
    existing = [f for f in files if f.exists()]
    if not existing or keep <= 0:
        return
    store = existing[0].with_name(files[0].name + ".versions")
    store.mkdir(exist_ok=True)
    numbers = sorted(int(p.name) for p in store.iterdir() if p.name.isdigit())
    target = store / f"{(numbers[-1] + 1) if numbers else 1:04d}"
    target.mkdir()
    for f in existing:
        shutil.copy2(f, target / f.name)
    for old in sorted((p for p in store.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))[:-keep]:
        shutil.rmtree(old)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
