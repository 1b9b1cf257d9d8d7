"""Parse a log in blocks of complete lines, on every core when the file is big.

Each block goes through the C line classifier (``_linescan.c``) first: it skips the
lines that can never yield an event (connects, cleanup, local deliveries, other
programs) and the complete inbound messages that can never matter (accepted from
an untrusted address without SMTP AUTH, no remote delivery). The common shapes
(logins, session ends, relay refusals, the lines of a submitted message) it turns
into events itself, joined as ``join.join_complete`` joins them (authenticated
messages it counts, in one ``AuthCounts`` at the end of the block); the rest
comes back as rows with the envelope split, and Python parses those with the same
per-daemon parsers as ``LineParser`` (lines the classifier is unsure about go to
``LineParser`` itself). Both paths give the same events; tests/test_linescan.py
checks that.

Without the compiled classifier (no C compiler at install time) every line goes to
``LineParser``: the same events, many times slower, on one core.

Parsing is stateless, so blocks can be parsed in worker threads (the classifier
does not hold the GIL while it reads) while the stateful detector consumes their
events, in file order, in the calling thread. Only a bounded number of blocks is
in flight, so memory does not grow with the file.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar, cast

from . import native
from .envelope import EnvelopeParser
from .events import (
    Accept,
    AuthCounts,
    CompleteMessage,
    Delivery,
    Envelope,
    Event,
    Login,
    LoginRecord,
    LoginRun,
    Refusal,
    Removed,
    Sender,
    SessionEnd,
)
from .imapd import parse_dovecot
from .join import join_complete
from .parse import LineParser, our_text_matcher
from .postfix import split_program
from .reader import LineSource, Piece, read_piece
from .rules import classifier_rules

try:
    from . import _linescan

    COMPILED = native.current(_linescan)  # one built from an older _linescan.c is not used
except ImportError:  # built without a C compiler: ``_linescan`` is then never used
    COMPILED = False

OTHER, ACCEPT, SENDER, REMOVED, DELIVERY, LOGIN, SMTPD, DOVECOT = range(8)
DROPPED_KINDS = ("unknown", "accept", "sender", "removed", "delivery", "login", "postfix-smtpd", "dovecot")
# the events the classifier builds itself, in the order of its counts
C_EVENTS = (Login, SessionEnd, Accept, Sender, Delivery, Removed, Refusal, CompleteMessage)
C_EVENT_KINDS = tuple(cls.__name__.lower() for cls in C_EVENTS[:-1])  # as LineParser counts them
AHEAD_PER_WORKER = 2
T = TypeVar("T")


def compiled() -> bool:
    """Whether the C line classifier is available (``rollout scan --json`` reports it)."""
    return COMPILED


@dataclass(frozen=True)
class ParserSpec:
    """What a worker needs to build the same parser as the caller (picklable)."""

    host: str
    zone: str
    reference: float
    reject_text: str
    help_url: str
    trusted_networks: tuple[str, ...]

    def build(self) -> BlockParser:
        envelopes = EnvelopeParser(self.host, self.zone, datetime.fromtimestamp(self.reference, UTC))
        return BlockParser(
            LineParser(envelopes, our_text_matcher(self.reject_text, self.help_url)), self.trusted_networks
        )


class BlockParser:
    """Events of blocks of complete lines; counts lines per kind in ``kinds``."""

    def __init__(self, lines: LineParser, trusted_networks: tuple[str, ...], login_runs: bool = True) -> None:
        """``login_runs``: ended logins of the classifier come as ``LoginRun`` (the detector's records, built in C);
        False gives a ``Login`` event for each, as ``LineParser`` does (tests compare events one by one)."""
        self.lines = lines
        # one count per file, whichever path parsed a line (the classifier, its rows, or LineParser itself)
        self.kinds: Counter[str] = lines.kinds
        self.trusted_networks = trusted_networks
        nets = [ipaddress.ip_network(n, strict=False) for n in trusted_networks]
        # what the classifier needs to drop inbound mail: it must agree with net.TrustedNetworks
        self.trusted = [(n.version, n.network_address.packed, n.prefixlen) for n in nets]
        # the classifier reads the same rule tables as the parsers (rules.py), taken now: one source for each rule
        self.rules = _linescan.rules(classifier_rules()) if COMPILED else None
        # relay refusals as the classifier's own compact Refusal (the same event as events.Refusal, equal to it)
        events = tuple(_linescan.Refusal if COMPILED and cls is Refusal else cls for cls in C_EVENTS)
        self.classes = (*events, LoginRun if login_runs else None, LoginRecord)

    def parse(self, block: bytes | memoryview, base: int, file: str) -> list[Event]:
        """Events of ``block`` (complete lines, each ending in "\\n") that starts at file offset ``base``;
        messages wholly inside the block come joined (``join.join_complete``)."""
        if self.rules is None:
            return join_complete(self._parse_all(block, base, file), self.trusted_networks)
        events, joined = self._parse(block, base, file)
        return events if joined else join_complete(events, self.trusted_networks)

    def _parse(self, block: bytes | memoryview, base: int, file: str) -> tuple[list[Event], bool]:
        """The block's events, and whether the classifier built and joined them all (nothing left for join_complete)."""
        envelopes = self.lines.envelopes
        assert self.rules is not None  # parse() calls this only with the classifier
        rows, _lines, skipped, dropped, built, joined, authenticated = _linescan.scan(
            block, self.rules, self.trusted, file, base, envelopes.time_of, self.classes
        )
        kinds = self.kinds
        kinds["skipped"] += skipped
        # the classifier counts in the order of these names: a count without its name is a bug
        for name, count in (*zip(DROPPED_KINDS, dropped, strict=True), *zip(C_EVENT_KINDS, built, strict=True)):
            if count:
                kinds[name] += count
        # joined: every row is an event the classifier built (no tuple for Python among them)
        events = cast(list[Event], rows) if joined else self._rows(rows, block, base, file)
        if authenticated:
            events.append(
                AuthCounts(max(last for _count, last in authenticated.values()), "", file, base, "", authenticated)
            )
        return events, joined

    def _rows(self, rows: list[_linescan.Row | Event], block: bytes | memoryview, base: int, file: str) -> list[Event]:
        """The classifier's events with the rows it left to Python parsed, in line order."""
        kinds, envelopes = self.kinds, self.lines.envelopes
        events: list[Event] = []
        postfix = self.lines.postfix
        for row in rows:
            if not isinstance(row, tuple):  # an event the classifier built
                events.append(row)
                continue
            kind, start, end = row[0], row[1], row[2]
            line = str(block[start:end], "utf-8", "replace")
            if kind == OTHER:
                event = self.lines.parse(line, file, base + start)
                if event is not None:
                    events.append(event)
                continue
            _, _, _, ss, se, hs, he, ps, pe, ms, _qs, _qe = row
            t = envelopes.time_of(line[ss:se])
            if t is None:
                kinds["unknown"] += 1
                continue
            program = line[ps:pe]
            env = Envelope(t, line[hs:he], program, None, line[ms:])
            if kind in (LOGIN, DOVECOT):
                result = parse_dovecot(env, file, base + start, line)
            else:
                instance, daemon = split_program(program) or ("", "")
                result = postfix.parse(env, instance, daemon, file, base + start, line)
            if isinstance(result, str):
                kinds[result] += 1
            else:
                kinds[type(result).__name__.lower()] += 1
                events.append(result)
        return events

    def _parse_all(self, block: bytes | memoryview, base: int, file: str) -> list[Event]:
        parse = self.lines.parse
        events = []
        offset = base
        for raw in bytes(block).split(b"\n")[:-1]:
            event = parse(raw.decode("utf-8", "replace"), file, offset)
            offset += len(raw) + 1
            if event is not None:
                events.append(event)
        return events


# -- worker threads -------------------------------------------------------------------------


class ParallelBlocks:
    """Events of a file parsed by ``workers`` threads, in file order; ``kinds`` when done.

    Threads, not processes: the classifier reads a block without holding the GIL and
    builds the events itself, so the events need no pickling and the detecting thread
    gets them as they are. A plain file is even read by the workers, a piece each at its
    own offset: the calling thread, which runs the detector, only joins the one line
    each cut between two pieces crosses.
    """

    def __init__(self, spec: ParserSpec, file: str, workers: int) -> None:
        self.spec, self.file, self.workers = spec, file, workers
        self.kinds: Counter[str] = Counter()
        self._parsers: list[BlockParser] = []
        self._local = threading.local()

    def events(
        self, source: LineSource, size: int, progress: Callable[[int], None] | None = None
    ) -> Iterator[list[Event]]:
        """The events of ``source`` from its offset on, a list per block; ``source.offset`` advances past
        each line consumed. What was appended while the pieces were read is read after them, in order."""
        try:
            with ExitStack() as stack:
                fd = stack.enter_context(open(source.path, "rb")).fileno() if source.plain() else None
                pool = stack.enter_context(
                    ThreadPoolExecutor(self.workers, thread_name_prefix="scan")
                )  # shut down before the file closes
                if fd is not None:
                    yield from self._pieces(pool, fd, source, size, progress)
                yield from self._in_order(pool, source.blocks(size), progress)
        finally:
            for parser in self._parsers:
                self.kinds.update(parser.kinds)

    def _parser(self) -> BlockParser:
        parser = getattr(self._local, "parser", None)
        if parser is None:
            parser = self._local.parser = self.spec.build()
            self._parsers.append(parser)
        return parser

    def _parse(self, base: int, block: bytes | memoryview) -> list[Event]:
        return self._parser().parse(block, base, self.file)

    def _read_and_parse(self, fd: int, start: int, length: int, at_line_start: bool) -> tuple[Piece, list[Event]]:
        piece = read_piece(fd, start, length, at_line_start)
        return piece, self._parse(piece.body_start, piece.body) if len(piece.body) else []

    def _pieces(
        self, pool: ThreadPoolExecutor, fd: int, source: LineSource, size: int, progress: Callable[[int], None] | None
    ) -> Iterator[list[Event]]:
        begin, end = source.offset, os.fstat(fd).st_size
        jobs = (
            partial(self._read_and_parse, fd, start, min(size, end - start), start == begin)
            for start in range(begin, end, size)
        )
        stitch = self._parser()  # the calling thread's own
        carry = b""  # the start of a line that a cut between pieces crosses
        for piece, events in self._ordered(pool, jobs):
            if progress is not None:
                progress(len(piece.head or b"") + len(piece.body) + len(piece.tail))
            if piece.head is None:  # a line longer than a piece
                carry += piece.tail
                continue
            if carry or piece.head:
                yield stitch.parse(carry + piece.head, piece.start - len(carry), self.file)
            yield events
            carry = piece.tail
            source.offset = piece.body_start + len(piece.body)

    def _in_order(
        self, pool: ThreadPoolExecutor, blocks: Iterator[tuple[int, bytes]], progress: Callable[[int], None] | None
    ) -> Iterator[list[Event]]:
        for size, events in self._ordered(pool, (partial(self._sized, base, block) for base, block in blocks)):
            if progress is not None:
                progress(size)
            yield events

    def _sized(self, base: int, block: bytes) -> tuple[int, list[Event]]:
        return len(block), self._parse(base, block)

    def _ordered(self, pool: ThreadPoolExecutor, jobs: Iterator[Callable[[], T]]) -> Iterator[T]:
        """The results of ``jobs`` run in ``pool``, in order, with a bounded number in flight (memory stays flat)."""
        ahead: deque[Future[T]] = deque()
        for job in jobs:
            ahead.append(pool.submit(job))
            if len(ahead) >= self.workers * AHEAD_PER_WORKER:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
