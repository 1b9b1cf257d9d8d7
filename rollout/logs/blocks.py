"""Parse a log in blocks of complete lines, on every core when the file is big.

Each block goes through the C line classifier (``_linescan.c``) first: it skips the
lines that can never yield an event (connects, cleanup, local deliveries, other
programs) and the complete inbound messages that can never matter (accepted from
an untrusted address without SMTP AUTH, no remote delivery), and it splits the
envelope of the rest. Python then parses only those lines, with the same per-daemon
parsers as ``LineParser`` (lines the classifier is unsure about go to ``LineParser``
itself), so both paths give the same events; tests/test_linescan.py checks that.

Without the compiled classifier (no C compiler at install time) every line goes to
``LineParser``: the same events, several times slower.

Parsing is stateless, so blocks can be parsed in worker processes while the
stateful detector consumes their events, in file order, in the calling process.
Only a bounded number of blocks is in flight, so memory does not grow with the file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import multiprocessing
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from .envelope import EnvelopeParser
from .events import Accept, AuthFailure, CompleteMessage, Delivery, Envelope, Event, Login, Refusal, Removed, Sender, SessionEnd
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
AHEAD_PER_WORKER = 2
_CLASSES = (Accept, Sender, Delivery, Removed, Login, SessionEnd, Refusal, AuthFailure, CompleteMessage)
_CODES = {cls: i for i, cls in enumerate(_CLASSES)}
_FIELD_NAMES = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES}


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
        rows, _lines, skipped, dropped = _linescan.scan(block, self.trusted)  # type: ignore[union-attr]
        kinds = self.kinds
        kinds["skipped"] += skipped
        for kind, count in zip(DROPPED_KINDS, dropped):
            if count:
                kinds[kind] += count
        events = []
        envelopes = self.lines.envelopes
        postfix = self.lines.postfix
        for row in rows:
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


# -- worker processes -------------------------------------------------------------------

_PARSERS: dict[ParserSpec, BlockParser] = {}


def parse_block(spec: ParserSpec, block: bytes, base: int, file: str) -> tuple[list[tuple], Counter[str]]:
    """In a worker: the events of one block as plain tuples (cheap to pickle), and the line kinds."""
    parser = _PARSERS.get(spec)
    if parser is None:
        parser = _PARSERS[spec] = spec.build()
    parser.kinds = Counter()
    parser.lines.kinds = parser.kinds
    rows = [(_CODES[e.__class__], *(getattr(e, name) for name in _FIELD_NAMES[e.__class__])) for e in parser.parse(block, base, file)]
    return rows, parser.kinds


class ParallelBlocks:
    """Events of blocks parsed by ``workers`` processes, yielded in block order; ``kinds`` when done."""

    def __init__(self, spec: ParserSpec, file: str, workers: int) -> None:
        self.spec, self.file, self.workers = spec, file, workers
        self.kinds: Counter[str] = Counter()

    def events(self, blocks: Iterator[tuple[int, bytes]]) -> Iterator[Event]:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
            pending: deque[Future[tuple[list[tuple], Counter[str]]]] = deque()
            for base, block in blocks:
                pending.append(pool.submit(parse_block, self.spec, block, base, self.file))
                if len(pending) >= self.workers * AHEAD_PER_WORKER:
                    yield from self._collect(pending.popleft())
            while pending:
                yield from self._collect(pending.popleft())

    def _collect(self, future: Future[tuple[list[tuple], Counter[str]]]) -> Iterator[Event]:
        rows, kinds = future.result()
        self.kinds.update(kinds)
        classes = _CLASSES
        for row in rows:
            yield classes[row[0]](*row[1:])
