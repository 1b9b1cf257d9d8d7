"""Enforcement: the map of switched-off senders, behind one small Protocol and a registry.

A backend takes the full list of entries (key → access action) and publishes it
atomically; on any failure it raises ``EnforcementError`` and the map in force stays
as it was. ``client_reply`` is what a refused mail client sees, for support.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol, Sequence

from ..config import EnforcementSettings
from ..errors import ConfigError

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

    def render(self, entries: Sequence[MapEntry]) -> str:
        """The file's text for these entries (what the checksum is taken over)."""

    def publish(self, entries: Sequence[MapEntry]) -> Published:
        """Replace the map in force atomically; raise EnforcementError and change nothing on failure."""

    def current(self) -> str | None:
        """The text of the map in force, or None if there is none yet."""


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


def _registry() -> dict[str, Callable[[EnforcementSettings], Backend]]:
    from .plain import PlainList
    from .postfix import PostfixSenderMap

    return {"postfix-sender-map": PostfixSenderMap, "plain-list": PlainList}


def backend_for(settings: EnforcementSettings) -> Backend:
    backends = _registry()
    if settings.backend not in backends:
        raise ConfigError(f"enforcement.backend {settings.backend!r} is unknown (known: {', '.join(sorted(backends))})")
    return backends[settings.backend](settings)


__all__ = ["Backend", "MapEntry", "Published", "access_action", "backend_for", "checksum", "client_reply", "reject_text"]
