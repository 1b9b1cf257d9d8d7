"""Benchmark `rollout plan --apply` over 1,000,000 mailboxes and one `rollout step` of a 250,000-mailbox cohort.

    python bench/plan_step.py [--mailboxes 1000000] [--cohorts 4] [--postgres URL | --no-postgres]

Imports a seeded inventory (untimed here: bench/inventory.py measures it), then
times, as child processes on SQLite and on PostgreSQL: the plan (partition plus
storing one member row per mailbox), and the first step (map generation, the real
`postmap`, `postmap -q` samples, the atomic rename). Then `postmap` alone on a copy
of the same map file, for comparison. Targets: plan under 5 s; step under 15 s and
within 2x of postmap alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import check, measure, postgres_database  # noqa: E402

from rollout.synthetic.provider import write_inventory_csv  # noqa: E402

ROLLOUT = [sys.executable, "-m", "rollout"]
START = "2026-04-13 08:00"
NOW = "2026-04-13T08:30:00+00:00"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mailboxes", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=400_000)
    parser.add_argument("--cohorts", type=int, default=4)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("ROLLOUT_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rollout-bench-plan-"))
    try:
        csv_path = work / "inventory.csv"
        rows = write_inventory_csv(csv_path, args.mailboxes, args.customers, seed=1)
        print(f"generated {rows:,} mailboxes")
        results = [("SQLite", *run_one(f"sqlite:///{work / 'bench.db'}", csv_path, work / "sqlite", args.cohorts))]
        if not args.no_postgres:
            url, drop = postgres_database(args.postgres)
            try:
                results.append(("PostgreSQL", *run_one(url, csv_path, work / "postgres", args.cohorts)))
            finally:
                drop()
        print()
        print(
            f"| {rows:,} mailboxes, {args.cohorts} cohorts "
            "| plan --apply | step (first cohort) | postmap alone | step / postmap |"
        )
        print("|---|---|---|---|---|")
        for name, plan, step, entries, postmap in results:
            ratio = step / postmap
            print(f"| {name} | {plan:.1f} s | {step:.1f} s ({entries:,} entries) | {postmap:.1f} s | {ratio:.1f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_one(url: str, csv_path: Path, maps: Path, cohorts: int) -> tuple[float, float, int, float]:
    maps.mkdir()
    map_path = maps / "smtp-after-pop-disabled"
    env = {
        **os.environ,
        "ROLLOUT_DATABASE_URL": url,
        "ROLLOUT_NOW": NOW,
        "ROLLOUT_ENFORCEMENT_MAP_PATH": str(map_path),
        "ROLLOUT_ROLLOUT_WINDOW": "00:00-23:59",
        "ROLLOUT_ROLLOUT_TIMEZONE": "UTC",
    }
    check(measure(ROLLOUT + ["db", "upgrade"], env=env))
    check(measure(ROLLOUT + ["inventory", "import", str(csv_path)], env=env))
    plan = check(
        measure(
            ROLLOUT + ["plan", "--cohorts", str(cohorts), "--start", START, "--every", "1d", "--tz", "UTC", "--apply"],
            env=env,
        )
    )
    print(plan.stdout)
    step = check(measure(ROLLOUT + ["step", "--yes"], env=env))
    entries = sum(1 for line in map_path.read_text().splitlines() if line and not line.startswith("#"))
    copy = maps / "copy"
    shutil.copyfile(map_path, copy)
    start = time.perf_counter()
    check(measure(["postmap", f"hash:{copy}"]))
    postmap = time.perf_counter() - start
    print(f"{url.split(':')[0]}: plan {plan.seconds:.1f} s, step {step.seconds:.1f} s, postmap alone {postmap:.1f} s")
    return plan.seconds, step.seconds, entries, postmap


if __name__ == "__main__":
    main()
