"""Benchmark `rollout scan` on a generated provider log (2M and 10M lines), against grep -cE and pflogsumm.

    python bench/scan.py                 # 2M and 10M lines, scan.workers = 0 (one parser per core)
    python bench/scan.py --lines 200000  # a quick run
    python bench/scan.py --workers 1     # parse in the scanning process only
    python bench/scan.py --mix logins --mix ipv6 --lines 2000000   # login-heavy logs

Mixes (rollout.synthetic.maillog.MIXES): ``inbound`` is mostly inbound mail, logins and their
session ends 6 % of the lines; ``logins`` has logins and ends in 30 % of the lines, as a provider's
log has with mail clients polling every few minutes (half of them households polling again and
again from one address); ``ipv6`` is ``logins`` with a quarter of the clients on IPv6.

For each size: write a seeded synthetic log (rollout.synthetic.maillog) with its ground
truth, import a matching inventory into a fresh SQLite database, then on the same file
measure `rollout scan` (a subprocess: lines/s, MB/s, peak RSS), `grep -cE` with a pattern
for the three interesting line kinds, and `pflogsumm`. The scan must match the ground truth
exactly (legacy mailboxes and counts) or the benchmark fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Run, measure  # noqa: E402

from rollout.synthetic.maillog import MIXES, write_maillog  # noqa: E402

GREP_PATTERN = r"(pop3|imap)-login: Login: |: client=|: NOQUEUE: reject: "
START = datetime(2026, 3, 2, tzinfo=UTC)


def mailboxes(n: int) -> list[tuple[str, str | None]]:
    return [(f"user{i:06d}@kunde{i % 997}.example", f"web{i}p1" if i % 7 == 0 else None) for i in range(n)]


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, Run]:
    """Wall time and the child's own peak RSS (MB)."""
    run = measure(argv, env=env)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])}… failed ({run.returncode}):\n{run.stderr[-2000:]}")
    return run.seconds, run.peak_rss_mb, run


def run_size(lines: int, workdir: Path, workers: int = 1, mix: str = "inbound") -> dict[str, object]:
    boxes = mailboxes(max(2000, lines // 200))
    legacy = [a for a, _ in boxes[:: max(1, len(boxes) // 150)]]
    sasl = [a for a, _ in boxes[1 :: max(1, len(boxes) // 900)]]
    log = workdir / f"mail-{mix}-{lines}.log"
    t = time.perf_counter()
    truth = write_maillog(log, boxes, legacy, sasl, start=START, span=timedelta(days=7), lines=lines, seed=42, mix=mix)
    login_lines = _count(log, "-login: Login: ") * 2  # each login has its session end
    generate_s = time.perf_counter() - t
    size_mb = log.stat().st_size / 1e6

    inventory = workdir / "inventory.csv"
    with open(inventory, "w") as out:
        out.write("mailbox,customer_id,customer_email,customer_name,locale,login\n")
        for i, (address, login) in enumerate(boxes):
            out.write(f"{address},k{i // 3},k{i // 3}@customers.example,Kunde {i // 3},de,{login or ''}\n")
    db = workdir / f"bench-{lines}.db"
    db.unlink(missing_ok=True)
    env = {
        **os.environ,
        "ROLLOUT_DATABASE_URL": f"sqlite:///{db}",
        "ROLLOUT_NOW": "2026-03-10T00:00:00+00:00",
        "ROLLOUT_SCAN_WORKERS": str(workers),
    }
    rollout = [sys.executable, "-m", "rollout"]
    subprocess.run([*rollout, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*rollout, "inventory", "import", str(inventory)], env=env, check=True, capture_output=True)

    scan_s, scan_rss, proc = timed([*rollout, "scan", "--json", str(log)], env)
    summary = json.loads(proc.stdout)
    report = json.loads(
        subprocess.run([*rollout, "legacy", "--json"], env=env, check=True, capture_output=True, text=True).stdout
    )
    found = {r["address"]: r["submissions"] for r in report}
    matched = found == dict(truth.legacy)

    grep_s, _, _ = timed(["grep", "-cE", GREP_PATTERN, str(log)])
    pflog_s = None
    if shutil.which("pflogsumm"):
        pflog_s, _, _ = timed(["pflogsumm", "--problems-first", str(log)])
    return {
        "mix": mix,
        "login_share": round(login_lines / truth.lines, 2),
        "workers": workers,
        "lines": truth.lines,
        "MB": round(size_mb, 1),
        "generate_s": round(generate_s, 1),
        "scan_s": round(scan_s, 2),
        "scan_lines_per_s": round(truth.lines / scan_s),
        "scan_MB_per_s": round(size_mb / scan_s, 1),
        "scan_peak_rss_MB": round(scan_rss),
        "grep_s": round(grep_s, 2),
        "grep_lines_per_s": round(truth.lines / grep_s),
        "pflogsumm_s": round(pflog_s, 2) if pflog_s else None,
        "pflogsumm_lines_per_s": round(truth.lines / pflog_s) if pflog_s else None,
        "vs_pflogsumm": round(pflog_s / scan_s, 2) if pflog_s else None,
        "vs_grep": round(scan_s / grep_s, 2),
        "legacy_mailboxes": len(truth.legacy),
        "legacy_submissions": sum(truth.legacy.values()),
        "scan_reported": summary["legacy_submissions"],
        "ground_truth_matched": matched,
    }


def _count(log: Path, fixed: str) -> int:
    return int(subprocess.run(["grep", "-cF", "-e", fixed, str(log)], capture_output=True, text=True).stdout or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, action="append", help="log size(s); default 2,000,000 and 10,000,000")
    parser.add_argument(
        "--workers", type=int, default=0, help="scan.workers for the scan (default 0: one reading thread per core)"
    )
    parser.add_argument(
        "--mix", action="append", choices=sorted(MIXES), help="the log's mix (repeatable); default inbound"
    )
    parser.add_argument("--keep", type=Path, help="work in this directory and keep the files")
    args = parser.parse_args()
    sizes = args.lines or [2_000_000, 10_000_000]
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench-scan-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for mix in args.mix or ["inbound"]:
            for n in sizes:
                results.append(run_size(n, workdir, args.workers, mix))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    keys = [
        "mix",
        "login_share",
        "workers",
        "lines",
        "MB",
        "scan_s",
        "scan_lines_per_s",
        "scan_MB_per_s",
        "scan_peak_rss_MB",
        "grep_lines_per_s",
        "vs_grep",
        "pflogsumm_lines_per_s",
        "vs_pflogsumm",
        "legacy_mailboxes",
        "ground_truth_matched",
    ]
    widths = [max(len(k), *(len(str(r[k])) for r in results)) for k in keys]
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True)))
    for r in results:
        print("  ".join(str(r[k]).rjust(w) for k, w in zip(keys, widths, strict=True)))
    if not all(r["ground_truth_matched"] for r in results):
        raise SystemExit("ground truth NOT matched")


if __name__ == "__main__":
    main()
