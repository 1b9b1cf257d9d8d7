"""Benchmark `rollout inventory import`: 1,000,000 mailboxes for 400,000 customers.

    python bench/inventory.py [--mailboxes 1000000] [--customers 400000] [--postgres URL]

Generates a seeded CSV (realistic local parts, umlauts and other accents, IDN
domains), then times the import as a child process on SQLite and on
PostgreSQL (a throw-away database on the given server), with its peak RSS:
first into an empty database, then the same file again (every row unchanged:
the upsert's comparison path). Targets: at most 60 s on SQLite, peak memory
under 500 MB.
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

    work = Path(tempfile.mkdtemp(prefix="rollout-bench-inventory-"))
    try:
        csv_path = work / "inventory.csv"
        start = time.perf_counter()
        rows = write_inventory_csv(csv_path, args.mailboxes, args.customers, seed=1)
        size_mb = csv_path.stat().st_size / 1e6
        print(f"generated {rows:,} rows ({size_mb:.0f} MB) in {time.perf_counter() - start:.1f} s")
        results = [("SQLite", *run_pair(f"sqlite:///{work / 'bench.db'}", csv_path))]
        if not args.no_postgres:
            url, drop = postgres_database(args.postgres)
            try:
                results.append(("PostgreSQL", *run_pair(url, csv_path)))
            finally:
                drop()
        print()
        print(f"| inventory import, {rows:,} mailboxes | first import | re-import (unchanged) | peak RSS |")
        print("|---|---|---|---|")
        for name, first, again in results:
            peak = max(first.peak_rss_mb, again.peak_rss_mb)
            print(f"| {name} | {first.seconds:.1f} s | {again.seconds:.1f} s | {peak:.0f} MB |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_pair(url: str, csv_path: Path):
    env = {**os.environ, "ROLLOUT_DATABASE_URL": url}
    for argv in (ROLLOUT + ["db", "upgrade"],):
        check(measure(argv, env=env))
    first = check(measure(ROLLOUT + ["inventory", "import", str(csv_path)], env=env))
    again = check(measure(ROLLOUT + ["inventory", "import", str(csv_path)], env=env))
    said = first.stdout.strip().splitlines()[0]
    print(f"{url.split(':')[0]}: first {first.seconds:.1f} s, again {again.seconds:.1f} s; {said}")
    return first, again


if __name__ == "__main__":
    main()
