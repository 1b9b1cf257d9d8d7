"""Parse a big plain log on every core: byte ranges → worker processes → events, in file order.

Parsing is stateless, so ranges aligned on line ends can be parsed anywhere; the
stateful detector then consumes the events in order in the calling process while the
workers parse the next ranges. Only a bounded number of ranges is in flight, so memory
does not grow with the file.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .envelope import EnvelopeParser
from .events import Accept, AuthFailure, Delivery, Event, Login, Refusal, Removed, Sender, SessionEnd
from .parse import LineParser, our_text_matcher

CHUNK_BYTES = 4 << 20
AHEAD_PER_WORKER = 2


@dataclass(frozen=True)
class ParserSpec:
    """What a worker needs to build the same LineParser as the caller."""

    host: str
    zone: str
    reference: float
    reject_text: str
    help_url: str

    def build(self) -> LineParser:
        envelopes = EnvelopeParser(self.host, self.zone, datetime.fromtimestamp(self.reference, timezone.utc))
        return LineParser(envelopes, our_text_matcher(self.reject_text, self.help_url))


_PARSERS: dict[ParserSpec, LineParser] = {}
_CLASSES = (Accept, Sender, Delivery, Removed, Login, SessionEnd, Refusal, AuthFailure)
_CODES = {cls: i for i, cls in enumerate(_CLASSES)}
_FIELD_NAMES = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES}


def _fields(event: Event) -> tuple:
    return tuple(getattr(event, name) for name in _FIELD_NAMES[event.__class__])


def parse_range(spec: ParserSpec, path: str, start: int, end: int) -> tuple[list[tuple], Counter[str]]:
    """Events of the complete lines in ``[start, end)`` (both on line boundaries), and the line kinds."""
    parser = _PARSERS.get(spec)
    if parser is None:
        parser = _PARSERS[spec] = spec.build()
    parser.kinds = Counter()
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    parse = parser.parse
    events = []
    offset = start
    for raw in data.split(b"\n")[:-1]:
        event = parse(raw.decode("utf-8", "replace"), path, offset)
        offset += len(raw) + 1
        if event is not None:
            # plain tuples: pickling slotted dataclasses runs Python code per object, tuples do not
            events.append((_CODES[event.__class__], *_fields(event)))
    return events, parser.kinds


def complete_end(path: Path, size: int) -> int:
    """The offset just after the last newline at or before ``size``."""
    with open(path, "rb") as f:
        pos = size
        while pos > 0:
            step = min(pos, 1 << 16)
            f.seek(pos - step)
            block = f.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                return pos - step + nl + 1
            pos -= step
    return 0


def ranges(path: Path, start: int, end: int, chunk: int = CHUNK_BYTES) -> Iterator[tuple[int, int]]:
    with open(path, "rb") as f:
        pos = start
        while pos < end:
            target = pos + chunk
            if target >= end:
                yield pos, end
                return
            f.seek(target)
            rest = f.readline()
            boundary = min(end, target + len(rest))
            yield pos, boundary
            pos = boundary


class ParallelParse:
    """Events of ``path`` from ``start`` to its last complete line; ``kinds`` and ``offset`` when done."""

    def __init__(self, spec: ParserSpec, path: Path, start: int, workers: int | None = None, chunk: int = CHUNK_BYTES) -> None:
        self.spec, self.path, self.offset, self.chunk = spec, path, start, chunk
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.kinds: Counter[str] = Counter()

    def events(self) -> Iterator[Event]:
        end = complete_end(self.path, self.path.stat().st_size)
        if end <= self.offset:
            return
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
            pending: deque[tuple[int, Future[tuple[list[tuple], Counter[str]]]]] = deque()
            todo = ranges(self.path, self.offset, end, self.chunk)
            for start, stop in todo:
                pending.append((stop, pool.submit(parse_range, self.spec, str(self.path), start, stop)))
                if len(pending) >= self.workers * AHEAD_PER_WORKER:
                    yield from self._collect(pending.popleft())
            while pending:
                yield from self._collect(pending.popleft())

    def _collect(self, item: tuple[int, Future[tuple[list[tuple], Counter[str]]]]) -> Iterator[Event]:
        stop, future = item
        rows, kinds = future.result()
        self.kinds.update(kinds)
        classes = _CLASSES
        for row in rows:
            yield classes[row[0]](*row[1:])
        self.offset = stop
