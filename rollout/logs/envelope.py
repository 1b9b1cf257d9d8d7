"""The envelope: time stamp, host, program, pid, message (docs/detection.md §1).

Handled: RFC 3164 (space- or zero-padded day, optional ``<PRI>``), Postfix
``maillog_file`` and journald ``short`` (same shape), RFC 3339 (rsyslog,
journald ``short-iso``, with ``+hh:mm`` or ``+hhmm``), journald ``-o json``,
Dovecot ``log_path`` files (no host: ``prefix: Level: msg``; Dovecot 1.x's own
``dovecot: Mmm dd hh:mm:ss Level: msg``), the Exim mainlog
(``YYYY-MM-DD hh:mm:ss[.mmm][ ±hhmm] [[pid]] msg``, no host) and nginx's error log
with its mail proxy (``YYYY/MM/DD hh:mm:ss [level] pid#tid: msg``, no host). Solaris syslogd's
``[ID n facility.level]`` tag before the message is dropped.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from .events import Envelope

MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}
YEAR_SLACK = timedelta(days=7)  # P7: a line this far after the reference time belongs to the year before

# Solaris syslogd puts the message ID and facility.level between the program and the message:
# "sendmail[123]: [ID 801593 mail.info] …"; it is not part of the message (the C classifier skips it too)
SOLARIS_TAG = r"(?:\[ID \d+ [a-z0-9]+\.[a-z]+\] )?"
_BSD = re.compile(
    r"(?:<\d{1,3}>)?(?P<stamp>[A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d)(?:\.\d+)? "
    r"(?:(?P<host>[^\s:\[<]+) )?(?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: " + SOLARIS_TAG + r"(?P<msg>.*)"
)
_ISO = re.compile(
    r"(?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?) "
    r"(?P<host>[^\s:\[]+) (?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: " + SOLARIS_TAG + r"(?P<msg>.*)"
)
# Exim mainlog, or a Dovecot log file with an ISO-like custom stamp, or syslog with such a stamp
_SPACED = re.compile(r"(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.\d+)?(?: (?P<zone>[+-]\d{4}))? (?P<rest>.*)")
_PROG = re.compile(
    r"(?:(?P<host>[^\s:\[]+) )?(?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: " + SOLARIS_TAG + r"(?P<msg>.*)"
)
_EXIM_PID = re.compile(r"\[(?P<pid>\d+)\] (?P<msg>.*)")
_NGINX = re.compile(r"(?P<stamp>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(?P<level>[a-z]+)\] (?P<pid>\d+)#\d+: (?P<msg>.*)")
_DOVECOT1 = re.compile(r"dovecot: (?P<stamp>[A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d) (?P<msg>.*)")
_YEARLESS = re.compile(r"(?:<\d{1,3}>)?(?:dovecot: )?[A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d")


def year_inferred(line: str) -> bool:
    """Whether the line's stamp has no year (RFC 3164, Dovecot 1.x's own log): its year is inferred (P7)."""
    return _YEARLESS.match(line) is not None


class EnvelopeParser:
    """Splits lines; knows the zone of zone-less stamps and the reference time for the year."""

    def __init__(self, default_host: str, zone: str = "UTC", reference: datetime | None = None) -> None:
        self.default_host = default_host
        self.zone_name = zone
        self.zone = UTC if zone == "UTC" else ZoneInfo(zone)
        self.reference = reference or datetime.now(UTC)
        self._cache: dict[str, float] = {}
        self._last: tuple[str, float | None] = ("", None)

    def parse(self, line: str) -> Envelope | None:
        first = line[:1]
        if first == "{":
            return self._json(line)
        if first.isdigit():
            return self._iso(line)
        m = _BSD.match(line)
        if m is None:
            return self._dovecot1(line)
        t = self._bsd_time(m["stamp"])
        if t is None:
            return None
        host, prog, msg = m["host"], m["prog"], m["msg"]
        if host is None:  # no host: a Dovecot log_path file ("pop3-login: Info: Login: …")
            return Envelope(t, self.default_host, "dovecot", m["pid"], f"{prog}: {msg}")
        return Envelope(t, host, prog, m["pid"], msg)

    def time_of(self, stamp: str) -> float | None:
        """UTC seconds of an RFC 3164 or RFC 3339 stamp (as split off by the C line classifier)."""
        if stamp == self._last[0]:  # consecutive lines mostly share their second
            return self._last[1]
        t = self._iso_time(stamp) if stamp[:1].isdigit() else self._bsd_time(stamp)
        self._last = (stamp, t)
        return t

    # -- the three families --------------------------------------------------------

    def _iso(self, line: str) -> Envelope | None:
        m = _ISO.match(line)
        if m is not None:
            t = self._iso_time(m["stamp"])
            return None if t is None else Envelope(t, m["host"], m["prog"], m["pid"], m["msg"])
        m = _SPACED.match(line)
        if m is None:
            return self._nginx(line)
        t = self._spaced_time(m["stamp"], m["zone"])
        if t is None:
            return None
        rest = m["rest"]
        p = _PROG.fullmatch(rest)
        if p is not None and (p["host"] is not None or "-" in p["prog"] or "(" in p["prog"]):
            if p["host"] is None:  # Dovecot log file with a custom stamp
                return Envelope(t, self.default_host, "dovecot", None, rest)
            return Envelope(t, p["host"], p["prog"], p["pid"], p["msg"])
        pid = None
        e = _EXIM_PID.match(rest)
        if e is not None:
            pid, rest = e["pid"], e["msg"]
        return Envelope(t, self.default_host, "exim", pid, rest)

    def _nginx(self, line: str) -> Envelope | None:
        """nginx's error log (its mail proxy logs there): local time, no host."""
        m = _NGINX.fullmatch(line)
        if m is None:
            return None
        t = self._spaced_time(m["stamp"].replace("/", "-"), None)
        return None if t is None else Envelope(t, self.default_host, "nginx", m["pid"], m["msg"])

    def _dovecot1(self, line: str) -> Envelope | None:
        """Dovecot 1.x's own log file: the program first, then a year-less stamp, no host."""
        m = _DOVECOT1.fullmatch(line)
        if m is None:
            return None
        t = self._bsd_time(m["stamp"])
        return None if t is None else Envelope(t, self.default_host, "dovecot", None, m["msg"])

    def _json(self, line: str) -> Envelope | None:
        try:
            obj = json.loads(line)
            t = int(obj["__REALTIME_TIMESTAMP"]) / 1e6
        except (ValueError, KeyError, TypeError):
            return None
        message = obj.get("MESSAGE")
        if isinstance(message, list):  # not valid UTF-8: journald gives the bytes
            message = bytes(b & 0xFF for b in message if isinstance(b, int)).decode("utf-8", "replace")
        if not isinstance(message, str):
            return None
        program = obj.get("SYSLOG_IDENTIFIER") or obj.get("_COMM")
        if not isinstance(program, str):
            return None
        host = obj.get("_HOSTNAME") or self.default_host
        return Envelope(t, str(host), program, obj.get("SYSLOG_PID") or obj.get("_PID"), message)

    # -- time ---------------------------------------------------------------------

    def _bsd_time(self, stamp: str) -> float | None:
        """Cached per hour ("Mar  2 09"): within an hour a zone's offset does not change (fold=0)."""
        hour = stamp[:-6]
        base = self._cache.get(hour)
        if base is None:
            base = self._bsd_hour(hour)
            if base is None:
                return None
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[hour] = base
        mm, ss = stamp[-5:-3], stamp[-2:]
        if (
            not (mm.isdigit() and ss.isdigit() and stamp[-6] == ":" and stamp[-3] == ":")
            or int(mm) > 59
            or int(ss) > 59
        ):
            return None
        return base + int(mm) * 60 + int(ss)

    def _bsd_hour(self, hour: str) -> float | None:
        try:
            mon = MONTHS[hour[:3]]
            day = int(hour[4:6])
            hh = int(hour[-2:])
            year = self.reference.year
            moment = _local(year, mon, day, hh, 0, 0, self.zone)
            if moment is None or moment > self.reference + YEAR_SLACK:
                moment = _local(year - 1, mon, day, hh, 0, 0, self.zone)
        except (KeyError, ValueError):
            return None
        return None if moment is None else moment.timestamp()

    def _iso_time(self, stamp: str) -> float | None:
        try:
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)
        return moment.timestamp()

    def _spaced_time(self, stamp: str, zone: str | None) -> float | None:
        key = stamp + (zone or "")
        t = self._cache.get(key)
        if t is not None:
            return t
        try:
            moment = datetime.fromisoformat(stamp)
            if zone:
                moment = datetime.fromisoformat(f"{stamp}{zone[:3]}:{zone[3:]}")
            else:
                moment = moment.replace(tzinfo=self.zone)
        except ValueError:
            return None
        t = moment.timestamp()
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[key] = t
        return t


def _local(year: int, mon: int, day: int, hh: int, mm: int, ss: int, zone: timezone | ZoneInfo) -> datetime | None:
    try:
        return datetime(year, mon, day, hh, mm, ss, tzinfo=zone)
    except ValueError:  # Feb 29 in a year without one
        return None
