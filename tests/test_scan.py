"""`rollout scan` / `rollout legacy` on a database: ground truth, incremental scans, rotation, the CLI."""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from rollout.models import Evidence, LegacyDay, Mailbox, ReviewItem, ScanCarry, ScanSource, UnknownLogin
from rollout.runtime import Runtime
from rollout.scan.inventory_workflow import import_inventory
from rollout.scan.scan_workflow import legacy_report, review_report, scan_logs
from rollout.synthetic.maillog import GroundTruth, write_maillog

from .scan_support import write_inventory

START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
MAILBOXES = [(f"user{i:02d}@example.org", f"login{i:02d}" if i % 4 == 0 else None) for i in range(30)]
LEGACY = [a for a, _ in MAILBOXES[:5]]
SASL = [a for a, _ in MAILBOXES[3:12]]


@pytest.fixture
def inventory(runtime: Runtime, tmp_path: Path) -> None:
    import_inventory(runtime, write_inventory(tmp_path / "inventory.csv", MAILBOXES))


def synthetic(path: Path, lines: int = 3000, seed: int = 3, **kw: Any) -> GroundTruth:
    return write_maillog(
        path, MAILBOXES, LEGACY, SASL, start=START, span=timedelta(hours=12), lines=lines, seed=seed, **kw
    )


def snapshot(runtime: Runtime) -> dict[str, Any]:
    with runtime.sessions() as s:

        def rows(model: Any, *skip: str) -> list[dict[str, Any]]:
            cols = [c.key for c in model.__table__.columns if c.key not in skip]
            return sorted(
                json.dumps({c: getattr(r, c) for c in cols}, default=str, sort_keys=True)
                for r in s.scalars(select(model))
            )

        return {m.__name__: rows(m, "id") for m in (LegacyDay, Evidence, ReviewItem, UnknownLogin)}


def clear(runtime: Runtime) -> None:
    with runtime.sessions() as s, s.begin():
        for model in (LegacyDay, Evidence, ReviewItem, UnknownLogin, ScanSource, ScanCarry):
            s.execute(delete(model))


def test_scan_finds_exactly_the_ground_truth(runtime: Runtime, inventory: None, tmp_path: Path) -> None:
    """Every legacy mailbox of a synthetic provider log is found with its exact count; SASL use is counted."""
    truth = synthetic(tmp_path / "mail.log")
    summary = scan_logs(runtime, [tmp_path / "mail.log"])
    report = {r.address: r for r in legacy_report(runtime)}
    assert {a: r.submissions for a, r in report.items()} == dict(truth.legacy)
    assert summary.legacy_submissions == sum(truth.legacy.values())
    assert summary.ambiguous == truth.ambiguous == len([e for e in review_report(runtime) if e.kind == "ambiguous"])
    assert summary.authenticated == sum(truth.auth.values())
    with runtime.sessions() as s:  # each mailbox's own SASL count, on its days
        per_mailbox = s.execute(
            select(Mailbox.address, func.sum(LegacyDay.auth_count)).join(Mailbox).group_by(Mailbox.address)
        ).all()
    assert {a: n for a, n in per_mailbox if n} == dict(truth.auth)
    assert summary.files[0].lines == truth.lines and summary.files[0].unparsed == 0


def test_rescanning_adds_nothing_and_a_grown_file_adds_only_the_new_part(
    runtime: Runtime, inventory: None, tmp_path: Path
) -> None:
    """A second scan of the same files changes nothing; appended lines are read once."""
    log = tmp_path / "mail.log"
    synthetic(log)
    scan_logs(runtime, [log])
    before = snapshot(runtime)
    again = scan_logs(runtime, [log])
    assert again.lines == 0 and snapshot(runtime) == before
    extra = tmp_path / "extra.log"
    truth2 = write_maillog(
        extra, MAILBOXES, LEGACY, SASL, start=START + timedelta(days=1), span=timedelta(hours=1), lines=500, seed=9
    )
    with open(log, "a") as out:
        out.write(extra.read_text())
    more = scan_logs(runtime, [log])
    assert more.lines == truth2.lines
    assert more.legacy_submissions == sum(truth2.legacy.values())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=6))
def test_scanning_in_pieces_equals_scanning_at_once(
    runtime: Runtime, inventory: None, tmp_path: Path, cuts: list[float]
) -> None:
    """A log scanned as it grows, cut at random byte positions (even mid-line), gives exactly one scan's result."""
    whole_path = tmp_path / "whole.log"
    if not whole_path.exists():
        synthetic(whole_path, lines=2500, seed=11)
    data = whole_path.read_bytes()
    clear(runtime)
    grown = tmp_path / "grown.log"
    grown.write_bytes(data)
    scan_logs(runtime, [grown])
    at_once = snapshot(runtime)
    clear(runtime)
    grown.write_bytes(b"")
    written = 0
    for cut in sorted(int(c * len(data)) for c in cuts) + [len(data)]:
        with open(grown, "ab") as out:
            out.write(data[written:cut])
        written = max(written, cut)
        scan_logs(runtime, [grown])
    assert snapshot(runtime) == at_once
    scan_logs(runtime, [grown])
    assert snapshot(runtime) == at_once


def half_scanned_then_grown(runtime: Runtime, log: Path) -> tuple[Path, GroundTruth]:
    """A synthetic log scanned when half written, then completed (the second half not scanned yet)."""
    truth = synthetic(log, lines=1200)
    data = log.read_bytes()
    log.write_bytes(data[: len(data) // 2])
    scan_logs(runtime, [log])
    with open(log, "ab") as out:
        out.write(data[len(data) // 2 :])
    return log, truth


def test_rotation_continues_in_the_renamed_file_and_copytruncate_restarts(
    runtime: Runtime, inventory: None, tmp_path: Path
) -> None:
    """maillog → maillog.1 continues where it stopped; a truncated file is read from its start."""
    log, truth = half_scanned_then_grown(runtime, tmp_path / "maillog")
    os.rename(log, tmp_path / "maillog.1")
    later = write_maillog(
        log, MAILBOXES, LEGACY, SASL, start=START + timedelta(days=1), span=timedelta(hours=2), lines=600, seed=5
    )
    summary = scan_logs(runtime, [tmp_path / "maillog.1", log])
    assert summary.files[1].restarted
    total = sum(r.submissions for r in legacy_report(runtime))
    assert total == sum(truth.legacy.values()) + sum(later.legacy.values())
    log.write_bytes(b"")  # copytruncate
    after = scan_logs(runtime, [log])
    assert after.lines == 0 and sum(r.submissions for r in legacy_report(runtime)) == total


def test_gzip_log_and_unknown_login_users(runtime: Runtime, inventory: None, tmp_path: Path) -> None:
    """A gzip log is scanned like a plain one; logins by users not in the inventory are reported, not dropped."""
    plain = tmp_path / "plain.log"
    truth = synthetic(plain)
    stranger = "Mar  2 18:30:00 mx1 dovecot[700]: pop3-login: Login: user=<ghost@example.org>, method=PLAIN, rip=192.0.2.200, lip=192.0.2.1\n"  # noqa: E501
    (tmp_path / "mail.log.1").write_bytes(gzip.compress(plain.read_bytes() + stranger.encode()))
    summary = scan_logs(runtime, [tmp_path / "mail.log.1"])
    assert summary.legacy_submissions == sum(truth.legacy.values())
    with runtime.sessions() as s:
        ghost = s.get(UnknownLogin, "ghost@example.org")
        assert ghost is not None and ghost.count == 1 and ghost.last_ip == "192.0.2.200"


def test_evidence_keeps_the_raw_lines_with_file_and_offset(runtime: Runtime, inventory: None, tmp_path: Path) -> None:
    """Each legacy day has one evidence sample whose lines are exactly the file's bytes at the offsets."""
    log = tmp_path / "mail.log"
    synthetic(log)
    scan_logs(runtime, [log])
    data = log.read_bytes()
    with runtime.sessions() as s:
        samples = s.scalars(select(Evidence).where(Evidence.kind == "legacy")).all()
        assert samples
        for ev in samples:
            assert any("-login: Login:" in item["line"] for item in ev.lines)
            for item in ev.lines:
                assert data[item["offset"] :].split(b"\n", 1)[0].decode() == item["line"]
                assert item["file"] == str(log)


def test_cli_scan_and_legacy(run: Any, inventory: None, tmp_path: Path) -> None:
    """`rollout scan --json` summarises per file; `rollout legacy` filters by customer and since."""
    log = tmp_path / "mail.log"
    truth = synthetic(log)
    result = run("scan", str(log), "--json")
    summary = json.loads(result.stdout)
    assert summary["files"][0]["lines"] == truth.lines and summary["legacy_submissions"] == sum(truth.legacy.values())
    rows = json.loads(run("legacy", "--json").stdout)
    assert {r["address"] for r in rows} == set(truth.legacy)
    assert {
        "address",
        "customer",
        "last_seen",
        "submissions",
        "days",
        "client_ips",
        "senders",
        "confidence",
        "switched",
    } <= set(rows[0])
    only_c0 = json.loads(run("legacy", "--json", "--customer", "c0").stdout)
    assert {r["address"] for r in only_c0} == {a for a in truth.legacy if int(a[4:6]) // 3 == 0}
    assert json.loads(run("legacy", "--json", "--since", "2026-03-03").stdout) == []
    table = run("legacy").stdout
    assert LEGACY[0] in table and "switched" in table
    review = json.loads(run("legacy", "--review", "--json").stdout)
    assert len(review) == truth.ambiguous and all(len(r["candidates"]) == 2 for r in review)


DOVECOT_LOG_PATH = """\
Mar  2 07:00:00 pop3-login: Info: Login: user=<user01@example.org>, method=PLAIN, rip=192.0.2.31, lip=192.0.2.1, mpid=101, session=<aa1>
Mar  2 07:00:02 pop3(user01@example.org)<101><aa1>: Info: Disconnected: Logged out top=0/0, retr=1/310, del=0/1, size=310
Mar  2 07:01:00 imap-login: Info: Login: user=<login04>, method=PLAIN, rip=2001:db8::4, lip=2001:db8::1, mpid=102, TLS, session=<bb2>
Mar  2 07:01:09 imap(login04)<102><bb2>: Info: Logged out in=52 out=771
Mar  2 07:02:00 imap-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<user02@example.org>, method=PLAIN, rip=192.0.2.32
Mar  2 07:03:00 master: Info: Dovecot v2.3.19.1 (9b53102964) starting up for imap, pop3
"""  # noqa: E501 (log lines as the daemons write them)
EXIM_MAINLOG = """\
2026-03-02 07:00:05 1sQ2ab-0001Xy-9Z <= user01@example.org H=(pc) [192.0.2.31] P=esmtp S=310
2026-03-02 07:00:05 1sQ2ab-0001Xy-9Z => friend@remote.test R=dnslookup T=remote_smtp H=mx.remote.test [198.51.100.9]
2026-03-02 07:00:05 1sQ2ab-0001Xy-9Z Completed
2026-03-02 07:04:00 H=(spam) [203.0.113.7] F=<x@spam.test> rejected RCPT <y@elsewhere.test>: relay not permitted
2026-03-02 07:05:00 Start queue run: pid=4711
"""


def test_the_file_table_counts_lines_and_logins_of_files_the_python_path_parses(
    run: Any, inventory: None, tmp_path: Path
) -> None:
    """A Dovecot log_path file and an Exim mainlog (lines the C classifier hands to Python whole) show every line and
    every login in the file table, not 0 as if they had not been read."""
    dovecot, exim = tmp_path / "dovecot.log", tmp_path / "mainlog"
    dovecot.write_text(DOVECOT_LOG_PATH)
    exim.write_text(EXIM_MAINLOG)
    files = {
        f["path"]: f
        for f in json.loads(run("scan", "--host", "mx1", str(dovecot), str(exim), "--json").stdout)["files"]
    }
    assert files[str(dovecot)]["lines"] == 6 and files[str(dovecot)]["kinds"]["login"] == 2
    assert files[str(exim)]["lines"] == 5 and files[str(exim)]["kinds"]["accept"] == 1
    assert files[str(exim)]["kinds"]["refusal"] == 1 and files[str(exim)]["unparsed"] == 0
    rows = {
        line.split()[0]: line.split()[1:]
        for line in run("scan", "--host", "mx1", str(dovecot), str(exim)).stdout.splitlines()
    }
    assert rows[str(dovecot)][:3] == ["0", "0", "0"]  # read before: nothing new
    dovecot.write_text(DOVECOT_LOG_PATH * 2)
    exim.write_text(EXIM_MAINLOG * 2)
    rows = {
        line.split()[0]: line.split()[1:]
        for line in run("scan", "--host", "mx1", str(dovecot), str(exim)).stdout.splitlines()
    }
    assert rows[str(dovecot)][:3] == ["6", "0", "2"]  # lines, unparsed, logins
    assert rows[str(exim)] == ["5", "0", "0", "1", "1"]  # lines, unparsed, logins, accepted, refusals


def test_cli_scan_refuses_a_missing_file(run: Any, tmp_path: Path) -> None:
    """A log path that does not exist is a usage error naming it (exit 2)."""
    result = run("scan", str(tmp_path / "nope.log"), expect=2)
    assert "nope.log" in result.stderr


def test_parallel_parsing_gives_the_same_result(
    runtime: Runtime, inventory: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With scan.workers = 2, a file parsed in blocks by worker threads gives exactly the in-process result."""
    import dataclasses

    from rollout.scan import scan_workflow as scan_module

    log = tmp_path / "mail.log"
    truth = synthetic(log, lines=4000)
    lines = log.read_bytes().splitlines(keepends=True)
    long_line = b"Mar  2 12:00:00 mx1 cron[7]: (root) CMD " + b"x" * 20_000 + b"\n"  # longer than two blocks
    log.write_bytes(b"".join(lines[:1000] + [long_line] + lines[1000:]))
    with open(log, "ab") as out:
        out.write(b"Mar  2 23:00:00 mx1 postfix/qmgr[1]: 0F5383D: rem")  # an incomplete last line
    scan_logs(runtime, [log])
    sequential = snapshot(runtime)
    clear(runtime)
    monkeypatch.setattr(scan_module, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(scan_module, "BLOCK_BYTES", 8192)
    parallel_runtime = Runtime(
        dataclasses.replace(runtime.settings, scan=dataclasses.replace(runtime.settings.scan, workers=2)), runtime.clock
    )
    summary = scan_logs(parallel_runtime, [log])
    parallel_runtime.close()
    assert summary.lines == truth.lines + 1 and summary.legacy_submissions == sum(truth.legacy.values())
    assert snapshot(runtime) == sequential
    with runtime.sessions() as s:
        assert s.scalar(select(ScanSource.offset)) == log.stat().st_size - len(
            b"Mar  2 23:00:00 mx1 postfix/qmgr[1]: 0F5383D: rem"
        )


def test_a_dual_stack_relay_is_listed_for_review_with_its_likely_mailbox(
    runtime: Runtime, inventory: None, tmp_path: Path
) -> None:
    """P2: after user01's IMAP login over IPv6, an IPv4 relay with user01 as sender is no legacy use.

    --review shows it as dual_stack.
    """
    log = tmp_path / "mail.log"
    log.write_text(
        "Mar  2 10:00:00 mx1 dovecot: imap-login: Login: user=<user01@example.org>, method=PLAIN, rip=2001:db8::7, lip=2001:db8::1, mpid=5, session=<s1>\n"  # noqa: E501
        "Mar  2 10:03:00 mx1 postfix/smtpd[10]: 1111AAAA01: client=pc[198.51.100.7]\n"
        "Mar  2 10:03:00 mx1 postfix/qmgr[9]: 1111AAAA01: from=<user01@example.org>, size=100, nrcpt=1 (queue active)\n"
        "Mar  2 10:03:01 mx1 postfix/smtp[12]: 1111AAAA01: to=<friend@remote.test>, relay=mx.remote.test[203.0.113.5]:25, delay=1, dsn=2.0.0, status=sent (250 ok)\n"  # noqa: E501
        "Mar  2 10:03:01 mx1 postfix/qmgr[9]: 1111AAAA01: removed\n"
    )
    summary = scan_logs(runtime, [log])
    assert summary.legacy_submissions == 0 and summary.unexplained == 1
    (entry,) = review_report(runtime)
    assert (entry.kind, entry.client_ip, entry.candidates) == ("dual_stack", "198.51.100.7", ["user01@example.org"])
    assert "rip=2001:db8::7" in entry.evidence[0]["line"]


def test_copytruncates_copy_and_compressed_rotations_add_only_what_was_not_read(
    runtime: Runtime, inventory: None, tmp_path: Path
) -> None:
    """P8: maillog copied to maillog.1 and truncated, then gzipped to maillog.2.gz, all scanned: no line twice."""
    log, truth = half_scanned_then_grown(runtime, tmp_path / "maillog")  # the second half: only the copy has it
    (tmp_path / "maillog.1").write_bytes(log.read_bytes())  # logrotate's copytruncate
    log.write_bytes(b"")
    later = write_maillog(
        log, MAILBOXES, LEGACY, SASL, start=START + timedelta(days=1), span=timedelta(hours=2), lines=600, seed=5
    )
    scan_logs(runtime, [tmp_path / "maillog.1", log])
    total = sum(truth.legacy.values()) + sum(later.legacy.values())
    assert sum(r.submissions for r in legacy_report(runtime)) == total
    (tmp_path / "maillog.2.gz").write_bytes(gzip.compress((tmp_path / "maillog.1").read_bytes()))  # the next rotation
    (tmp_path / "maillog.1").unlink()
    again = scan_logs(runtime, [tmp_path / "maillog.2.gz", log])
    assert again.lines == 0 and sum(r.submissions for r in legacy_report(runtime)) == total
