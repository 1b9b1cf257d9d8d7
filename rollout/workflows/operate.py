"""Operating use cases: the status report, the support lookup, waiting for a step."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Callable

from .. import lookup as lookup_model
from .. import status as status_model
from ..errors import RolloutError
from ..runtime import Runtime

POLL_SECONDS = 2.0


def rollout_status(runtime: Runtime) -> status_model.Status:
    with runtime.sessions() as session:
        return status_model.build_status(session, runtime.settings, runtime.clock.now())


def lookup(runtime: Runtime, query: str) -> lookup_model.Lookup:
    reply = refused_reply_text(runtime)
    with runtime.sessions() as session:
        return lookup_model.lookup(session, query, reply)


def refused_reply_text(runtime: Runtime) -> lookup_model.ReplyText:
    """What Postfix answers a switched-off mailbox at each stage (None: still delivered).

    Postfix prefixes an access-map action with its reply code (access_map_defer_code
    450, access_map_reject_code 554) and "<sender>: Sender address rejected:".
    """
    settings = runtime.settings.enforcement

    def reply(address: str, stage: str) -> str | None:
        text = settings.reject_text.format(address=address, help_url=settings.help_url)
        if stage == "defer":
            return f"450 {settings.defer_code} <{address}>: Sender address rejected: {text}"
        if stage == "reject":
            return f"554 {settings.reject_code} <{address}>: Sender address rejected: {text}"
        return None  # pending or warn: the message is still accepted

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
