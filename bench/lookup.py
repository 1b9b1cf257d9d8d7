"""Benchmark `rollout lookup` on a provider with 1,000,000 mailboxes.

    python bench/lookup.py [--mailboxes 1000000] [--customers 400000] [--no-postgres]

Builds a seeded inventory (rollout.synthetic.provider), imports it, then fills
what a rollout in its switch-off phase has: a plan with every mailbox in one of
ten cohorts (half of them switched off), legacy use on 8% of the mailboxes over
five days, an evidence sample each, a six-wave campaign with three waves of
notices to their customers. Then it times lookups of random mailboxes (by
address, in a different case), customer ids, and customer contact addresses
(in capitals: the index on lower(email)), in-process and as a `rollout lookup`
child process (start-up included). SQLite without statistics, as in production
(nothing runs ANALYZE there); PostgreSQL analyzed, as autovacuum would. Target:
well under a second per lookup.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure, postgres_database, statistics_as_in_production  # noqa: E402
from sqlalchemy import insert, select, text  # noqa: E402

from rollout import db  # noqa: E402
from rollout.clock import ManualClock  # noqa: E402
from rollout.config import load_settings  # noqa: E402
from rollout.models import Campaign, Cohort, Customer, Evidence, LegacyDay, Mailbox, Notice, NoticeMailbox, Plan  # noqa: E402
from rollout.runtime import Runtime  # noqa: E402
from rollout.scan.inventory_workflow import import_inventory  # noqa: E402
from rollout.support.operate_workflow import lookup  # noqa: E402
from rollout.synthetic.provider import write_inventory_csv  # noqa: E402

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
COHORTS = 10
LEGACY_SHARE = 0.08
SAMPLES = 200
CLI_SAMPLES = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mailboxes", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=400_000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("ROLLOUT_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rollout-bench-lookup-"))
    try:
        csv_path = work / "inventory.csv"
        write_inventory_csv(csv_path, args.mailboxes, args.customers, seed=1)
        results = [("SQLite", *run_backend(f"sqlite:///{work / 'bench.db'}", csv_path))]
        if not args.no_postgres:
            url, drop = postgres_database(args.postgres)
            try:
                results.append(("PostgreSQL", *run_backend(url, csv_path)))
            finally:
                drop()
        print()
        print(
            f"| lookup, {args.mailboxes:,} mailboxes | address median / p95 / max | customer id median "
            "| contact e-mail median | `rollout lookup` process median |"
        )
        print("|---|---|---|---|---|")
        for name, by_address, by_customer, by_email, cli in results:
            address = f"{ms(statistics.median(by_address))} / {ms(percentile(by_address, 95))} / {ms(max(by_address))}"
            print(
                f"| {name} | {address} | {ms(statistics.median(by_customer))} | {ms(statistics.median(by_email))} "
                f"| {ms(statistics.median(cli))} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def percentile(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def run_backend(url: str, csv_path: Path) -> tuple[list[float], list[float], list[float], list[float]]:
    runtime = Runtime(
        settings=load_settings(environ={}, overrides={"database_url": url}),
        clock=ManualClock(T0 + timedelta(days=40)),
        actor="bench",
    )
    db.upgrade(runtime.engine)
    start = time.perf_counter()
    import_inventory(runtime, csv_path)
    fill_rollout(runtime)
    statistics_as_in_production(runtime.engine)
    print(f"{url.split(':')[0]}: inventory and rollout data in {time.perf_counter() - start:.0f} s")
    rng = random.Random(7)
    with runtime.sessions() as s:
        addresses = [a for (a,) in s.execute(select(Mailbox.address).order_by(Mailbox.id))]
        customers = [(c, e) for c, e in s.execute(select(Customer.external_id, Customer.email))]
    picks = [swap_case(a) for a in rng.sample(addresses, SAMPLES)]
    by_address = timed(runtime, picks)
    by_customer = timed(runtime, [c for c, _ in rng.sample(customers, SAMPLES)])
    by_email = timed(runtime, [e.upper() for _, e in rng.sample(customers, 10)])
    env = {**os.environ, "ROLLOUT_DATABASE_URL": url}
    cli = []
    for address in picks[:CLI_SAMPLES]:
        run = measure([sys.executable, "-m", "rollout", "lookup", address], env=env)
        if run.returncode != 0:
            raise SystemExit(f"rollout lookup {address} failed:\n{run.stderr}")
        cli.append(run.seconds)
    runtime.close()
    return by_address, by_customer, by_email, cli


def swap_case(address: str) -> str:
    return address.swapcase()


def timed(runtime: Runtime, queries: list[str]) -> list[float]:
    times = []
    for query in queries:
        start = time.perf_counter()
        found = lookup(runtime, query)
        times.append(time.perf_counter() - start)
        assert found.mailboxes or found.mailbox_count == 0
    return times


def fill_rollout(runtime: Runtime) -> None:
    """A plan over every mailbox, legacy use, evidence and notices, inserted in bulk."""
    rng = random.Random(3)
    with runtime.sessions() as s, s.begin():
        plan = Plan(created_at=T0, actor="bench", params={}, active=True)
        s.add(plan)
        s.flush()
        keys = [k for (k,) in s.execute(select(Mailbox.sort_key).order_by(Mailbox.sort_key))]
        bounds = [keys[len(keys) * i // COHORTS] for i in range(COHORTS)] + [None]
        for i in range(COHORTS):
            switched = T0 + timedelta(days=30 + i) if i < COHORTS // 2 else None
            cohort = Cohort(
                plan_id=plan.id,
                position=i + 1,
                label=f"{bounds[i]}–",
                start_key=bounds[i],
                end_key=bounds[i + 1],
                mailbox_count=len(keys) // COHORTS,
                share=1 / COHORTS,
                scheduled_at=T0 + timedelta(days=30 + i),
                stage="reject" if switched else "pending",
                enforced_at=switched,
            )
            s.add(cohort)
            s.flush()
            upper = "AND sort_key < :end" if bounds[i + 1] is not None else ""
            s.execute(
                text(
                    "INSERT INTO cohort_members (plan_id, mailbox_id, cohort_id) "
                    f"SELECT :plan, id, :cohort FROM mailboxes WHERE sort_key >= :start {upper}"
                ),
                {"plan": plan.id, "cohort": cohort.id, "start": bounds[i], "end": bounds[i + 1]},
            )
        mailboxes = [(m, c) for m, c in s.execute(select(Mailbox.id, Mailbox.customer_id))]
        legacy = rng.sample(mailboxes, int(len(mailboxes) * LEGACY_SHARE))
        days, evidence = [], []
        for mailbox_id, _ in legacy:
            for d in range(5):
                at = T0 + timedelta(days=d * 5, hours=rng.randrange(8, 18))
                days.append(
                    dict(
                        mailbox_id=mailbox_id,
                        day=at.date(),
                        legacy_count=rng.randrange(1, 9),
                        high_count=1,
                        first_seen=at,
                        last_seen=at,
                        last_ip="198.51.100.7",
                        client_ips=["198.51.100.7"],
                        senders=["x@example.net"],
                        confidence="high",
                        auth_count=0,
                        near_miss_count=0,
                        refused_count=0,
                    )
                )
            line = f"Mar 22 10:00:00 mx1 postfix/smtpd[1]: 4ABC{mailbox_id}: client=dsl.example.net[198.51.100.7]"
            evidence.append(
                dict(
                    mailbox_id=mailbox_id,
                    day=at.date(),
                    kind="legacy",
                    lines=[{"file": "/var/log/mail.log", "offset": 0, "line": line}],
                    details={},
                )
            )
        s.execute(insert(LegacyDay), days)
        s.execute(insert(Evidence), evidence)
        campaign = Campaign(
            created_at=T0,
            actor="bench",
            first_at=T0,
            weeks=6,
            weekday="mon",
            at_time="09:00",
            timezone="UTC",
            active=True,
        )
        s.add(campaign)
        s.flush()
        by_customer: dict[int, list[int]] = {}
        for mailbox_id, customer_id in legacy:
            by_customer.setdefault(customer_id, []).append(mailbox_id)
        for wave in (1, 2, 3):
            notices = [
                dict(
                    campaign_id=campaign.id,
                    wave=wave,
                    customer_id=c,
                    kind="reminder",
                    state="sent",
                    to_address="c@example.net",
                    message_id=f"<{campaign.id}.{wave}.{c}@example.net>",
                    attempts=1,
                    sent_at=T0,
                    created_at=T0,
                )
                for c in by_customer
            ]
            s.execute(insert(Notice), notices)
        ids = {(w, c): n for n, w, c in s.execute(select(Notice.id, Notice.wave, Notice.customer_id))}
        listed = [dict(notice_id=ids[(w, c)], mailbox_id=m) for (w, c) in ids for m in by_customer[c]]
        s.execute(insert(NoticeMailbox), listed)


if __name__ == "__main__":
    main()
