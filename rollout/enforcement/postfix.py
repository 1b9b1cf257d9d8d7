"""`postfix-sender-map`: a Postfix access map for ``check_sender_access``.

The swap: write the source to a temp file next to the map, run ``postmap`` on the
temp file, query samples from the new index with ``postmap -q``, keep a copy of the
map in force, then rename the index and the source over the old ones. Postfix reads
the index (``.db``) only, and daemons notice a replaced index without a reload. A
failure at any point before the renames leaves the map in force untouched.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from ..config import EnforcementSettings
from ..errors import EnforcementError
from .base import STRENGTH, MapEntry, Published, access_action, checksum
from .files import (
    FILE_MODE,
    fsync_dir,
    keep_version,
    read_if_exists,
    remove_stale_temps,
    replace,
    swap_lock,
    temp_path,
    write_synced,
)

INDEX_SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb", "dbm": ".db"}
ABSENT_PROBE = "rollout-probe-not-listed@invalid"
SAMPLES = 5
POSTMAP_TIMEOUT = 600


class PostfixSenderMap:
    name = "postfix-sender-map"

    def __init__(self, settings: EnforcementSettings) -> None:
        if settings.map_type not in INDEX_SUFFIX:
            raise EnforcementError(
                f"enforcement.map_type {settings.map_type!r} is not one of {', '.join(INDEX_SUFFIX)}"
            )
        self.settings = settings
        self.path = Path(settings.map_path)
        self.index = self.path.with_name(self.path.name + INDEX_SUFFIX[settings.map_type])

    def render(self, entries: Sequence[MapEntry]) -> str:
        # One template per stage, formatted per key: the map can hold hundreds of thousands of lines.
        templates = {
            stage: "{0}\t"
            + access_action(self.settings, "\0", stage).replace("{", "{{").replace("}", "}}").replace("\0", "{0}")
            + "\n"
            for stage in STRENGTH
        }
        lines = [templates[stage].format(key) for key, stage in sorted(entries)]
        return "# written by rollout: switched-off SMTP-after-POP senders; do not edit\n" + "".join(lines)

    def current(self) -> str | None:
        return read_if_exists(self.path)

    def lock(self) -> AbstractContextManager[None]:
        return swap_lock(self.path)

    def publish(self, entries: Sequence[MapEntry], text: str | None = None) -> Published:
        text = self.render(entries) if text is None else text
        remove_stale_temps(self.path)
        tmp = temp_path(self.path)
        tmp_index = tmp.with_name(tmp.name + INDEX_SUFFIX[self.settings.map_type])
        try:
            write_synced(tmp, text)
            self._postmap([f"{self.settings.map_type}:{tmp}"])
            tmp_index.chmod(FILE_MODE)  # postmap created it under the umask; Postfix's daemons must read it
            self._verify(tmp, entries)
            keep_version([self.path, self.index], self.settings.keep_versions)
            replace(tmp_index, self.index)  # the index first: it is what Postfix reads
            replace(tmp, self.path)
            fsync_dir(self.path.parent)
        finally:
            tmp.unlink(missing_ok=True)
            tmp_index.unlink(missing_ok=True)
        return Published(str(self.path), checksum(text) or "", len(entries))

    def query(self, key: str, path: Path | None = None) -> str | None:
        """What the map (or a candidate) answers for ``key``: ``postmap -q``."""
        out = self._postmap(["-q", key, f"{self.settings.map_type}:{path or self.path}"], allowed=(0, 1))
        return out.rstrip("\n") or None

    def _verify(self, candidate: Path, entries: Sequence[MapEntry]) -> None:
        ordered = sorted(entries)
        picks = {ordered[i * (len(ordered) - 1) // max(SAMPLES - 1, 1)] for i in range(SAMPLES)} if ordered else set()
        probes = "".join(f"{e.key}\n" for e in sorted(picks, key=lambda e: e.key)) + ABSENT_PROBE + "\n"
        out = self._postmap(["-q", "-", f"{self.settings.map_type}:{candidate}"], stdin=probes, allowed=(0, 1))
        answers = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
        for entry in picks:
            expected = access_action(self.settings, entry.key, entry.stage)
            if answers.get(entry.key) != expected:
                raise EnforcementError(
                    f"the new map answers {answers.get(entry.key)!r} for {entry.key}, expected {expected!r}; "
                    "the map in force is unchanged"
                )
        if ABSENT_PROBE in answers:
            raise EnforcementError(
                f"the new map lists {ABSENT_PROBE}, which was never written; the map in force is unchanged"
            )

    def _postmap(self, args: list[str], stdin: str | None = None, allowed: tuple[int, ...] = (0,)) -> str:
        argv = shlex.split(self.settings.postmap_command) + args
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=POSTMAP_TIMEOUT)
        except FileNotFoundError:
            raise EnforcementError(
                f"cannot run {argv[0]!r} (enforcement.postmap_command); the map in force is unchanged"
            ) from None
        except OSError as exc:
            raise EnforcementError(
                f"cannot run {argv[0]!r}: {exc.strerror or exc}; the map in force is unchanged"
            ) from None
        except subprocess.TimeoutExpired:
            raise EnforcementError(
                f"{' '.join(argv[:2])} took longer than {POSTMAP_TIMEOUT} s; the map in force is unchanged"
            ) from None
        if done.returncode not in allowed:
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            raise EnforcementError(f"{' '.join(argv)} failed: {detail[0]}; the map in force is unchanged")
        return done.stdout
