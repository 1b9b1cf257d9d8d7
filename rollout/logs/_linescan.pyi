"""Types of the C line classifier (``_linescan.c``), which mypy cannot read: see the docstrings there."""

from collections.abc import Callable, Sequence
from typing import Any, type_check_only

from .events import Event, PlainLoginRecord

# A row Python must parse: (kind, start, end) for a line of another program, else
# (kind, start, end, stamp, stamp end, host, host end, program, program end, message, queue ID, queue ID end),
# the spans after ``end`` relative to the line's start.
Row = tuple[int, ...]
AuthenticatedCounts = dict[tuple[str | None, int], list[float]]  # (user lower-cased or None, UTC day) → [count, last t]

API: int  # rollout/logs/native.py: which source the module was built from

@type_check_only
class Rules:
    """The rule tables as ``scan`` reads them (a capsule: build once with ``rules``, pass to every scan)."""

def rules(tables: dict[str, str | tuple[str, ...]], /) -> Rules: ...
def scan(
    block: bytes | memoryview,
    rules: Rules,
    trusted: Sequence[tuple[int, bytes, int]],
    file: str | None = None,
    offset: int = 0,
    time_of: Callable[[str], float | None] | None = None,
    classes: tuple[type | None, ...] | None = None,
    /,
) -> tuple[list[Row | Event], int, int, tuple[int, ...], tuple[int, ...], bool, AuthenticatedCounts | None]: ...
def file_logins(
    records: list[Any],
    ips: list[str | None],
    keys: str,
    users: list[str | None] | None,
    logins: dict[str, list[PlainLoginRecord]],
    sessions: dict[str, PlainLoginRecord],
    known: frozenset[str] | None,
    refused: Callable[[Any], None],
    /,
) -> list[tuple[str, PlainLoginRecord, str | None]]: ...
def prune_logins(logins: dict[str, list[PlainLoginRecord]], before: float, cap: float, /) -> None: ...

class LoginRecord:
    """``events.LoginRecord``, compact: the times, the offset and an ASCII line held as C values."""

    t: float
    user: str
    ended: float | None
    key: str | None
    file: str
    offset: int
    line: str
    def __init__(
        self, t: float, user: str, ended: float | None, key: str | None, file: str, offset: int, line: str
    ) -> None: ...

class Refusal:
    """``events.Refusal`` for a relay refusal the classifier read (equal to one): its strings read from its line."""

    t: float
    host: str
    file: str
    offset: int
    line: str
    action: str
    reason: str
    client_ip: str | None
    sender: str | None
    rcpt: str | None
    text: str
    map_address: str | None
