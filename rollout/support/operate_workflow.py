"""Operating use cases: the status report, the support lookup, waiting for a step."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..enforcement import backend_for, checksum, client_reply
from ..enforcement.files import read_intent
from ..errors import RolloutError
from ..models import MapVersion
from ..plan import retirement
from ..plan.plan_workflow import next_step
from ..rules import REFUSING_STAGES
from ..runtime import Runtime
from . import lookup as lookup_model
from . import status as status_model

POLL_SECONDS = 2.0


def rollout_status(runtime: Runtime) -> status_model.Status:
    with runtime.sessions() as session:
        now = runtime.clock.now()
        counts = status_model.count_active_plan(session, runtime.settings, now)
        report = status_model.build_status(session, runtime.settings, now, counts)
        report.map_note = map_disagreement(runtime, session)
        report.legacy_note = legacy_disagreement(runtime, report.retired is not None)
    if report.cohorts:
        # the gates exactly as the next step will see them (what the status counted already, not counted again)
        upcoming = next_step(runtime, run_command=True, counts=counts)
        report.gates = upcoming.gates if upcoming else []
    return report


def map_disagreement(runtime: Runtime, session: Session) -> str | None:
    """What ``status`` says when the map in force and the database disagree (None: they agree)."""
    try:
        backend = backend_for(runtime.settings.enforcement)
        intent = read_intent(backend.path)
        in_force = checksum(backend.current())
    except RolloutError as exc:
        return f"the map cannot be checked: {exc}"
    recorded = session.scalars(select(MapVersion.checksum).where(MapVersion.active)).first()
    repairs = "the next step, undo or exempt puts the map back to what the database says"
    if intent is not None and intent.get("checksum") != recorded:
        change = intent.get("reason", "a change")
        if in_force is not None and in_force == intent.get("checksum") and in_force != recorded:
            return (
                f"map ahead of the database: the map in force ({in_force[:12]}) was published for {change}, "
                f"but the database did not record it; {repairs}"
            )
        return f"a map swap ({change}) was left unfinished; {repairs}"
    if recorded is not None and in_force != recorded:
        return (
            f"the map in force ({(in_force or 'missing')[:12]}) is not the one last recorded ({recorded[:12]}): "
            "edited by hand? the next swap replaces it"
        )
    return None


def legacy_disagreement(runtime: Runtime, retired: bool) -> str | None:
    """What ``status`` says when a final step or its undo changed the legacy map (or main.cf) but was not recorded."""
    try:
        target = retirement.legacy_map(runtime.settings.enforcement)
        intent = read_intent(target.path)
    except RolloutError:
        return None
    if intent is None or intent.get("retired") == retired:
        return None
    change = "the final step" if intent.get("retired") else "the undo of the final step"
    return (
        f"{change} changed {target.spec} but the database did not record it (killed?); "
        "the next step or undo puts it back to what the database says"
    )


def lookup(runtime: Runtime, query: str) -> lookup_model.Lookup:
    reply = refused_reply_text(runtime)
    with runtime.sessions() as session:
        return lookup_model.lookup(session, query, reply)


def refused_reply_text(runtime: Runtime) -> lookup_model.ReplyText:
    """What Postfix answers a switched-off mailbox at its stage (None: still delivered)."""
    settings = runtime.settings.enforcement

    def reply(address: str, stage: str) -> str | None:
        return client_reply(settings, address, stage) if stage in REFUSING_STAGES else None

    return reply


def wait_for_step(
    runtime: Runtime,
    position: int,
    timeout: timedelta,
    poll_seconds: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> bool:
    """Wait until cohort ``position`` is switched off; False when ``timeout`` passes first.

    The timeout is wall time (a script waiting), not the rollout's clock.
    """
    deadline = monotonic() + timeout.total_seconds()
    while True:
        with runtime.sessions() as session:
            done = status_model.step_enforced(session, position)
        if done is None:
            raise RolloutError(f"the active plan has no cohort {position}: see `rollout status`")
        if done:
            return True
        remaining = deadline - monotonic()
        if remaining <= 0:
            return False
        sleep(min(poll_seconds, remaining))
