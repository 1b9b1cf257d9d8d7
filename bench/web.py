"""Benchmark `rollout web`'s pages on a provider with 1,000,000 mailboxes: server time per request.

    python bench/web.py [--mailboxes 1000000] [--customers 400000] [--no-postgres] [--keep DIR]

Builds the database of bench/lookup.py (ten cohorts, five switched off, legacy use on 8% of the
mailboxes, three waves of notices), adds refusals by our map for 2% of the switched-off cohorts'
mailboxes, and times each page as the WSGI application serves it (in-process: routing, the
session check against the accounts table, the queries, rendering, the audit row of a customer
view; no network). Reference in the same run: `rollout lookup` of the same addresses, and the
full `rollout status` the overview shows (recomputed in the background every
web.status_refresh_seconds; here once, before the timing, so that the pages are measured alone).
SQLite without statistics, as in production (nothing runs ANALYZE there); PostgreSQL analyzed, as
autovacuum would after the bulk load.
Target: each page under 100 ms.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import postgres_database, statistics_as_in_production  # noqa: E402
from lookup import COHORTS, T0, fill_rollout, ms, percentile  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from rollout import db  # noqa: E402
from rollout.clock import ManualClock  # noqa: E402
from rollout.config import load_settings  # noqa: E402
from rollout.models import Cohort, CohortMember, Customer, LegacyDay, Mailbox  # noqa: E402
from rollout.runtime import Runtime  # noqa: E402
from rollout.scan.inventory_workflow import import_inventory  # noqa: E402
from rollout.support import accounts  # noqa: E402
from rollout.support.operate_workflow import lookup, rollout_status  # noqa: E402
from rollout.support.web.app import SupportDesk  # noqa: E402
from rollout.support.web.sessions import sign_session  # noqa: E402
from rollout.synthetic.provider import write_inventory_csv  # noqa: E402

NOW = T0 + timedelta(days=36)  # cohorts 1-5 switched off on days 30-34
LOOKBACK_DAYS = 30  # bench/lookup.py's legacy use (days 0-20) counts as recent
REFUSED_SHARE = 0.02
SAMPLES = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mailboxes", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=400_000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("ROLLOUT_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument(
        "--keep", type=Path, help="Build the SQLite database here and keep it; reuse it when it exists."
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rollout-bench-web-"))
    try:
        csv_path = work / "inventory.csv"
        results = []
        if not args.no_sqlite:
            path = (args.keep / "web-bench.db") if args.keep else work / "bench.db"
            results.append(("SQLite", run_backend(f"sqlite:///{path}", csv_path, args, reuse=path.exists())))
        if not args.no_postgres:
            url, drop = postgres_database(args.postgres)
            try:
                results.append(("PostgreSQL", run_backend(url, csv_path, args, reuse=False)))
            finally:
                drop()
        print()
        print(
            f"| `rollout web`, {args.mailboxes:,} mailboxes: server time per request | "
            + " | ".join(n for n, _ in results)
            + " |"
        )
        print("|---|" + "---|" * len(results))
        for page in results[0][1]:
            print(f"| {page} | " + " | ".join(figures(r[page]) for _, r in results) + " |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def figures(times: list[float]) -> str:
    if len(times) == 1:
        return ms(times[0])
    return f"{ms(statistics.median(times))} / {ms(percentile(times, 95))} / {ms(max(times))}"


def run_backend(url: str, csv_path: Path, args: argparse.Namespace, reuse: bool) -> dict[str, list[float]]:
    overrides = {"database_url": url, "notices.lookback_days": LOOKBACK_DAYS, "web.status_refresh_seconds": 3600}
    settings = load_settings(environ={}, overrides=overrides)
    runtime = Runtime(settings=settings, clock=ManualClock(NOW), actor="bench")
    if not reuse:
        if not csv_path.exists():
            write_inventory_csv(csv_path, args.mailboxes, args.customers, seed=1)
        db.upgrade(runtime.engine)
        start = time.perf_counter()
        import_inventory(runtime, csv_path)
        fill_rollout(runtime)
        add_refusals(runtime)
        with runtime.sessions() as s, s.begin():
            accounts.add_user(s, "bench", "bench password", NOW, "bench")
        statistics_as_in_production(runtime.engine)
        print(f"{url.split(':')[0]}: inventory and rollout data in {time.perf_counter() - start:.0f} s")
    try:
        return time_pages(runtime)
    finally:
        runtime.close()


def add_refusals(runtime: Runtime) -> None:
    """Refusals by our map the day after the last switch-off, for 2% of the switched-off cohorts' mailboxes."""
    rng = random.Random(5)
    with runtime.sessions() as s, s.begin():
        switched = select(Cohort.id).where(Cohort.enforced_at.is_not(None))
        members = list(s.scalars(select(CohortMember.mailbox_id).where(CohortMember.cohort_id.in_(switched))))
        day = NOW - timedelta(days=1)
        rows = [
            dict(
                mailbox_id=m,
                day=day.date(),
                legacy_count=0,
                high_count=0,
                client_ips=[],
                senders=[],
                auth_count=0,
                near_miss_count=0,
                refused_count=rng.randrange(1, 6),
                refused_last=day,
            )
            for m in rng.sample(members, int(len(members) * REFUSED_SHARE))
        ]
        s.execute(insert(LegacyDay), rows)


def time_pages(runtime: Runtime) -> dict[str, list[float]]:
    with runtime.sessions() as s, s.begin():
        key = accounts.cookie_key(s, NOW)
    desk = SupportDesk(runtime, key)
    cookie = "rollout_session=" + sign_session(key, "bench", time.time() + 3600)
    rng = random.Random(7)
    with runtime.sessions() as s:
        addresses = rng.sample([a for (a,) in s.execute(select(Mailbox.address))], SAMPLES)
        customers = rng.sample([(c, e) for c, e in s.execute(select(Customer.external_id, Customer.email))], SAMPLES)
    picks = [a.swapcase() for a in addresses]

    def get(path: str, **query: str) -> Callable[[], Any]:
        return lambda: request(desk, cookie, path, urlencode(query))

    started = time.perf_counter()
    rollout_status(runtime)
    status_seconds = time.perf_counter() - started
    request(desk, cookie, "/", "")  # the first overview computes the status and starts its background refresh
    results = {
        "`rollout status` as the overview's background refresh computes it (reference)": [status_seconds],
        "overview `/` (from the refreshed status)": timed([get("/") for _ in range(20)]),
        "search by address in another case → redirect": timed([get("/search", q=a) for a in picks]),
        "customer page of that address `/customer/ID?q=ADDRESS`": timed(
            [get(f"/customer/{quote(customer_of(runtime, a), safe='')}", q=a) for a in picks]
        ),
        "`rollout lookup` of the same addresses, in-process (reference)": timed(
            [functools.partial(lookup, runtime, a) for a in picks]
        ),
        "search by contact address → redirect": timed([get("/search", q=e.upper()) for _, e in customers[:20]]),
        "search that finds nothing (404 page)": timed(
            [get("/search", q=f"nobody{i}@nowhere.example") for i in range(20)]
        ),
        "`/api/customer/ID`": timed([get(f"/api/customer/{quote(c, safe='')}") for c, _ in customers[:50]]),
    }
    for name, query in (
        ("all", {}),
        ("still legacy", {"filter": "legacy"}),
        ("refused since switch-off", {"filter": "refused"}),
    ):
        results[f"cohort page, {name}: first and 20 following pages"] = walk_cohort(
            desk, cookie, rng.randrange(1, COHORTS // 2 + 1), query
        )
    return results


def customer_of(runtime: Runtime, address: str) -> str:
    return lookup(runtime, address).customer_id


def walk_cohort(desk: SupportDesk, cookie: str, position: int, query: dict[str, str]) -> list[float]:
    times, after = [], ""
    for _ in range(21):
        start = time.perf_counter()
        body = request(desk, cookie, f"/cohort/{position}", urlencode({**query, **({"after": after} if after else {})}))
        times.append(time.perf_counter() - start)
        marker = body.rfind(b"after=")
        if marker < 0:
            break
        after = body[marker + 6 : body.index(b'"', marker)].decode()
    return times


def request(desk: SupportDesk, cookie: str, path: str, query: str) -> bytes:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "HTTP_COOKIE": cookie,
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
    }
    status: list[str] = []
    body = b"".join(desk(environ, lambda s, h: status.append(s)))
    if not status[0].startswith(("200", "303", "404")):
        raise SystemExit(f"{path}?{query}: {status[0]}")
    return body


def timed(calls: list[Callable[[], Any]]) -> list[float]:
    times = []
    for call in calls:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


if __name__ == "__main__":
    main()
