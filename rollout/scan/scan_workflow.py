"""Scan use cases: read logs incrementally and record legacy use; report it.

``scan_logs`` commits the new file positions, the carried-over detector state
and the day aggregates in one transaction: a crash mid-scan loses nothing and
counts nothing twice.
"""

from __future__ import annotations

import gc
import heapq
import json
import os
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import chain, islice
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import audit, locks
from ..addresses import domain_key, login_key
from ..db import insert_rows
from ..logs.blocks import BlockParser, ParallelBlocks, ParserSpec, compiled
from ..logs.envelope import EnvelopeParser
from ..logs.events import Event
from ..logs.parse import LineParser, our_text_matcher
from ..logs.reader import EMPTY_FINGERPRINT, LineSource, identify
from ..models import (
    Customer,
    Evidence,
    LegacyDay,
    Mailbox,
    RefusalHour,
    ReviewItem,
    ScanCarry,
    ScanSource,
    UnknownLogin,
)
from ..notify import notice_delivery
from ..rules import has_switched
from ..runtime import Runtime
from .detection import DetectionConfig, Detector, Finding

FLUSH_FINDINGS = 20_000
PARALLEL_MIN_BYTES = 64 << 20  # below this, worker start-up costs more than it saves
BLOCK_BYTES = 4 << 20
# raw lines kept per mailbox and day: what support is shown (legacy use, refusals) and near misses;
# authenticated sending has its count and last time on the day row, and is the bulk of a log
EVIDENCE_KINDS = frozenset({"legacy", "near_miss", "refused"})
MAX_LISTED = 20  # client IPs / senders kept per mailbox and day
CONFIDENCE_RANK = {None: 0, "medium": 1, "high": 2}
SAVE_CHUNK = 500  # ids per IN (...) when loading rows to merge into
DAY_COLUMNS = tuple(c.key for c in LegacyDay.__table__.columns)


@dataclass
class FileSummary:
    path: str
    host: str
    lines: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    unparsed: int = 0
    started_at_offset: int = 0
    restarted: bool = False  # rotated, truncated or replaced since the last scan
    warning: str | None = None


@dataclass
class ScanSummary:
    files: list[FileSummary]
    lines: int
    legacy_submissions: int
    mailboxes: int
    ambiguous: int
    unexplained: int
    authenticated: int
    refused: int
    near_misses: int
    unknown_logins: int
    elapsed_seconds: float
    lines_per_second: float
    notices: dict[str, int] = field(default_factory=dict)  # our notices' delivery states learnt from this log


@dataclass
class LegacyMailbox:
    address: str
    customer: str
    last_seen: datetime | None
    submissions: int
    days: int
    client_ips: list[str]
    senders: list[str]
    confidence: str | None
    switched: bool
    auth_count: int
    auth_last: datetime | None
    near_misses: int
    refused: int
    refused_last: datetime | None


@dataclass
class _Day:
    legacy_count: int = 0
    high_count: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    last_ip: str | None = None
    client_ips: set[str] = field(default_factory=set)
    senders: set[str] = field(default_factory=set)
    confidence: str | None = None
    auth_count: int = 0
    auth_last: float | None = None
    near_miss_count: int = 0
    refused_count: int = 0
    refused_last: float | None = None


class _DayRow(Protocol):
    """What ``_merge_day`` adds a day's findings to: a ``LegacyDay``, or a plain namespace of its columns."""

    legacy_count: int
    high_count: int
    first_seen: datetime | None
    last_seen: datetime | None
    last_ip: str | None
    client_ips: list[Any]
    senders: list[Any]
    confidence: str | None
    auth_count: int
    auth_last: datetime | None
    near_miss_count: int
    refused_count: int
    refused_last: datetime | None


class _Tally:
    """Findings → per mailbox and day aggregates, evidence samples, review items, unknown logins."""

    def __init__(self, mailbox_ids: dict[str, int]) -> None:
        self.ids = mailbox_ids
        self.days: dict[tuple[int, date], _Day] = {}
        self.evidence: dict[tuple[int, date, str], tuple[list[Any], dict[str, Any]]] = {}
        self.reviews: list[Finding] = []
        self.unknown: dict[str, list[Any]] = {}
        self.refusal_hours: dict[tuple[int, int], int] = {}  # (mailbox, UTC hours since the epoch) → refusals
        self._days_by_number: dict[float, date] = {}  # UTC days since the epoch → date
        self.counts = {"legacy": 0, "ambiguous": 0, "unexplained": 0, "auth": 0, "refused": 0, "near_miss": 0}

    def add(self, f: Finding) -> None:
        if f.kind == "login":
            if f.user and (user := login_key(f.user)) not in self.ids:
                u = self.unknown.setdefault(user, [f.t, f.t, 0, f.ip])
                u[1], u[2], u[3] = max(u[1], f.t), u[2] + 1, f.ip
            return
        self.counts[f.kind] += 1
        if f.kind in ("ambiguous", "unexplained"):
            self.reviews.append(f)
            return
        mailbox_id = self._mailbox(f)
        if mailbox_id is None:
            return
        day_key = (mailbox_id, self._day(f.t))
        d = self.days.get(day_key)
        if d is None:
            d = self.days[day_key] = _Day()
        _ADD[f.kind](self, d, f)
        if f.kind == "refused":  # per hour too: the gates and the status chart follow the wave of refusals
            hour_key = (mailbox_id, int(f.t // 3600))
            self.refusal_hours[hour_key] = self.refusal_hours.get(hour_key, 0) + 1
        evidence_key = (*day_key, f.kind)
        if (
            f.kind in EVIDENCE_KINDS and evidence_key not in self.evidence
        ):  # the first sighting of the day is the sample
            self.evidence[evidence_key] = (f.lines, {k: v for k, v in _details(f).items() if v not in (None, [], {})})

    def add_authenticated(self, counts: dict[tuple[str | None, int], list[float]]) -> None:
        """``Detector.authenticated``: (SASL user, UTC day number) → [count, last time]."""
        ids, days = self.ids, self.days
        for (user, number), (count, last) in counts.items():
            self.counts["auth"] += int(count)
            mailbox_id = ids.get(user) if user else None
            if mailbox_id is None:
                continue
            day_key = (mailbox_id, self._day(number * 86400))
            d = days.get(day_key)
            if d is None:
                d = days[day_key] = _Day()
            d.auth_count += int(count)
            d.auth_last = last if d.auth_last is None else max(d.auth_last, last)

    def _day(self, t: float) -> date:
        day = self._days_by_number.get(t // 86400)
        if day is None:
            day = self._days_by_number[t // 86400] = datetime.fromtimestamp(t, UTC).date()
        return day

    def _mailbox(self, f: Finding) -> int | None:
        if f.kind == "refused":  # the map entry's mailbox: the sender's, or the login user's
            for key in (f.sender, f.details.get("address")):
                if key and login_key(key) in self.ids:
                    return self.ids[login_key(key)]
            return self.ids.get(f.candidates[0]) if len(f.candidates) == 1 else None
        return self.ids.get(login_key(f.user)) if f.user else None

    def _legacy(self, d: _Day, f: Finding) -> None:
        d.legacy_count += 1
        d.high_count += f.confidence == "high"
        d.first_seen = f.t if d.first_seen is None else min(d.first_seen, f.t)
        if d.last_seen is None or f.t >= d.last_seen:
            d.last_seen, d.last_ip = f.t, f.ip
        if f.ip:
            d.client_ips.add(f.ip)
        if f.sender:
            d.senders.add(f.sender.lower())
        if CONFIDENCE_RANK[f.confidence] > CONFIDENCE_RANK[d.confidence]:
            d.confidence = f.confidence

    def _near_miss(self, d: _Day, f: Finding) -> None:
        d.near_miss_count += 1

    def _refused(self, d: _Day, f: Finding) -> None:
        d.refused_count += 1
        d.refused_last = f.t if d.refused_last is None else max(d.refused_last, f.t)


_ADD = {"legacy": _Tally._legacy, "near_miss": _Tally._near_miss, "refused": _Tally._refused}


def _details(f: Finding) -> dict[str, Any]:
    return {
        "at": _dt(f.t).isoformat(),
        "host": f.host,
        "queue_id": f.qid,
        "client_ip": f.ip,
        "sender": f.sender,
        "confidence": f.confidence,
        "candidates": f.candidates,
        **f.details,
    }


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _dt_or_none(t: float | None) -> datetime | None:
    return None if t is None else _dt(t)


# -- the scan -----------------------------------------------------------------------


def scan_logs(
    runtime: Runtime,
    paths: Sequence[Path],
    host: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ScanSummary:
    """Read what is new in ``paths`` since the last scan and record what it shows."""
    with _collector_paused():  # resumed once the scan's objects are gone, so its first round finds little to walk
        return _scan(runtime, paths, host, progress)


def _scan(
    runtime: Runtime, paths: Sequence[Path], host: str | None, progress: Callable[[int], None] | None
) -> ScanSummary:
    started = time.monotonic()
    settings = runtime.settings
    # one scan at a time: held from before the positions are read until after they are committed
    with locks.held(
        runtime.engine, "scan", locks.SCAN_LOCK_KEY, settings.scan.lock_wait_seconds, "scan.lock_wait_seconds"
    ):
        return _scan_locked(runtime, paths, host, progress, started)


def _scan_locked(
    runtime: Runtime, paths: Sequence[Path], host: str | None, progress: Callable[[int], None] | None, started: float
) -> ScanSummary:
    settings = runtime.settings
    now = runtime.clock.now()
    with runtime.sessions() as session, session.begin():
        ids, logins, domains = _inventory(session)
        config = _detection_config(settings.scan, domains, logins, frozenset(ids))
        carry = session.get(ScanCarry, 1)
        detector = Detector(config, json.loads(zlib.decompress(carry.state)) if carry else None)
        tally = _Tally(ids)
        deliveries = notice_delivery.tracker_for(session)
        files, sources = _open_sources(session, paths, host or settings.scan.host, settings)
        workers, trusted = settings.scan.workers, tuple(settings.scan.trusted_networks)
        streams = [_events(src, parser, fs, progress, workers, trusted) for src, parser, fs, _row, _ident in sources]
        batches = streams[0] if len(streams) == 1 else _merged(streams)
        for batch in batches:
            detector.feed_many(batch)
            deliveries.feed(batch)
            if len(detector.findings) >= FLUSH_FINDINGS:
                _drain(detector, tally)
        detector.finish()
        _drain(detector, tally)
        _save(session, tally, now)
        _save_positions(session, sources, now)
        state = zlib.compress(json.dumps(detector.to_state(), separators=(",", ":")).encode())
        if carry is None:
            session.add(ScanCarry(id=1, state=state, updated_at=now))
        else:
            carry.state, carry.updated_at = state, now
        summary = _summary(files, tally, started)
        summary.notices = notice_delivery.record(session, deliveries)
        audit.record(
            session,
            now,
            runtime.actor,
            "scan.run",
            files=[f.path for f in files],
            lines=summary.lines,
            legacy_submissions=summary.legacy_submissions,
            mailboxes=summary.mailboxes,
            notices=summary.notices,
        )
    return summary


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector for the scan: events, findings, login windows and the rows
    saved hold no cycles, yet with hundreds of thousands of them alive every collection walks
    them all, which cost a third of the scan (and more than the whole save)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _merged(streams: list[Iterator[list[Event]]], size: int = 10_000) -> Iterator[list[Event]]:
    """Several files' events merged by time (they were logged side by side), in batches."""
    merged = heapq.merge(*(chain.from_iterable(s) for s in streams), key=_time)
    while batch := list(islice(merged, size)):
        yield batch


def _time(event: Event) -> float:
    return event.t


def _drain(detector: Detector, tally: _Tally) -> None:
    for f in detector.findings:
        tally.add(f)
    detector.findings.clear()
    tally.add_authenticated(detector.authenticated)
    detector.authenticated.clear()


def _inventory(session: Session) -> tuple[dict[str, int], dict[str, str], set[str]]:
    """Mailbox IDs by address and login, addresses by login, and the domains; plain columns, read as the
    driver returns them (a provider's hundreds of thousands of rows cost half as much without result types)."""
    ids: dict[str, int] = {}
    logins: dict[str, str] = {}
    domains: set[str] = set()
    query = select(Mailbox.id, Mailbox.address_key, Mailbox.login, Mailbox.domain).compile(session.get_bind())
    for mid, key, login, domain in session.connection().exec_driver_sql(str(query)).all():  # one fetch, not one per row
        ids[key] = mid
        domains.add(domain.lower())
        if login:
            ids.setdefault(login_key(login), mid)
            logins[login_key(login)] = key
    return ids, logins, domains


def _detection_config(
    scan: Any, domains: set[str], logins: dict[str, str], known_users: frozenset[str]
) -> DetectionConfig:
    return DetectionConfig(
        window_seconds=scan.window_minutes * 60,
        tolerance_seconds=scan.tolerance_seconds,
        session_tracking=scan.session_tracking,
        session_cap_seconds=scan.session_cap_hours * 3600,
        trusted_networks=scan.trusted_networks,
        local_domains=frozenset(domains | {domain_key(d) for d in scan.local_domains}),
        login_addresses=logins,
        known_users=known_users,
    )


def _open_sources(
    session: Session, paths: Sequence[Path], host: str | None, settings: Any
) -> tuple[list[FileSummary], list[Any]]:
    our_text = our_text_matcher(settings.enforcement.reject_text, settings.enforcement.help_url)
    files, sources = [], []
    for path in paths:
        ident = identify(path)
        key_host = host or "localhost"
        row = session.scalar(select(ScanSource).where(ScanSource.host == key_host, ScanSource.path == str(path)))
        offset, restarted = _resume_offset(session, row, ident, key_host)
        fs = FileSummary(str(path), key_host, started_at_offset=offset, restarted=restarted)
        reference = datetime.fromtimestamp(ident.mtime, UTC)
        parser = LineParser(EnvelopeParser(key_host, settings.scan.timezone, reference), our_text)
        parser.spec = (settings.enforcement.reject_text, settings.enforcement.help_url)
        files.append(fs)
        sources.append((LineSource(path, offset), parser, fs, row, ident))
    return files, sources


def _resume_offset(session: Session, row: ScanSource | None, ident: Any, host: str) -> tuple[int, bool]:
    """Where to continue: the same file → its offset; a file renamed by rotation (maillog → maillog.1),
    or a copy of one scanned for the same host (copytruncate's maillog.1, a compressed maillog.2.gz:
    the same first line, another inode) → where the scan of the original stopped; truncated or new → 0."""
    if row is not None and (row.device, row.inode, row.fingerprint) == (ident.device, ident.inode, ident.fingerprint):
        if ident.compressed or ident.size >= row.offset:
            return row.offset, False
        return 0, True  # copytruncate: shorter than before
    same = session.scalar(
        select(ScanSource).where(
            ScanSource.device == ident.device,
            ScanSource.inode == ident.inode,
            ScanSource.fingerprint == ident.fingerprint,
        )
    )
    if same is not None:  # renamed by rotation (maillog → maillog.1): continue where it stopped
        return same.offset, row is not None
    if ident.fingerprint != EMPTY_FINGERPRINT:  # every empty file has this one
        offsets = session.scalars(
            select(ScanSource.offset).where(ScanSource.host == host, ScanSource.fingerprint == ident.fingerprint)
        ).all()
        copied = [
            offset for offset in offsets if ident.compressed or offset <= ident.size
        ]  # a copy holds what its original had
        if copied:
            return max(copied), row is not None
    return 0, row is not None


def _events(
    source: LineSource,
    parser: LineParser,
    fs: FileSummary,
    progress: Callable[[int], None] | None,
    workers: int,
    trusted: tuple[str, ...],
) -> Iterator[list[Event]]:
    """The file's events from where the last scan stopped, a list per block; parsed in worker threads when it is big."""
    envelopes = parser.envelopes
    spec = ParserSpec(
        envelopes.default_host, envelopes.zone_name, envelopes.reference.timestamp(), *parser.spec, trusted
    )
    name = str(source.path)
    workers = workers or os.cpu_count() or 1
    if workers > 1 and compiled() and source.path.stat().st_size - source.offset >= PARALLEL_MIN_BYTES:
        job = ParallelBlocks(spec, name, workers)
        yield from job.events(source, BLOCK_BYTES, progress)
        kinds = job.kinds
    else:
        block_parser = BlockParser(parser, trusted)
        for base, block in _reported(source.blocks(BLOCK_BYTES), progress):
            yield block_parser.parse(block, base, name)
        kinds = block_parser.kinds
    _finish_file(fs, kinds, source.warning)


def _reported(
    blocks: Iterator[tuple[int, bytes]], progress: Callable[[int], None] | None
) -> Iterator[tuple[int, bytes]]:
    for base, block in blocks:
        yield base, block
        if progress is not None:
            progress(len(block))


def _finish_file(fs: FileSummary, kinds: Any, warning: str | None) -> None:
    fs.lines = sum(kinds.values())
    fs.kinds = dict(sorted(kinds.items()))
    fs.unparsed = kinds.get("unknown", 0)
    fs.warning = warning


def _save_positions(session: Session, sources: list[Any], now: datetime) -> None:
    for source, _parser, fs, row, ident in sources:
        if row is None:
            row = ScanSource(host=fs.host, path=fs.path, lines=0)
            session.add(row)
        elif fs.restarted:
            row.lines = 0
        row.device, row.inode, row.fingerprint = ident.device, ident.inode, ident.fingerprint
        row.offset = source.offset
        row.lines = (row.lines or 0) + fs.lines
        row.last_scan_at = now


def _save(session: Session, tally: _Tally, now: datetime) -> None:
    """Merge the scan's aggregates: existing rows are loaded in chunks and updated, new ones inserted in bulk."""
    with session.no_autoflush:
        _save_days(session, tally)
        _save_evidence(session, tally)
        _save_reviews(session, tally)
        _save_unknown(session, tally)
        _save_refusal_hours(session, tally)
    session.flush()


def _by_mailbox(session: Session, model: Any, mailbox_ids: set[int], *columns: Any) -> Iterator[Any]:
    """Rows of ``model`` for these mailboxes, in chunks; just ``columns`` of them when given."""
    ids = sorted(mailbox_ids)
    for i in range(0, len(ids), SAVE_CHUNK):
        where = model.mailbox_id.in_(ids[i : i + SAVE_CHUNK])
        yield from (
            session.execute(select(*columns).where(where)) if columns else session.scalars(select(model).where(where))
        )


def _save_days(session: Session, tally: _Tally) -> None:
    days = {d for _mid, d in tally.days}
    existing = {
        (r.mailbox_id, r.day): r
        for r in _by_mailbox(session, LegacyDay, {mid for mid, _d in tally.days})
        if r.day in days
    }
    new = []
    for key, d in tally.days.items():
        row = existing.get(key)
        if row is None:  # most rows of a scan: a tuple, not an object (thousands of them)
            new.append(_new_day(key, d))
        else:
            _merge_day(row, d)
    _insert_values(session, LegacyDay.__table__, DAY_COLUMNS, new)


def _new_day(key: tuple[int, date], d: _Day) -> tuple[Any, ...]:
    """The row ``_merge_day`` makes of ``d`` and an empty day, as values in ``DAY_COLUMNS`` order."""
    last_seen = _dt_or_none(d.last_seen)
    values = {
        "mailbox_id": key[0],
        "day": key[1],
        "legacy_count": d.legacy_count,
        "high_count": d.high_count,
        "first_seen": _dt_or_none(d.first_seen),
        "last_seen": last_seen,
        "last_ip": d.last_ip if last_seen is not None else None,
        "client_ips": sorted(d.client_ips)[:MAX_LISTED],
        "senders": sorted(d.senders)[:MAX_LISTED],
        "confidence": d.confidence,
        "auth_count": d.auth_count,
        "auth_last": _dt_or_none(d.auth_last),
        "near_miss_count": d.near_miss_count,
        "refused_count": d.refused_count,
        "refused_last": _dt_or_none(d.refused_last),
    }
    return tuple(values[c] for c in DAY_COLUMNS)


def _save_evidence(session: Session, tally: _Tally) -> None:
    mailbox_ids = {mid for mid, _d, _k in tally.evidence}  # the keys only: an existing sample is never replaced
    have = set(_by_mailbox(session, Evidence, mailbox_ids, Evidence.mailbox_id, Evidence.day, Evidence.kind))
    new = [
        {"mailbox_id": mid, "day": day, "kind": kind, "lines": _line_dicts(lines), "details": details}
        for (mid, day, kind), (lines, details) in tally.evidence.items()
        if (mid, day, kind) not in have
    ]
    _insert(session, Evidence.__table__, new)


def _save_reviews(session: Session, tally: _Tally) -> None:
    if not tally.reviews:
        return
    times = [_dt(f.t) for f in tally.reviews]
    stored = select(ReviewItem.host, ReviewItem.queue_id, ReviewItem.at).where(
        ReviewItem.at.between(min(times), max(times))
    )
    seen = {(host, queue_id, at) for host, queue_id, at in session.execute(stored)}
    new = []
    for f, at in zip(tally.reviews, times, strict=True):
        key = (f.host, f.qid or "", at)
        if key not in seen:
            seen.add(key)
            kind = "dual_stack" if "dual_stack" in f.details.get("flags", ()) else f.kind
            new.append(
                {
                    "kind": kind,
                    "at": at,
                    "host": f.host,
                    "queue_id": f.qid or "",
                    "client_ip": f.ip,
                    "sender": f.sender,
                    "candidates": f.candidates,
                    "evidence": _line_dicts(f.lines),
                }
            )
    _insert(session, ReviewItem.__table__, new)


def _save_unknown(session: Session, tally: _Tally) -> None:
    users = sorted(tally.unknown)
    existing: dict[str, UnknownLogin] = {}
    for i in range(0, len(users), SAVE_CHUNK):
        existing.update(
            (r.user, r)
            for r in session.scalars(select(UnknownLogin).where(UnknownLogin.user.in_(users[i : i + SAVE_CHUNK])))
        )
    new = []
    for user, (first, last, count, ip) in tally.unknown.items():
        row = existing.get(user)
        if row is None:
            new.append({"user": user, "first_seen": _dt(first), "last_seen": _dt(last), "count": count, "last_ip": ip})
        else:
            row.first_seen, row.last_seen = min(row.first_seen, _dt(first)), max(row.last_seen, _dt(last))
            row.count += count
            row.last_ip = ip
    _insert(session, UnknownLogin.__table__, new)


def _save_refusal_hours(session: Session, tally: _Tally) -> None:
    if not tally.refusal_hours:
        return
    counts = {(mid, _dt(n * 3600)): count for (mid, n), count in tally.refusal_hours.items()}
    hours = {hour for _mid, hour in counts}
    existing = {
        (r.mailbox_id, r.hour): r
        for r in _by_mailbox(session, RefusalHour, {mid for mid, _h in counts})
        if r.hour in hours
    }
    new = []
    for (mid, hour), count in counts.items():
        row = existing.get((mid, hour))
        if row is None:
            new.append({"mailbox_id": mid, "hour": hour, "count": count})
        else:
            row.count += count
    _insert(session, RefusalHour.__table__, new)


def _insert(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        columns = list(rows[0])
        insert_rows(session.connection(), table, columns, [tuple(row[c] for c in columns) for row in rows])


def _insert_values(session: Session, table: Any, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    insert_rows(session.connection(), table, columns, rows)


def _merge_day(row: _DayRow, d: _Day) -> None:
    row.legacy_count += d.legacy_count
    row.high_count += d.high_count
    if d.first_seen is not None:
        row.first_seen = _earliest(row.first_seen, _dt(d.first_seen))
    if d.last_seen is not None and (row.last_seen is None or _dt(d.last_seen) >= row.last_seen):
        row.last_seen, row.last_ip = _dt(d.last_seen), d.last_ip
    row.client_ips = sorted(set(row.client_ips) | d.client_ips)[:MAX_LISTED]
    row.senders = sorted(set(row.senders) | d.senders)[:MAX_LISTED]
    if CONFIDENCE_RANK[d.confidence] > CONFIDENCE_RANK[row.confidence]:
        row.confidence = d.confidence
    row.auth_count += d.auth_count
    if d.auth_last is not None:
        row.auth_last = max(filter(None, (row.auth_last, _dt(d.auth_last))))
    row.near_miss_count += d.near_miss_count
    row.refused_count += d.refused_count
    if d.refused_last is not None:
        row.refused_last = max(filter(None, (row.refused_last, _dt(d.refused_last))))


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return min(filter(None, (a, b)), default=None)


def _line_dicts(lines: list[list[Any]]) -> list[dict[str, Any]]:
    return [{"file": f, "offset": o, "line": text} for f, o, text in lines]


def _summary(files: list[FileSummary], tally: _Tally, started: float) -> ScanSummary:
    elapsed = time.monotonic() - started
    lines = sum(f.lines for f in files)
    legacy_mailboxes = {mid for (mid, _day), d in tally.days.items() if d.legacy_count}
    c = tally.counts
    return ScanSummary(
        files=files,
        lines=lines,
        legacy_submissions=c["legacy"],
        mailboxes=len(legacy_mailboxes),
        ambiguous=c["ambiguous"],
        unexplained=c["unexplained"],
        authenticated=c["auth"],
        refused=c["refused"],
        near_misses=c["near_miss"],
        unknown_logins=len(tally.unknown),
        elapsed_seconds=round(elapsed, 3),
        lines_per_second=round(lines / elapsed) if elapsed else 0,
    )


# -- reports --------------------------------------------------------------------------


def legacy_report(runtime: Runtime, since: date | None = None, customer: str | None = None) -> list[LegacyMailbox]:
    """Mailboxes with legacy use (since ``since``), with their evidence summary and ``switched``."""
    with runtime.sessions() as session:
        query = (
            select(LegacyDay, Mailbox.address, Customer.external_id)
            .join(Mailbox, Mailbox.id == LegacyDay.mailbox_id)
            .join(Customer, Customer.id == Mailbox.customer_id)
        )
        if since is not None:
            query = query.where(LegacyDay.day >= since)
        if customer is not None:
            query = query.where(Customer.external_id == customer)
        by_mailbox: dict[str, list[Any]] = {}
        for day, address, external_id in session.execute(query.order_by(Mailbox.address_key, LegacyDay.day)):
            by_mailbox.setdefault(address, [external_id, []])[1].append(day)
        return [
            m for address, (cust, days) in by_mailbox.items() if (m := _legacy_mailbox(address, cust, days)) is not None
        ]


def _legacy_mailbox(address: str, customer: str, days: list[LegacyDay]) -> LegacyMailbox | None:
    used = [d for d in days if d.legacy_count]
    if not used:
        return None
    last_seen = max(d.last_seen for d in used if d.last_seen)
    auth_last = max((d.auth_last for d in days if d.auth_last), default=None)
    refused_last = max((d.refused_last for d in days if d.refused_last), default=None)
    return LegacyMailbox(
        address=address,
        customer=customer,
        last_seen=last_seen,
        submissions=sum(d.legacy_count for d in used),
        days=len(used),
        client_ips=sorted({ip for d in used for ip in d.client_ips}),
        senders=sorted({s for d in used for s in d.senders}),
        confidence=max((d.confidence for d in used), key=lambda c: CONFIDENCE_RANK[c]),
        switched=has_switched(last_seen, auth_last),
        auth_count=sum(d.auth_count for d in days),
        auth_last=auth_last,
        near_misses=sum(d.near_miss_count for d in days),
        refused=sum(d.refused_count for d in days),
        refused_last=refused_last,
    )


@dataclass
class ReviewEntry:
    id: int  # what `rollout attribute` and `rollout dismiss` take
    kind: str
    at: datetime
    host: str
    queue_id: str
    client_ip: str | None
    sender: str | None
    candidates: list[str]
    evidence: list[dict[str, Any]]
    resolution: str | None = None  # attributed | dismissed; None: open
    mailbox: str | None = None  # attributed to
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    reason: str | None = None


def review_report(runtime: Runtime, since: date | None = None) -> list[ReviewEntry]:
    """Ambiguous sightings and unexplained unauthenticated relays, oldest first; dual_stack ones name the mailbox."""
    with runtime.sessions() as session:
        query = select(ReviewItem).order_by(ReviewItem.at, ReviewItem.id)
        if since is not None:
            query = query.where(ReviewItem.at >= datetime(since.year, since.month, since.day, tzinfo=UTC))
        attributed = select(Mailbox.id, Mailbox.address).join(ReviewItem, ReviewItem.mailbox_id == Mailbox.id)
        addresses = {mailbox_id: address for mailbox_id, address in session.execute(attributed)}
        return [
            ReviewEntry(
                r.id,
                r.kind,
                r.at,
                r.host,
                r.queue_id,
                r.client_ip,
                r.sender,
                list(r.candidates),
                list(r.evidence),
                r.resolution,
                addresses.get(r.mailbox_id) if r.mailbox_id else None,
                r.resolved_by,
                r.resolved_at,
                r.resolution_reason,
            )
            for r in session.scalars(query)
        ]


def unknown_logins(runtime: Runtime) -> list[UnknownLogin]:
    with runtime.sessions() as session:
        return list(session.scalars(select(UnknownLogin).order_by(func.lower(UnknownLogin.user))))
