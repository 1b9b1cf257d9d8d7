"""Operating use cases: the status report, the support lookup, waiting for a step."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Callable

from .. import lookup as lookup_model
from .. import status as status_model
from ..enforcement import client_reply
from ..errors import RolloutError
from ..rules import REFUSING_STAGES
from ..runtime import Runtime
from .plan import next_step

POLL_SECONDS = 2.0


def rollout_status(runtime: Runtime) -> status_model.Status:
    with runtime.sessions() as session:
        report = status_model.build_status(session, runtime.settings, runtime.clock.now())
    if report.cohorts:
        upcoming = next_step(runtime, run_command=True)  # the gates exactly as the next step will see them
        report.gates = upcoming.gates if upcoming else []
    return report


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
