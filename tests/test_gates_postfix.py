"""Gates on a real Postfix: refusals of a switched-off mailbox, logged and scanned, hold the next step."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from rollout.clock import ManualClock
from rollout.config import GateSettings
from rollout.models import RolloutState
from rollout.runtime import Runtime
from rollout.scheduler import run_until

from .conftest import Cli
from .mailstack import MailStack, Mailuser, mailstack_available
from .plan_support import apply_plan, configure, import_locals

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not mailstack_available(), reason="needs root, Postfix, Dovecot and smtp-sink (.ci/run installs them)"
    ),
]

SERVER, ANNA_CLIENT = "127.0.0.130", "127.0.0.131"
REMOTE = ["someone@remote.test"]
NO_REFUSALS = GateSettings(
    max_scan_age_minutes=30, window_hours=6, max_refusals_per_hour=0, max_refused_share=None, max_next_legacy_share=None
)


@pytest.fixture
def stack() -> Iterator[MailStack]:
    with MailStack(SERVER, [Mailuser("anna@example.org", "pw-anna"), Mailuser("zoe@example.org", "pw-zoe")]) as s:
        yield s
    s.cleanup()


def real_now() -> datetime:
    """The clock starts a few minutes before the real time: Postfix stamps its log lines with the real time, and the
    test advances the clock by two minutes to reach the first cohort. Started at the real time, the switch-off would be
    stamped after the refusals it causes, and an hour boundary between the two would hide them from the chart."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)


def test_refusals_on_a_real_postfix_hold_the_next_step(
    run: Cli, runtime: Runtime, clock: ManualClock, stack: MailStack, tmp_path: Path
) -> None:
    """Cohort 1 off; anna's relays refused and logged; scanned, the gates count them; with max_refusals_per_hour = 0
    `step` exits 1 naming them and the scheduler's step pauses the rollout; after resume, once the refusals have
    left the window, the step runs."""
    clock.set(real_now())
    configure(runtime, tmp_path, gates=NO_REFUSALS, map_path=str(stack.sender_map))
    runtime.settings = dataclasses.replace(
        runtime.settings,
        scan=dataclasses.replace(
            runtime.settings.scan, log_files=(str(stack.postfix_log),), trusted_networks=("127.0.0.1/32",)
        ),
    )
    import_locals(runtime, tmp_path, ["anna", "bert", "yan", "zoe"], domain="example.org")
    start = clock.now() + timedelta(minutes=1)
    apply_plan(run, 2, "2h", start)
    clock.advance(timedelta(minutes=2))
    run("scan", str(stack.postfix_log))
    run("step", "--yes")  # cohort a–b is switched off

    stack.pop_login("anna@example.org", "pw-anna", source=ANNA_CLIENT)
    for _ in range(2):
        reply = stack.send("anna@example.org", REMOTE, source=ANNA_CLIENT)
        assert reply.code == 554 and "SMTP-after-POP is switched off for anna@example.org" in reply.text
    stack.wait_for_log(stack.postfix_log, "SMTP-after-POP is switched off", count=2)

    clock.advance(timedelta(minutes=5))
    run("scan", str(stack.postfix_log))
    report = json.loads(run("status", "--json").output)
    assert sum(h["refusals"] for h in report["cohorts"][0]["refusals_per_hour"]) == 2  # the chart's series
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["refusals_per_hour"]["value"] == 2.0 and not gates["refusals_per_hour"]["passed"]
    assert gates["fresh_data"]["passed"]

    result = run("step", "--yes", expect=1)
    assert (
        "gate refusals_per_hour: 2 refusals by our map in the busiest hour of the last 6 h (2 in all) "
        "(at most 0 per hour)" in result.stderr
    )

    second = start + timedelta(hours=2)
    runs = run_until(runtime, clock, second + timedelta(minutes=1))  # the scheduler scans, then tries the step
    steps = [r for r in runs if r.job == "step"]
    assert [r.outcome for r in steps] == ["skipped"]
    with runtime.sessions() as session:
        state = session.scalars(select(RolloutState)).one()
        assert state.paused and state.paused_by == "scheduler"
        assert (
            state.paused_reason
            == "gates failed: refusals_per_hour: 2 refusals by our map in the busiest hour of the last 6 h (2 in all) "
            "(at most 0 per hour)"
        )

    clock.advance(timedelta(hours=7))  # the refusals have left the 6-hour window
    run("resume", "--reason", "anna called support and switched to AUTH")
    runs = run_until(runtime, clock, clock.now() + timedelta(minutes=1))
    assert [(r.job, r.outcome) for r in runs] == [("scan", "ok"), ("expire", "ok"), ("step", "ok")]
    assert "zoe@example.org" in stack.sender_map.read_text()
    reply = stack.send("zoe@example.org", REMOTE, source=ANNA_CLIENT)
    assert reply.code == 554 and "switched off for zoe@example.org" in reply.text
