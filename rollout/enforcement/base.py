"""The map's shared parts: an entry, the Backend Protocol, the access actions and the client's reply.

The backends (postfix.py, plain.py) import these from here; the package re-exports them
beside ``backend_for``, the registry.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from ..addresses import AddressError, parse_address
from ..config import EnforcementSettings

STRENGTH = {"warn": 1, "defer": 2, "reject": 3}


class MapEntry(NamedTuple):
    """A tuple, not a dataclass: a step builds hundreds of thousands of them."""

    key: str  # an envelope sender address, lower-cased
    stage: str  # warn | defer | reject


@dataclass(frozen=True)
class Published:
    path: str
    checksum: str
    entries: int


class Backend(Protocol):
    name: str
    path: Path  # the file in force; its swap lock and intent journal sit beside it

    def render(self, entries: Sequence[MapEntry]) -> str:
        """The file's text for these entries (what the checksum is taken over)."""

    def publish(self, entries: Sequence[MapEntry], text: str | None = None) -> Published:
        """Replace the map in force atomically; raise EnforcementError and change nothing on failure.

        ``text``: ``render(entries)`` if the caller has it already (a big map takes a while to render)."""

    def current(self) -> str | None:
        """The text of the map in force, or None if there is none yet."""

    def lock(self) -> AbstractContextManager[None]:
        """Held around a whole change of what is enforced: one swap at a time."""


_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f\u0080-\u009f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def unwritable(key: str) -> str | None:
    """Why ``key`` cannot be a map line safely (None: it can).

    A map line is ``KEY<TAB>ACTION``: whitespace would end the key, ``#`` starts a comment, and a key
    without a local part or domain (``@example.org``, ``user@``) would match other people's mail.
    """
    if _UNSAFE.search(key):
        return "contains a space or control character"
    if key.startswith("#"):
        return "starts with # (a comment line in the map)"
    local, at, domain = key.rpartition("@")
    if not at or not local or not domain:
        return "is not local@domain"
    try:
        parse_address(key)
    except AddressError as exc:
        return str(exc)
    return None


def writable(entries: Sequence[MapEntry]) -> tuple[list[MapEntry], list[str]]:
    """The entries that can be written, and the keys left out (each with why)."""
    kept: list[MapEntry] = []
    left_out: list[str] = []
    for entry in entries:
        why = unwritable(entry.key)
        if why is None:
            kept.append(entry)
        else:
            left_out.append(f"{entry.key!r}: {why}")
    return kept, sorted(left_out)


def reject_text(settings: EnforcementSettings, address: str) -> str:
    text = settings.reject_text.format(address=address, help_url=settings.help_url)
    return " ".join(text.split())  # one line: a line break would end the map entry


def access_action(settings: EnforcementSettings, address: str, stage: str) -> str:
    """The access(5) action a Postfix map line carries for this stage."""
    text = reject_text(settings, address)
    if stage == "warn":
        return f"WARN {text}"
    if stage == "defer":
        return f"DEFER {settings.defer_code} {text}"
    if stage == "reject":
        return f"REJECT {settings.reject_code} {text}"
    raise ValueError(f"no map action for stage {stage!r}")


def client_reply(settings: EnforcementSettings, address: str, stage: str) -> str:
    """The SMTP reply a mail client relaying without AUTH gets at this stage (warn: accepted)."""
    if stage in ("warn", "pending"):
        return "250 2.1.5 Ok"
    code = "450" if stage == "defer" else "554"
    status = settings.defer_code if stage == "defer" else settings.reject_code
    return f"{code} {status} <{address}>: Sender address rejected: {reject_text(settings, address)}"


def checksum(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()
