"""The final step in the database: retiring the legacy path after the last cohort, and undoing that.

Core functions take a Session, flush, never commit; the file side effect happens
after the flush, so the entry point's commit follows a map already in place (as in
the map swaps of plan/plan_workflow.py). The same protocol as those swaps: before the legacy
map (or main.cf) changes, an intent beside the legacy map says which way (retired or not);
the commit is the outcome. ``repair`` finishes what a run killed in between left: the
database decides whether the legacy path is retired.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit
from ..config import EnforcementSettings
from ..enforcement import legacy
from ..enforcement.files import write_intent
from ..errors import ConfigError, EnforcementError
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
        row.saved = str(legacy.keep(target))
        session.flush()
        write_intent(target.path, _intent(True, "empty", now))
        legacy.publish_empty(target, settings.postmap_command)
    return row


def undo(session: Session, settings: EnforcementSettings, row: Retirement, now: datetime) -> legacy.MainCfEdit | None:
    """Put the legacy path back as it was before the final step: mode ``empty`` restores the kept map, mode ``check``
    puts ``check_client_access <map>`` back into main.cf and reloads Postfix (returned: the edit; None if main.cf
    named the map already)."""
    row.undone_at = now
    session.flush()
    target = legacy.parse_legacy_map(row.legacy_map, settings.map_type)
    if row.mode == "empty" and row.saved:
        write_intent(target.path, _intent(False, "empty", now))
        legacy.restore(target, Path(row.saved))
        return None
    if row.mode != "check":
        return None
    edit = legacy.put_back_edit(target, settings.postconf_command, settings.map_path)
    if edit is not None:
        intent = {
            **_intent(False, "check", now),
            "parameter": edit.parameter,
            "before": edit.before,
            "after": edit.after,
        }
        write_intent(target.path, intent)
        legacy.apply_edit(edit, edit.after, settings.postconf_command, settings.reload_command)
    if not legacy.restriction_references(target, settings.postconf_command):
        raise EnforcementError(
            f"main.cf still names {target.spec} nowhere after the edit (postconf -x)", unchanged=False
        )
    return edit


def _intent(retired: bool, mode: str, now: datetime) -> dict[str, Any]:
    return {"retired": retired, "mode": mode, "at": now.isoformat()}


def repair(
    session: Session,
    settings: EnforcementSettings,
    target: legacy.LegacyMap,
    intent: dict[str, Any],
    retired: bool,
    now: datetime,
    actor: str,
) -> str | None:
    """Make the legacy map (or main.cf) what the database says after a run killed between the change and its commit
    (``retired``: the database has the final step in force). None: the commit happened, nothing to do."""
    if intent.get("retired") == retired:
        return None
    mode = intent.get("mode", settings.retire)
    if retired:  # an undo whose commit never came: the legacy path goes again
        if mode != "check":
            legacy.publish_empty(target, settings.postmap_command)
            done = f"{target.spec} emptied again: the undo of the final step was not recorded"
        elif legacy.current_value(str(intent["parameter"]), settings.postconf_command) == intent["after"]:
            edit = legacy.MainCfEdit(str(intent["parameter"]), str(intent["before"]), str(intent["after"]))
            legacy.apply_edit(edit, edit.before, settings.postconf_command, settings.reload_command)
            done = f"{target.spec} taken out of {edit.parameter} again: the undo of the final step was not recorded"
        else:
            done = f"main.cf was changed since the unrecorded undo of the final step; {target.spec} left as it is"
    else:  # the final step's commit never came: the legacy map comes back
        if mode == "empty" and target.saved.is_dir():
            legacy.restore(target, target.saved)
        done = f"{target.spec} put back: the final step was not recorded"
    audit.record(session, now, actor, "legacy.repair", intent=intent, legacy_map=target.spec, repaired=done)
    return done
