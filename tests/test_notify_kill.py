"""Exactly once across processes: `rollout notify` killed with SIGKILL and rerun, and two runs at once."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from rollout.models import Notice
from rollout.notify.campaign_workflow import start_campaign
from rollout.runtime import Runtime

from .campaign_support import SmtpServer, many_affected
from .conftest import T0

CUSTOMERS = 120
CONCURRENCY = 4


@pytest.fixture
def smtp():
    with SmtpServer("127.0.0.31") as server:
        yield server


@pytest.fixture
def campaign_env(runtime: Runtime, tmp_path: Path, smtp: SmtpServer, cli_env: dict[str, str]) -> dict[str, str]:
    many_affected(runtime, tmp_path, CUSTOMERS, T0 - timedelta(hours=1))
    start_campaign(runtime, date(2026, 3, 2), at="10:00")
    return {
        **cli_env,
        "ROLLOUT_NOW": T0.isoformat(),
        "ROLLOUT_SMTP_HOST": smtp.host,
        "ROLLOUT_SMTP_PORT": str(smtp.port),
        "ROLLOUT_SMTP_CONCURRENCY": str(CONCURRENCY),
        # a run sends at most 30 before its kill: at least four kills land mid-run
        "ROLLOUT_SMTP_RATE_PER_SECOND": "20",
        "ROLLOUT_SMTP_TIMEOUT_SECONDS": "5",
    }


def notify_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["rollout", "notify", "--json", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def ledger(runtime: Runtime) -> dict[str, str]:
    with runtime.sessions() as session:
        return dict(session.execute(select(Notice.message_id, Notice.state)).all())


def test_sigkill_at_random_points_then_rerun_loses_and_duplicates_nothing(
    runtime: Runtime, smtp: SmtpServer, campaign_env: dict[str, str]
) -> None:
    """Killed with SIGKILL mid-run many times, then rerun: every notice arrives at most once, none is lost."""
    rng = random.Random(5)
    kills = 0
    for _ in range(8):
        proc = notify_process(campaign_env)
        time.sleep(rng.uniform(0.4, 1.5))
        if proc.poll() is not None:
            proc.communicate(timeout=30)
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        kills += 1
    final = notify_process({**campaign_env, "ROLLOUT_SMTP_RATE_PER_SECOND": "0"})
    out, err = final.communicate(timeout=60)
    assert final.returncode == 0, err
    summary = json.loads(out)
    states = ledger(runtime)
    received = smtp.inbox.ids()
    assert kills >= 3, "the runs finished before they could be killed"
    assert len(states) == CUSTOMERS
    assert set(received.values()) <= {1}, f"duplicates: {[m for m, n in received.items() if n > 1]}"
    sent = {m for m, s in states.items() if s == "sent"}
    uncertain = {m for m, s in states.items() if s == "sending"}
    assert sent | uncertain == set(states)  # nothing pending or failed: every notice was attempted
    assert sent <= set(received)  # recorded as sent only after the server's 250
    assert set(received) <= set(states)
    assert len(uncertain) <= CONCURRENCY * kills
    assert summary["uncertain"] == len(uncertain)


def test_resend_uncertain_sends_the_in_flight_ones_again(
    runtime: Runtime, smtp: SmtpServer, campaign_env: dict[str, str]
) -> None:
    """Notices left in `sending` are sent on --resend-uncertain, and only then."""
    proc = notify_process({**campaign_env, "ROLLOUT_SMTP_RATE_PER_SECOND": "60"})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(s == "sending" for s in ledger(runtime).values()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    stranded = {m for m, s in ledger(runtime).items() if s == "sending"}
    assert stranded
    fast = {**campaign_env, "ROLLOUT_SMTP_RATE_PER_SECOND": "0"}
    plain = json.loads(notify_process(fast).communicate(timeout=60)[0])
    assert plain["uncertain"] == len(stranded)
    resent = json.loads(notify_process(fast, "--resend-uncertain").communicate(timeout=60)[0])
    assert (resent["sent"], resent["uncertain"]) == (len(stranded), 0)
    assert set(ledger(runtime).values()) == {"sent"}
    received = smtp.inbox.ids()
    assert set(received) == set(ledger(runtime)) and all(received[m] >= 1 for m in stranded)


def test_two_processes_at_once_send_each_notice_once(
    runtime: Runtime, smtp: SmtpServer, campaign_env: dict[str, str]
) -> None:
    """Two notify processes started together share the work: every customer gets exactly one message."""
    env = {**campaign_env, "ROLLOUT_SMTP_RATE_PER_SECOND": "0"}
    procs = [notify_process(env) for _ in range(2)]
    results = [p.communicate(timeout=90) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    summaries = [json.loads(out) for out, _ in results]
    assert sum(s["sent"] for s in summaries) == CUSTOMERS
    received = smtp.inbox.ids()
    assert len(received) == CUSTOMERS and set(received.values()) == {1}
    assert Counter(ledger(runtime).values()) == {"sent": CUSTOMERS}
