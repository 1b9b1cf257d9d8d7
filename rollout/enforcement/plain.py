"""`plain-list`: one switched-off address per line, for MTAs other than Postfix."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from ..config import EnforcementSettings
from ..rules import REFUSING_STAGES
from .base import MapEntry, Published, checksum
from .files import (
    fsync_dir,
    keep_version,
    read_if_exists,
    remove_stale_temps,
    replace,
    swap_lock,
    temp_path,
    write_synced,
)


class PlainList:
    name = "plain-list"

    def __init__(self, settings: EnforcementSettings) -> None:
        self.settings = settings
        self.path = Path(settings.list_path)

    def render(self, entries: Sequence[MapEntry]) -> str:
        # Only refusing stages: a warn-only entry must not block on an MTA without a WARN action.
        return "".join(f"{key}\n" for key, stage in sorted(entries) if stage in REFUSING_STAGES)

    def current(self) -> str | None:
        return read_if_exists(self.path)

    def lock(self) -> AbstractContextManager[None]:
        return swap_lock(self.path)

    def publish(self, entries: Sequence[MapEntry], text: str | None = None) -> Published:
        text = self.render(entries) if text is None else text
        remove_stale_temps(self.path)
        tmp = temp_path(self.path)
        try:
            write_synced(tmp, text)
            keep_version([self.path], self.settings.keep_versions)
            replace(tmp, self.path)
            fsync_dir(self.path.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return Published(str(self.path), checksum(text) or "", text.count("\n"))
