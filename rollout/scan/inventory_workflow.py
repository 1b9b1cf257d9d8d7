"""Inventory use cases: import the provisioning CSV, report its statistics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from .. import audit
from ..runtime import Runtime
from . import inventory
from .inventory import ImportSummary, InventoryStats


def import_inventory(
    runtime: Runtime,
    path: Path,
    dry_run: bool = False,
    prune: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Upsert customers and mailboxes from ``path`` in one transaction (rolled back on a dry run)."""
    now = runtime.clock.now()
    with runtime.sessions() as session, session.begin():
        summary = inventory.import_csv(session, path, now, prune=prune, progress=progress)
        summary.dry_run = dry_run
        if dry_run:
            session.rollback()
            return summary
        details = asdict(summary)
        details.pop("absent_sample")
        audit.record(session, now, runtime.actor, "inventory.import", **details)
    return summary


def inventory_stats(runtime: Runtime) -> InventoryStats:
    with runtime.sessions() as session:
        return inventory.stats(session)
