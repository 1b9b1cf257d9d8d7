"""Parse a log in blocks of complete lines, on every core when the file is big.

Each block goes through the C line classifier (``_linescan.c``) first: it skips the
lines that can never yield an event (connects, cleanup, local deliveries, other
programs) and the complete inbound messages that can never matter (accepted from
an untrusted address without SMTP AUTH, no remote delivery). The common shapes
(logins, session ends, relay refusals, the lines of a submitted message) it turns
into events itself, joined as ``detection.join_complete`` joins them; the rest
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
import threading
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from .envelope import EnvelopeParser
from .events import Accept, CompleteMessage, Delivery, Envelope, Event, Login, Refusal, Removed, Sender, SessionEnd
from .imapd import parse_dovecot
from ..detection import join_complete
from .parse import LineParser, our_text_matcher
from .postfix import split_program

try:
    from . import _linescan
except ImportError:  # built without a C compiler
    _linescan = None  # type: ignore[assignment]

OTHER, ACCEPT, SENDER, REMOVED, DELIVERY, LOGIN, SMTPD, DOVECOT = range(8)
DROPPED_KINDS = ("unknown", "accept", "sender", "removed", "delivery", "login", "postfix-smtpd", "dovecot")
# the events the classifier builds itself, in the order of its counts
C_EVENTS = (Login, SessionEnd, Accept, Sender, Delivery, Removed, Refusal, CompleteMessage)
C_EVENT_KINDS = tuple(cls.__name__.lower() for cls in C_EVENTS[:-1])  # as LineParser counts them
AHEAD_PER_WORKER = 2


def compiled() -> bool:
    """Whether the C line classifier is available (``rollout scan --json`` reports it)."""
    return _linescan is not None


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
        envelopes = EnvelopeParser(self.host, self.zone, datetime.fromtimestamp(self.reference, timezone.utc))
        return BlockParser(LineParser(envelopes, our_text_matcher(self.reject_text, self.help_url)), self.trusted_networks)


class BlockParser:
    """Events of blocks of complete lines; counts lines per kind in ``kinds``."""

    def __init__(self, lines: LineParser, trusted_networks: tuple[str, ...]) -> None:
        self.lines = lines
        self.kinds: Counter[str] = Counter()
        self.trusted_networks = trusted_networks
        nets = [ipaddress.ip_network(n, strict=False) for n in trusted_networks]
        # what the classifier needs to drop inbound mail: it must agree with Detector.is_trusted
        self.trusted = [(n.version, n.network_address.packed, n.prefixlen) for n in nets]

    def parse(self, block: bytes, base: int, file: str) -> list[Event]:
        """Events of ``block`` (complete lines, each ending in "\\n") that starts at file offset ``base``;
        messages wholly inside the block come joined (``detection.join_complete``)."""
        events = self._parse(block, base, file) if _linescan is not None else self._parse_all(block, base, file)
        return join_complete(events, self.trusted_networks)

    def _parse(self, block: bytes, base: int, file: str) -> list[Event]:
        envelopes = self.lines.envelopes
        rows, _lines, skipped, dropped, built = _linescan.scan(  # type: ignore[union-attr]
            block, self.trusted, file, base, envelopes.time_of, C_EVENTS
        )
        kinds = self.kinds
        kinds["skipped"] += skipped
        for kind, count in (*zip(DROPPED_KINDS, dropped), *zip(C_EVENT_KINDS, built)):
            if count:
                kinds[kind] += count
        events = []
        postfix = self.lines.postfix
        for row in rows:
            if row.__class__ is not tuple:  # an event the classifier built
                events.append(row)
                continue
            kind, start, end = row[0], row[1], row[2]
            line = block[start:end].decode("utf-8", "replace")
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

    def _parse_all(self, block: bytes, base: int, file: str) -> list[Event]:
        parse = self.lines.parse
        self.lines.kinds = self.kinds
        events = []
        offset = base
        for raw in block.split(b"\n")[:-1]:
            event = parse(raw.decode("utf-8", "replace"), file, offset)
            offset += len(raw) + 1
            if event is not None:
                events.append(event)
        return events


# -- worker threads -------------------------------------------------------------------------


class ParallelBlocks:
    """Events of blocks parsed by ``workers`` threads, in block order; ``kinds`` when done.

    Threads, not processes: the classifier reads a block without holding the GIL and
    builds the events itself, so the events need no pickling and the detecting thread
    gets them as they are.
    """

    def __init__(self, spec: ParserSpec, file: str, workers: int) -> None:
        self.spec, self.file, self.workers = spec, file, workers
        self.kinds: Counter[str] = Counter()

    def events(self, blocks: Iterator[tuple[int, bytes]]) -> Iterator[list[Event]]:
        """The events of each block, a list per block."""
        local = threading.local()
        parsers: list[BlockParser] = []

        def parse(base: int, block: bytes) -> list[Event]:
            parser = getattr(local, "parser", None)
            if parser is None:
                parser = local.parser = self.spec.build()
                parsers.append(parser)
            return parser.parse(block, base, self.file)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="scan") as pool:
            pending: deque[Future[list[Event]]] = deque()
            for base, block in blocks:
                pending.append(pool.submit(parse, base, block))
                if len(pending) >= self.workers * AHEAD_PER_WORKER:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        for parser in parsers:
            self.kinds.update(parser.kinds)
