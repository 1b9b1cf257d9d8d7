"""The step's hold-back: a mailbox still on the legacy path without a notice delivered in time stays out of the map."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from rollout.models import AuditEvent, HeldMailbox
from rollout.runtime import Runtime

from .conftest import T0, Cli
from .plan_support import add_legacy, apply_plan, configure, import_locals, warn

LOCALS = ["anna", "bert", "carl", "dora", "emil", "fritz"]
BOUNCE = "host mx.kunde.test[192.0.2.9] said: 550 5.1.1 <k2@example.org>: User unknown (in reply to RCPT TO command)"


@pytest.fixture
def planned(run: Cli, runtime: Runtime, tmp_path: Path) -> Path:
    """Cohorts a–b at T0, c–d at T0+10d, e–f at T0+20d. anna and emil were warned long ago; bert never; carl's
    notice bounced. Returns the map path."""
    map_path = configure(runtime, tmp_path)
    import_locals(runtime, tmp_path, LOCALS)
    day = T0.date() - timedelta(days=1)
    add_legacy(runtime, "anna@example.de", day)
    add_legacy(runtime, "bert@example.de", day, warned=False)
    add_legacy(runtime, "carl@example.de", day, warned=False)
    warn(runtime, "carl@example.de", T0 - timedelta(days=20), delivery="bounced", reply=BOUNCE)
    add_legacy(runtime, "dora@example.de", day, warned=False)
    add_legacy(runtime, "emil@example.de", day)
    apply_plan(run, 3, "10d")
    return map_path


def still_in_use(runtime: Runtime, *locals_: str) -> None:
    """Legacy use nine days after T0: still on the legacy path at the later steps (lookback 14 days)."""
    for local in locals_:
        add_legacy(runtime, f"{local}@example.de", T0.date() + timedelta(days=9), warned=False)


def map_keys(path: Path) -> set[str]:
    return {line.split("\t", 1)[0] for line in path.read_text().splitlines() if line and not line.startswith("#")}


def test_dry_run_names_the_unwarned_and_the_step_keeps_them_out_of_the_map(
    run: Cli, runtime: Runtime, planned: Path
) -> None:
    """bert had no notice: step --dry-run names him, the step holds him back (status, lookup, audit say why),
    and anna, warned in time, goes into the map."""
    dry = run("step", "--dry-run").output
    assert "held back, not warned in time (1): kept out of the map" in dry
    assert "bert@example.de (K1): no notice; no date yet" in dry
    assert "+ bert@example.de" not in dry and "+ anna@example.de" in dry
    result = json.loads(run("step", "--yes", "--json").stdout)
    assert [(h["address"], h["reason"]) for h in result["held"]] == [("bert@example.de", "no notice")]
    assert map_keys(planned) == {"anna@example.de"}
    status = json.loads(run("status", "--json").stdout)
    assert (status["held_count"], status["held"][0]["address"], status["held"][0]["reason"]) == (
        1,
        "bert@example.de",
        "no notice",
    )
    assert "held back, not warned in time (kept out of the map): 1" in run("status").output
    lookup = run("lookup", "bert@example.de").output
    assert "HELD BACK from cohort a–b" in lookup and "no notice; not in the map; no new date yet" in lookup
    assert "a client sending without AUTH now gets" not in lookup
    with runtime.sessions() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "step")).one()
    assert event.details["held"] == [{"mailbox": "bert@example.de", "reason": "no notice", "redated_to": None}]


def test_a_bounced_or_late_notice_holds_back_and_a_late_one_gets_a_later_cohort(
    run: Cli, runtime: Runtime, planned: Path
) -> None:
    """carl's notice bounced, dora's came two days before the switch-off: both held; dora is re-dated into the
    cohort at least min_warning_days after her notice and switched off with it, carl stays held."""
    run("step", "--yes")
    warn(runtime, "dora@example.de", T0 + timedelta(days=8), delivery="delivered")
    still_in_use(runtime, "bert", "carl", "dora")
    runtime.clock.set(T0 + timedelta(days=10))  # type: ignore[attr-defined]
    held = {h["address"]: h for h in json.loads(run("step", "--yes", "--json").stdout)["held"]}
    assert (held["carl@example.de"]["reason"], held["carl@example.de"]["redated_to"]) == ("notice bounced", None)
    assert (held["dora@example.de"]["reason"], held["dora@example.de"]["redated_to"]) == ("notice too late", "e–f")
    assert map_keys(planned) == {"anna@example.de"}
    runtime.clock.set(T0 + timedelta(days=20))  # type: ignore[attr-defined]
    result = json.loads(run("step", "--yes", "--json").stdout)
    assert result["released"] == ["dora@example.de"]
    assert map_keys(planned) == {"anna@example.de", "dora@example.de", "emil@example.de", "fritz@example.de"}
    assert sorted(h["address"] for h in result["held"]) == ["bert@example.de", "carl@example.de"]


def test_force_does_not_include_the_unwarned_but_include_unwarned_does(
    run: Cli, runtime: Runtime, planned: Path
) -> None:
    """--force overrides guards, never the hold-back; --include-unwarned --reason switches the held off, audited."""
    runtime.clock.set(T0 - timedelta(hours=5))  # type: ignore[attr-defined]  # before the cohort's time: a guard
    assert "needs --reason" in run("step", "--yes", "--include-unwarned", expect=2).output
    run("step", "--yes", "--force", "--reason", "early on purpose")
    assert map_keys(planned) == {"anna@example.de"}
    runtime.clock.set(T0 + timedelta(days=10))  # type: ignore[attr-defined]
    result = json.loads(run("step", "--yes", "--include-unwarned", "--reason", "support phoned them", "--json").stdout)
    assert result["held"] == []
    assert result["included_unwarned"] == ["bert@example.de", "carl@example.de", "dora@example.de"]
    assert map_keys(planned) == {"anna@example.de", "bert@example.de", "carl@example.de", "dora@example.de"}
    with runtime.sessions() as session:
        holds = session.scalars(select(HeldMailbox)).all()
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "step").order_by(AuditEvent.id.desc())
        ).first()
    assert {(h.release, h.release_reason) for h in holds} == {("included", "support phoned them")}
    assert event is not None and event.details["reason"] == "support phoned them"
    assert event.details["included_unwarned"] == ["bert@example.de", "carl@example.de", "dora@example.de"]


def test_a_notice_delivered_after_the_hold_gives_a_date_and_switching_to_auth_ends_the_hold(
    run: Cli, runtime: Runtime, planned: Path
) -> None:
    """bert, held without a notice, gets one delivered: the next step dates him into a cohort 7 days later;
    a held mailbox that switches to SMTP AUTH is released (nothing of its legacy use is left to refuse)."""
    run("step", "--yes")
    warn(runtime, "bert@example.de", T0 + timedelta(hours=1), delivery="delivered")
    still_in_use(runtime, "bert", "carl", "dora")
    runtime.clock.set(T0 + timedelta(days=10))  # type: ignore[attr-defined]
    held = {h["address"]: h for h in json.loads(run("step", "--yes", "--json").stdout)["held"]}
    assert held["bert@example.de"]["redated_to"] == "e–f"
    add_legacy(
        runtime,
        "carl@example.de",
        T0.date() + timedelta(days=11),
        auth_last=T0 + timedelta(days=11, hours=9),
        warned=False,
    )
    runtime.clock.set(T0 + timedelta(days=20))  # type: ignore[attr-defined]
    result = json.loads(run("step", "--yes", "--json").stdout)
    assert result["released"] == ["bert@example.de"]
    assert [(h["address"], h["reason"]) for h in result["held"]] == [("dora@example.de", "no notice")]
    assert {"bert@example.de", "carl@example.de"} <= map_keys(planned)
    with runtime.sessions() as session:
        carl = session.scalars(select(HeldMailbox).where(HeldMailbox.reason == "notice bounced")).one()
    assert carl.release == "switched"


def test_the_scheduler_never_includes_the_unwarned(runtime: Runtime, planned: Path) -> None:
    """The scheduler's step job obeys the hold-back like a step by hand: bert stays out of the map."""
    from rollout.scheduler import Planned, do_step

    result = do_step(runtime, Planned(id="step", job="step"))
    assert [h.address for h in result.held] == ["bert@example.de"] and result.included_unwarned == []
    assert map_keys(planned) == {"anna@example.de"}


def test_the_final_step_does_not_retire_the_legacy_path_under_the_held(
    run: Cli, runtime: Runtime, planned: Path, tmp_path: Path
) -> None:
    """Retiring the legacy map would cut the held off too: refused (also with --force) while any is held;
    --include-unwarned --reason retires it and names them in the audit event."""
    import subprocess

    pop = tmp_path / "pop-before-smtp"
    pop.write_text("192.0.2.1 OK\n")
    subprocess.run(["postmap", f"hash:{pop}"], check=True, timeout=60)
    configure(runtime, tmp_path, legacy_map=f"hash:{pop}")
    still_in_use(runtime, "bert", "carl", "dora")
    for days in (0, 10, 20):
        runtime.clock.set(T0 + timedelta(days=days))  # type: ignore[attr-defined]
        run("step", "--yes")
    runtime.clock.set(T0 + timedelta(days=21))  # type: ignore[attr-defined]
    refused = run("step", "--yes", "--force", "--reason", "done", expect=1).stderr
    assert "held back as not warned in time (bert@example.de, carl@example.de, dora@example.de)" in refused
    assert pop.read_text() == "192.0.2.1 OK\n"
    out = run("step", "--yes", "--include-unwarned", "--reason", "support phoned all three").output
    assert (
        "switched off although not warned in time (--include-unwarned): "
        "bert@example.de, carl@example.de, dora@example.de" in out
    )
    with runtime.sessions() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "retire")).one()
    assert event.details["included_unwarned"] == ["bert@example.de", "carl@example.de", "dora@example.de"]
