"""`rollout status`: phase, next action, waves, cohorts, trend, exemptions, pause; --wait-for-step."""

import json
from datetime import timedelta

from sqlalchemy import select, update

from rollout.clock import ManualClock
from rollout.models import Cohort, Plan, Retirement
from rollout.runtime import Runtime

from .conftest import Cli
from .operate_support import NOW, SWITCHED_AT, build_rollout


def at_now(runtime: Runtime) -> None:
    assert isinstance(runtime.clock, ManualClock)
    runtime.clock.set(NOW)


def test_empty_database_is_in_the_inventory_phase(run: Cli) -> None:
    """With nothing but a schema, status says the rollout has not started and lists nothing."""
    data = json.loads(run("status", "--json").output)
    assert data["phase"] == "inventory"
    assert (data["cohorts"], data["waves"], data["next_action"], data["paused"]) == ([], [], None, None)


def test_status_json_reports_every_part(run: Cli, runtime: Runtime) -> None:
    """JSON status gives phase, next action, wave counts, cohort rows, trend and expiring exemptions."""
    build_rollout(runtime)
    at_now(runtime)
    data = json.loads(run("status", "--json").output)
    assert data["phase"] == "switch-off"
    assert (data["customers"], data["mailboxes"], data["legacy_mailboxes"]) == (2, 4, 1)
    assert data["next_action"] == {"action": "notify wave 4", "at": (NOW + timedelta(days=1)).isoformat()}
    waves = {w["wave"]: (w["sent"], w["failed"], w["uncertain"], w["pending"]) for w in data["waves"]}
    assert waves == {
        1: (1, 0, 0, 0),
        2: (1, 1, 0, 0),
        3: (1, 0, 1, 0),
        4: (0, 0, 0, 0),
        5: (0, 0, 0, 0),
        6: (0, 0, 0, 0),
    }
    first, second = data["cohorts"]
    assert (first["label"], first["stage"], first["refusals"], first["still_legacy"]) == ("a–m", "reject", 3, 0)
    assert first["enforced_at"] == SWITCHED_AT.isoformat()
    assert (second["label"], second["stage"], second["still_legacy"], second["enforced_at"]) == (
        "n–z",
        "pending",
        1,
        None,
    )
    assert [(w["week"], w["mailboxes"]) for w in data["trend"]] == [
        ("2026-03-02", 2),
        ("2026-03-09", 1),
        ("2026-03-16", 0),
    ]
    assert [(e["address"], e["reason"]) for e in data["expiring"]] == [("nina@home.example", "travelling, back Friday")]


def test_status_text_shows_pause_table_and_chart(run: Cli, runtime: Runtime) -> None:
    """The text report names the pause and its reason, the cohort table and a bar chart of the trend."""
    build_rollout(runtime, paused=True)
    at_now(runtime)
    out = run("status").output
    assert "phase: switch-off" in out and "SWITCH-OFF" in out
    assert "PAUSED by ops at 2026-03-22 07:00: support queue is full" in out
    assert "next: notify wave 4 at 2026-03-23 09:00" in out
    assert "1  a–m            2  50.0%       0  reject   2026-03-17 09:00  2026-03-17 09:00  3" in out
    assert "2026-03-02        2  " + "█" * 40 in out and "2026-03-09        1  " + "█" * 20 in out
    assert "nina@home.example  2026-03-25 09:00  travelling, back Friday" in out


def test_phase_is_done_only_after_the_final_step(run: Cli, runtime: Runtime) -> None:
    """Every cohort at the ladder's last stage: still switch-off, the final step next; retired: done, nothing next."""
    build_rollout(runtime)
    runtime.clock.set(NOW + timedelta(weeks=4))  # type: ignore[attr-defined]
    with runtime.sessions() as s, s.begin():
        s.execute(update(Cohort).values(stage="reject", enforced_at=NOW))
    data = json.loads(run("status", "--json").output)
    assert data["phase"] == "switch-off"
    assert data["next_action"]["action"].startswith("the final step: retire the legacy path")
    with runtime.sessions() as s, s.begin():
        plan_id = s.scalars(select(Plan.id)).one()
        s.add(
            Retirement(
                plan_id=plan_id,
                retired_at=NOW + timedelta(weeks=3),
                actor="ops",
                mode="empty",
                legacy_map="hash:/etc/postfix/pop-before-smtp",
            )
        )
    data = json.loads(run("status", "--json").output)
    assert data["phase"] == "done" and data["next_action"] is None
    assert data["retired"]["legacy_map"] == "hash:/etc/postfix/pop-before-smtp"


def test_wait_for_step_exits_zero_once_switched_and_one_on_timeout(run: Cli, runtime: Runtime) -> None:
    """--wait-for-step exits 0 for a switched-off cohort, 1 after the timeout otherwise, 1 for a cohort not there."""
    build_rollout(runtime)
    assert run("status", "--wait-for-step", "1", "--timeout", "1s").output == ""
    result = run("status", "--wait-for-step", "2", "--timeout", "0.2s", expect=1)
    assert "cohort 2 was not switched off within" in result.output
    assert "has no cohort 9" in run("status", "--wait-for-step", "9", expect=1).output
    assert "not a duration" in run("status", "--wait-for-step", "2", "--timeout", "soon", expect=2).output


def test_wait_for_step_returns_when_the_cohort_is_switched_meanwhile(runtime: Runtime) -> None:
    """A waiting script sees the step another process takes while it polls."""
    from rollout.support.operate_workflow import wait_for_step

    build_rollout(runtime)
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 3:
            with runtime.sessions() as s, s.begin():
                s.execute(update(Cohort).where(Cohort.position == 2).values(stage="reject", enforced_at=NOW))

    assert wait_for_step(runtime, 2, timedelta(hours=1), sleep=sleep) is True
    assert len(polls) == 3


def test_next_step_of_a_paused_rollout_says_it_waits(run: Cli, runtime: Runtime) -> None:
    """After the last wave, a paused rollout names the next cohort and that it waits for resume."""
    build_rollout(runtime, paused=True)
    runtime.clock.set(NOW + timedelta(weeks=3))  # type: ignore[attr-defined]
    data = json.loads(run("status", "--json").output)
    assert data["next_action"]["action"] == "switch off cohort 2 (n–z) (paused: waits for `rollout resume`)"
    assert data["paused"]["reason"] == "support queue is full"


def test_refusals_count_from_each_cohorts_own_switch_off_day(runtime: Runtime) -> None:
    """Each cohort counts the refusals of its mailboxes from its own switch-off day on, not from the first one's."""
    from rollout.models import LegacyDay, Mailbox
    from rollout.support.operate_workflow import rollout_status

    from .conftest import T0

    build_rollout(runtime)
    at_now(runtime)
    second_at = T0 + timedelta(days=19)
    with runtime.sessions() as s, s.begin():
        s.execute(update(Cohort).where(Cohort.position == 2).values(stage="reject", enforced_at=second_at))
        nina = s.scalar(select(Mailbox.id).where(Mailbox.address == "nina@home.example"))
        for days, refused in ((17, 5), (19, 2)):  # day 17: after cohort 1's switch-off, before cohort 2's
            day = T0 + timedelta(days=days)
            s.add(
                LegacyDay(
                    mailbox_id=nina, day=day.date(), client_ips=[], senders=[], refused_count=refused, refused_last=day
                )
            )
    status = rollout_status(runtime)
    assert [(c.position, c.refusals) for c in status.cohorts] == [(1, 3), (2, 2)]


def test_unreachable_customers_are_those_whose_latest_known_delivery_bounced(runtime: Runtime) -> None:
    """A bounce counts until a later reminder is seen delivered; a later one not seen in the log yet changes nothing."""
    from rollout.models import Customer, Notice
    from rollout.support.operate_workflow import rollout_status

    build_rollout(runtime)
    at_now(runtime)
    with runtime.sessions() as s, s.begin():
        # K-2's wave 3 notice was written before its wave 2 one (build_rollout): "later" is the ledger's order
        states = {("K-1", 1): "delivered", ("K-1", 2): "bounced", ("K-2", 3): "bounced", ("K-2", 2): "delivered"}
        for (customer, wave), delivery in states.items():
            s.execute(
                update(Notice)
                .where(
                    Notice.wave == wave,
                    Notice.customer_id == select(Customer.id).where(Customer.external_id == customer).scalar_subquery(),
                )
                .values(delivery=delivery, delivery_at=NOW - timedelta(hours=wave), delivery_reply="550 5.1.1 gone")
            )
    status = rollout_status(runtime)
    assert [(u.customer, u.wave) for u in status.unreachable] == [("K-1", 2)] and status.unreachable_count == 1
