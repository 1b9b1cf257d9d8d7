"""Types of the C line classifier (``_linescan.c``); see its docstrings for what each function does."""

from collections.abc import Callable, Sequence
from typing import Any

def rules(tables: dict[str, Any]) -> object: ...
def scan(
    block: bytes | memoryview,
    rules: object,
    trusted: Sequence[tuple[int, bytes, int]],
    file: str = ...,
    offset: int = ...,
    time_of: Callable[[str], float | None] | None = ...,
    classes: tuple[Any, ...] = ...,
) -> tuple[list[Any], int, int, tuple[int, ...], tuple[int, ...], bool, dict[Any, list[Any]] | None]: ...
def file_logins(
    records: list[Any],
    ips: list[str],
    keys: str,
    users: list[str | None] | None,
    logins: dict[str, list[Any]],
    sessions: dict[str, Any],
    known: frozenset[str] | None,
) -> list[tuple[str, Any, str | None]]: ...
def prune_logins(logins: dict[str, list[Any]], before: float, cap: float) -> None: ...

class LoginRecord:
    """rollout.logs.events.LoginRecord, compact."""

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
