"""`plain-list`: one switched-off address per line, for MTAs other than Postfix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..config import EnforcementSettings
from . import MapEntry, Published, checksum
from .files import fsync_dir, read_if_exists, keep_version, remove_stale_temps, temp_path, write_synced


class PlainList:
    name = "plain-list"

    def __init__(self, settings: EnforcementSettings) -> None:
        self.settings = settings
        self.path = Path(settings.list_path)

    def render(self, entries: Sequence[MapEntry]) -> str:
        # Only refusing stages: a warn-only entry must not block on an MTA without a WARN action.
        return "".join(f"{key}\n" for key, stage in sorted(entries) if stage in ("defer", "reject"))

    def current(self) -> str | None:
        return read_if_exists(self.path)

    def publish(self, entries: Sequence[MapEntry]) -> Published:
        text = self.render(entries)
        remove_stale_temps(self.path)
        tmp = temp_path(self.path)
        write_synced(tmp, text)
        keep_version([self.path], self.settings.keep_versions)
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        return Published(str(self.path), checksum(text) or "", text.count("\n"))
