"""One line in, one event (or the kind of line it was) out."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from .envelope import EnvelopeParser
from .events import Event
from .exim import parse_exim
from .imapd import parse_dovecot, parse_other_imapd
from .postfix import PostfixParser, split_program
from .proxies import parse_nginx, parse_perdition
from .rules import (
    DOVECOT,
    EXIM_PREFIXES,
    EXIM_PROGRAMS,
    NGINX_PROGRAMS,
    PERDITION_PREFIXES,
    PERDITION_PROGRAMS,
    POSTFIX,
)

UNKNOWN = "unknown"


def our_text_matcher(reject_text: str, help_url: str) -> Callable[[str], str | None]:
    """A function recognising our enforcement map's text; it returns the ``{address}`` in it."""
    pattern = re.escape(reject_text).replace(re.escape("{address}"), r"(?P<address>\S+?)")
    pattern = pattern.replace(re.escape("{help_url}"), re.escape(help_url))
    compiled = re.compile(pattern)

    def match(text: str) -> str | None:
        m = compiled.fullmatch(text)
        if m is None:
            return None
        return m.groupdict().get("address") or ""

    return match


class LineParser:
    """Parses lines of one file; counts lines per kind in ``kinds``."""

    def __init__(self, envelopes: EnvelopeParser, our_text: Callable[[str], str | None]) -> None:
        self.envelopes = envelopes
        self.postfix = PostfixParser(our_text)
        self.kinds: Counter[str] = Counter()
        self.spec: tuple[str, str] = ("", "")  # (reject_text, help_url) to rebuild this parser in a worker

    def parse(self, line: str, file: str, offset: int) -> Event | None:
        result = self._parse(line, file, offset)
        if isinstance(result, str):
            self.kinds[result] += 1
            return None
        self.kinds[type(result).__name__.lower()] += 1
        return result

    def _parse(self, line: str, file: str, offset: int) -> Event | str:
        # every program below comes from rules.py, which the C classifier reads too: add programs there
        env = self.envelopes.parse(line)
        if env is None:
            return UNKNOWN
        program = env.program
        if program.startswith(POSTFIX):
            parts = split_program(program)
            if parts is None:
                return UNKNOWN
            return self.postfix.parse(env, parts[0], parts[1], file, offset, line)
        if program == DOVECOT:
            return parse_dovecot(env, file, offset, line)
        if program in EXIM_PROGRAMS or program.startswith(EXIM_PREFIXES):
            return parse_exim(env, file, offset, line)
        if program in NGINX_PROGRAMS:
            return parse_nginx(env, file, offset, line)
        if program in PERDITION_PROGRAMS or program.startswith(PERDITION_PREFIXES):
            return parse_perdition(env, file, offset, line)
        other = parse_other_imapd(
            env, file, offset, line
        )  # Courier, UW, Cyrus: by rules.COURIER_PROGRAMS and the others
        if other is not None:
            return other
        return "other-program"
