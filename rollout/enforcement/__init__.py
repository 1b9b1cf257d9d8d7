"""Enforcement: the map of switched-off senders, behind one small Protocol and a registry.

A backend takes the full list of entries (key → access action) and publishes it
atomically; on any failure it raises ``EnforcementError`` and the map in force stays
as it was. ``client_reply`` is what a refused mail client sees, for support.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import EnforcementSettings
from ..errors import ConfigError
from .base import (
    STRENGTH,
    Backend,
    MapEntry,
    Published,
    access_action,
    checksum,
    client_reply,
    reject_text,
    unwritable,
    writable,
)


def _registry() -> dict[str, Callable[[EnforcementSettings], Backend]]:
    from .plain import PlainList
    from .postfix import PostfixSenderMap

    return {"postfix-sender-map": PostfixSenderMap, "plain-list": PlainList}


def backend_for(settings: EnforcementSettings) -> Backend:
    backends = _registry()
    if settings.backend not in backends:
        raise ConfigError(f"enforcement.backend {settings.backend!r} is unknown (known: {', '.join(sorted(backends))})")
    return backends[settings.backend](settings)


__all__ = [
    "Backend",
    "MapEntry",
    "Published",
    "STRENGTH",
    "access_action",
    "backend_for",
    "checksum",
    "client_reply",
    "reject_text",
    "unwritable",
    "writable",
]
