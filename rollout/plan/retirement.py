"""The final step in the database: retiring the legacy path after the last cohort, and undoing that.

Core functions take a Session, flush, never commit; the file side effect happens
after the flush, so the entry point's commit follows a map already in place (as in
the map swaps of plan/plan_workflow.py).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import EnforcementSettings
from ..enforcement import legacy
from ..errors import ConfigError
from ..models import Plan, Retirement

MODES = ("empty", "check")


def current(session: Session, plan: Plan | None) -> Retirement | None:
    """The retirement in force for this plan (None: the legacy path is still there)."""
    if plan is None:
        return None
    query = select(Retirement).where(Retirement.plan_id == plan.id, Retirement.undone_at.is_(None))
    return session.scalars(query.order_by(Retirement.id.desc()).limit(1)).first()


def legacy_map(settings: EnforcementSettings) -> legacy.LegacyMap:
    if settings.retire not in MODES:
        raise ConfigError(f"enforcement.retire {settings.retire!r} must be one of {', '.join(MODES)}")
    if not settings.legacy_map:
        raise ConfigError(
            "the final step needs enforcement.legacy_map, the POP-before-SMTP client map as in main.cf "
            '(e.g. legacy_map = "hash:/etc/postfix/pop-before-smtp")'
        )
    return legacy.parse_legacy_map(settings.legacy_map, settings.map_type)


def blockers(settings: EnforcementSettings) -> list[str]:
    """What keeps the final step from being taken now: a writer still running, main.cf lines still there."""
    try:
        target = legacy_map(settings)
    except ConfigError as exc:
        return [str(exc)]
    found = [
        f"{w.describe()}: it feeds {target.spec}; stop and disable it first"
        for w in legacy.running_writers(target, settings.legacy_writers)
    ]
    if settings.retire == "check":
        found += [r.describe() for r in legacy.restriction_references(target, settings.postconf_command)]
    return found


def retire(
    session: Session, settings: EnforcementSettings, plan: Plan, now: datetime, actor: str, reason: str | None
) -> Retirement:
    """Record the retirement (flushed), then empty the map (mode ``empty``); ``check`` was verified by ``blockers``."""
    target = legacy_map(settings)
    row = Retirement(
        plan_id=plan.id,
        retired_at=now,
        actor=actor,
        mode=settings.retire,
        legacy_map=target.spec,
        entries_before=legacy.count_entries(target),
        reason=reason,
    )
    session.add(row)
    session.flush()
    if settings.retire == "empty":
        row.saved = str(legacy.empty(target, settings.postmap_command))
        session.flush()
    return row


def undo(session: Session, settings: EnforcementSettings, row: Retirement, now: datetime) -> None:
    """Restore the legacy map as it was before the final step (mode ``check``: main.cf is the operator's)."""
    row.undone_at = now
    session.flush()
    if row.mode == "empty" and row.saved:
        legacy.restore(legacy.parse_legacy_map(row.legacy_map, settings.map_type), Path(row.saved))
