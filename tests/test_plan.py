"""`rollout plan`: balanced cohorts from the inventory, stored only with --apply, re-planning rules."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rollout.models import AuditEvent, Cohort, CohortMember, Mailbox, Plan
from rollout.plan.plans import schedule_for
from rollout.runtime import Runtime

from .conftest import T0, Cli
from .plan_support import add_legacy, configure, import_locals, mailbox_id, tell

LOCALS = [
    "Ärger",
    "anna",
    "Bernd",
    "carla",
    "çelik",
    "dora",
    "emil",
    "1und1",
    "_admin",
    "zoe",
    "sabine",
    "sandra",
    "stefan",
    "susanne",
    "sören",
    "svenja",
]
START = ("--start", "2026-03-09 08:00", "--every", "2h", "--tz", "UTC", "--window", "08:00-17:00")


@pytest.fixture
def inventory(runtime: Runtime, tmp_path: Path) -> Runtime:
    configure(runtime, tmp_path)
    import_locals(runtime, tmp_path, LOCALS)
    return runtime


def plan_json(run: Cli, *args: str) -> dict:
    return json.loads(run("plan", *args, *START, "--json").output)


def test_plan_prints_cohorts_and_stores_nothing_without_apply(run: Cli, inventory: Runtime) -> None:
    """Without --apply the table is shown and no plan exists afterwards."""
    out = run("plan", "--cohorts", "3", *START).output
    assert "range" in out and "largest share" in out and "not stored" in out
    with inventory.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Plan)) == 0


def test_initials_fold_accents_digits_and_other(run: Cli, inventory: Runtime) -> None:
    """Ä counts as a, ç as c, digits come first and _ last: the cohorts cover every mailbox once."""
    data = plan_json(run, "--cohorts", "4")
    assert sum(c["mailboxes"] for c in data["cohorts"]) == len(LOCALS)
    labels = [c["label"] for c in data["cohorts"]]
    assert labels[0].startswith("0") and labels[-1].endswith("other")
    data = plan_json(run, "--cohorts", "4", "--apply")
    with inventory.sessions() as session:
        schedule = schedule_for(
            session,
            [
                mailbox_id(inventory, "Ärger@example.de"),
                mailbox_id(inventory, "_admin@example.de"),
                mailbox_id(inventory, "çelik@example.de"),
            ],
        )
    first, last = data["cohorts"][0]["label"], data["cohorts"][-1]["label"]
    assert schedule[mailbox_id(inventory, "_admin@example.de")].cohort_label == last
    assert schedule[mailbox_id(inventory, "Ärger@example.de")].cohort_label in (first, data["cohorts"][1]["label"])
    assert schedule[mailbox_id(inventory, "çelik@example.de")].stage == "pending"


def test_split_letters_cuts_a_heavy_letter_at_two_letter_prefixes(run: Cli, inventory: Runtime) -> None:
    """s holds 6 of 16 mailboxes: without a split the best is 6; cut at sa, so, st, su, sv it gets lower."""
    whole = plan_json(run, "--cohorts", "4")
    split = plan_json(run, "--cohorts", "4", "--split-letters")
    assert max(c["mailboxes"] for c in whole["cohorts"]) == 6
    assert max(c["mailboxes"] for c in split["cohorts"]) < 6
    assert any(len(c["label"].split("–")[0]) == 2 for c in split["cohorts"])


def test_apply_stores_members_and_audit(run: Cli, inventory: Runtime) -> None:
    """--apply stores the plan, one member row per mailbox, and an audit event."""
    data = plan_json(run, "--cohorts", "3", "--apply")
    assert data["applied"]
    with inventory.sessions() as session:
        members = session.scalar(select(func.count()).select_from(CohortMember))
        counts = [c.mailbox_count for c in session.scalars(select(Cohort).order_by(Cohort.position))]
        assert members == len(LOCALS) == sum(counts)
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "plan.apply")).one()
    assert event.actor == "tester" and event.details["cohorts"] == 3 and len(event.details["layout"]) == 3


def test_max_share_and_weight_legacy(run: Cli, inventory: Runtime) -> None:
    """--max-share picks the number of cohorts; --weight legacy balances the mailboxes still legacy."""
    data = plan_json(run, "--max-share", "0.5", "--split-letters")
    assert data["largest_share"] <= 0.5
    for address in ("anna@example.de", "emil@example.de", "stefan@example.de", "zoe@example.de"):
        add_legacy(inventory, address, T0.date() - timedelta(days=1))
    add_legacy(inventory, "dora@example.de", T0.date() - timedelta(days=1), auth_last=T0)  # switched since
    data = plan_json(run, "--cohorts", "2", "--weight", "legacy")
    assert [c["legacy"] for c in data["cohorts"]] == [2, 2]


def test_times_follow_window(run: Cli, inventory: Runtime) -> None:
    """Cohorts are 2 h apart inside 08:00-17:00 and move to the next morning."""
    data = plan_json(run, "--cohorts", "6")
    times = [c["scheduled_at"][11:16] for c in data["cohorts"]]
    assert times == ["08:00", "10:00", "12:00", "14:00", "16:00", "08:00"]


def test_too_many_cohorts_is_a_clear_error(run: Cli, inventory: Runtime) -> None:
    """Asking for more cohorts than letters with mailboxes names the limit."""
    result = run("plan", "--cohorts", "40", *START, expect=1)
    assert "at most" in result.output and "--split-letters" in result.output


def test_replan_keeps_started_cohorts(run: Cli, inventory: Runtime) -> None:
    """After a step, re-planning keeps the started cohort and re-cuts only the rest."""
    plan_json(run, "--cohorts", "3", "--apply")
    inventory.clock.set(datetime(2026, 3, 9, 8, 30, tzinfo=T0.tzinfo))  # type: ignore[attr-defined]
    run("step", "--yes")
    data = plan_json(run, "--cohorts", "4", "--apply")
    assert data["cohorts"][0]["kept"] and data["cohorts"][0]["stage"] == "reject"
    assert len(data["cohorts"]) == 5
    with inventory.sessions() as session:
        plan = session.scalars(select(Plan).where(Plan.active)).one()
        assert sum(c.mailbox_count for c in plan.cohorts) == len(LOCALS)
        assert session.scalar(
            select(func.count()).select_from(CohortMember).where(CohortMember.plan_id == plan.id)
        ) == len(LOCALS)


def test_no_earlier_date_than_told(run: Cli, inventory: Runtime) -> None:
    """A plan that would move a told mailbox earlier is refused, naming it; later is fine."""
    tell(inventory, "zoe@example.de", datetime(2026, 3, 20, 8, 0, tzinfo=T0.tzinfo))
    tell(inventory, "anna@example.de", datetime(2026, 3, 1, 8, 0, tzinfo=T0.tzinfo), state="failed")  # never told
    result = run("plan", "--cohorts", "3", *START, "--apply", expect=1)
    assert "zoe@example.de" in result.output and "anna" not in result.output
    with inventory.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Plan)) == 0
    later = ("--start", "2026-03-23 08:00", "--every", "2h", "--tz", "UTC")
    assert json.loads(run("plan", "--cohorts", "3", *later, "--apply", "--json").output)["applied"]


def test_plan_requires_cohorts_or_max_share(run: Cli, inventory: Runtime) -> None:
    """Neither or both of --cohorts and --max-share is a usage error."""
    run("plan", *START, expect=2)
    run("plan", "--cohorts", "2", "--max-share", "0.5", *START, expect=2)


def test_benchmark_inventory_is_balanced_within_one_unit(runtime: Runtime, tmp_path: Path) -> None:
    """On the synthetic provider inventory the largest cohort is within one bucket (or prefix) of 1/N."""
    from rollout.plan.plan_workflow import PlanRequest, make_plan
    from rollout.scan.inventory import import_csv, stats
    from rollout.synthetic.provider import write_inventory_csv

    configure(runtime, tmp_path)
    path = tmp_path / "provider.csv"
    write_inventory_csv(path, 20_000, 8_000, seed=1)
    with runtime.sessions() as session, session.begin():
        import_csv(session, path, T0)
        heaviest_bucket = max(b.share for b in stats(session).buckets)
        prefix = func.substr(Mailbox.sort_key, 1, 2)
        prefixes = session.execute(select(prefix, func.count()).group_by(prefix)).all()
    heaviest_prefix = max(n for _, n in prefixes) / 20_000
    for n in (4, 8, 12):
        request = PlanRequest(start=datetime(2026, 3, 9, 8, 0), every=timedelta(hours=2), cohorts=n, tz="UTC")
        plain = make_plan(runtime, request).proposal
        assert len(plain.cohorts) == n and plain.largest_share <= 1 / n + heaviest_bucket
        request.split_letters = True
        split = make_plan(runtime, request).proposal
        assert split.largest_share <= 1 / n + heaviest_prefix
        assert split.largest_share <= plain.largest_share
