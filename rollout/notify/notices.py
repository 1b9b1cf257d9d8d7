"""Rendering notices: Jinja2 templates per locale, and the message bytes on the wire.

Templates live in ``templates/<locale>/`` (``subject.txt.j2``, ``body.txt.j2``,
``body.html.j2``; ``thanks_*`` for the thank-you note). An operator's
``[notices] template_dir`` is searched first. Undefined variables are errors
(StrictUndefined) and HTML is autoescaped.

Messages are built as bytes by hand: ``email.message`` costs more than the
SMTP conversation itself at campaign sizes. Header values never carry control
characters: names are cleaned and RFC 2047 encoded, addresses with control
characters are refused.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import jinja2

from .. import resources
from ..config import NoticeSettings
from ..errors import DeliveryError

PARTS = ("subject.txt.j2", "body.txt.j2", "body.html.j2")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
# Bidirectional controls (and invisible marks) in a display name reorder what a reader sees: "Bank\u202egro.live" shows
# the text after the override reversed. Names keep their letters, never these.
_BIDI = re.compile(r"[\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
NAME_WORD_BYTES = 45  # per encoded word: 45 bytes -> 60 base64 characters, so each word stays under 75 (RFC 2047)


# Why a medium-confidence sighting is a mailbox's own (its evidence sample's rule); the templates say it in words.
BASES = (
    "sender_named",  # several logins on that IP; the envelope sender named this mailbox
    "only_login",  # the only login from that IP; the envelope sender was another address
    "late_login",  # a login from that IP, later than the usual window (the legacy map's lazy expiry)
    "attributed",  # ops attributed an ambiguous sighting to it (`rollout attribute`)
)


@dataclass(frozen=True)
class MailboxLine:
    address: str
    last_legacy_at: datetime | None
    last_ip: str | None
    switch_at: datetime | None
    senders: str | None = None  # envelope senders seen on the day of the last legacy use
    basis: str | None = None  # one of BASES for a medium sighting; None for a high one
    login_gap_seconds: int | None = None


@dataclass(frozen=True)
class NoticeContext:
    """Everything one notice says; built from the ledger, so a resumed run says the same."""

    campaign_id: int
    wave: int
    weeks: int
    kind: str  # reminder | thanks
    customer_ref: str  # the customer's external id, for messages to the operator
    customer_name: str
    to_address: str
    locale: str
    mailboxes: tuple[MailboxLine, ...]
    deadline: datetime | None  # earliest switch-off, else the end of the campaign
    now: datetime
    timezone: str = "Europe/Berlin"


class CampaignFacts(NamedTuple):
    """What every notice of a campaign shares; ``end`` is the deadline when no plan gives dates."""

    id: int
    weeks: int
    timezone: str
    end: datetime


StoredTime = datetime | str | None  # UTC, aware or as the database returns it (naive, or ISO text on SQLite)
# (address, last legacy use, last IP, switch-off, senders, basis, login gap) of a listed mailbox
NoticeLine = tuple[str, StoredTime, str | None, StoredTime, str | None, str | None, int | None]


class NoticeFacts(NamedTuple):
    """One notice as the ledger has it, in plain values (cheap to hand to a worker process).

    ``lines``: a ``NoticeLine`` per listed mailbox, in the order listed; ``notice_context``
    makes their times aware.
    """

    message_id: str
    wave: int
    kind: str
    customer_ref: str
    customer_name: str
    to_address: str
    locale: str
    lines: Sequence[NoticeLine]


def utc(value: StoredTime) -> datetime | None:
    """A stored UTC time (aware, naive, or SQLite's ISO text) as an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def notice_context(campaign: CampaignFacts, facts: NoticeFacts, now: datetime) -> NoticeContext:
    """The template context of one notice: the deadline is its earliest switch-off, else the campaign's end."""
    mailboxes = tuple(
        MailboxLine(address, utc(last), ip, utc(switch), senders, basis, gap)
        for address, last, ip, switch, senders, basis, gap in facts.lines
    )
    switch_dates = [m.switch_at for m in mailboxes if m.switch_at]
    return NoticeContext(
        campaign_id=campaign.id,
        wave=min(facts.wave, campaign.weeks),
        weeks=campaign.weeks,
        kind=facts.kind,
        customer_ref=facts.customer_ref,
        customer_name=facts.customer_name,
        to_address=facts.to_address,
        locale=facts.locale,
        mailboxes=mailboxes,
        deadline=min(switch_dates) if switch_dates else campaign.end,
        now=now,
        timezone=campaign.timezone,
    )


@dataclass(frozen=True)
class RenderedNotice:
    subject: str
    text: str
    html: str
    locale: str


@dataclass
class Renderer:
    """Loads templates once and renders contexts."""

    settings: NoticeSettings
    _env: jinja2.Environment = field(init=False)
    _locales: set[str] = field(init=False)
    _globals: dict[str, dict[str, Any]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        dirs = [Path(self.settings.template_dir)] if self.settings.template_dir else []
        for d in dirs:
            if not d.is_dir():
                raise DeliveryError(f"the notice template directory {d} does not exist: fix [notices] template_dir")
        dirs.append(resources.templates_dir())
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
            undefined=jinja2.StrictUndefined,
            autoescape=lambda name: bool(name and name.endswith(".html.j2")),
            keep_trailing_newline=True,
            auto_reload=False,  # templates do not change during a run: no stat() per render
        )
        self._locales = {p.split("/")[0] for p in self._env.list_templates() if "/" in p}

    def locale_for(self, locale: str) -> str:
        base = (locale or "").replace("_", "-").split("-")[0].lower()
        if base in self._locales:
            return base
        return self.settings.default_locale

    def render(self, ctx: NoticeContext) -> RenderedNotice:
        locale = self.locale_for(ctx.locale)
        prefix = "thanks_" if ctx.kind == "thanks" else ""
        values = template_values(ctx, self.settings, locale)
        out: list[str] = []
        for part in PARTS:
            name = f"{locale}/{prefix}{part}"
            try:
                out.append(self._render(name, values))
            except jinja2.TemplateError as exc:
                where = getattr(exc, "name", None) or name
                raise DeliveryError(
                    f"template {where} failed for customer {ctx.customer_ref}: {exc}; "
                    "fix the template, nothing was sent"
                ) from None
        return RenderedNotice(" ".join(out[0].split()), out[1], out[2], locale)

    def _render(self, name: str, values: dict[str, Any]) -> str:
        """``Template.render`` without its per-call copy of the globals: each template's
        globals (a ChainMap, slow to copy) are copied once, then merged with ``values``."""
        template = self._env.get_template(name)
        globals_ = self._globals.get(name)
        if globals_ is None:
            globals_ = self._globals[name] = dict(template.globals)
        try:
            context = template.new_context({**globals_, **values}, shared=True)
            return self._env.concat(template.root_render_func(context))
        except Exception:
            self._env.handle_exception()  # as Template.render does: a template error with its template line
            raise  # not reached


class _Values(dict[str, Any]):
    """A dict whose keys are attributes too: Jinja resolves ``m.address`` by getattr first.
    The instance's attribute dict is the dict itself, so that lookup finds the key at once
    (a ``__getattr__`` fallback ran after a failed lookup, for every use in every notice)."""

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.__dict__ = self


def _day_de(t: datetime) -> str:
    return f"{t.day:02d}.{t.month:02d}.{t.year:04d}"


def _day_iso(t: datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}"


# How each locale writes a date (ISO for the rest): formatted from the fields, which
# costs a fifth of strftime, called several times per mailbox of every notice.
_DAY_FORMATS = {"de": _day_de, "en": _day_iso}


def template_values(ctx: NoticeContext, settings: NoticeSettings, locale: str) -> dict[str, Any]:
    zone = ZoneInfo(ctx.timezone)
    day = _DAY_FORMATS.get(locale, _day_iso)

    def day_time(moment: datetime | None) -> str | None:
        if moment is None:
            return None
        local = moment.astimezone(zone)
        return f"{day(local)} {local.hour:02d}:{local.minute:02d}"

    mailboxes = []
    for m in ctx.mailboxes:
        last = m.last_legacy_at.astimezone(zone) if m.last_legacy_at else None
        mailboxes.append(
            _Values(
                address=m.address,
                last_legacy_day=day(last) if last else None,
                last_legacy_at=f"{day(last)} {last.hour:02d}:{last.minute:02d}" if last else None,
                last_ip=m.last_ip,
                switch_at=day_time(m.switch_at),
                senders=m.senders,
                basis=m.basis,
                login_minutes=None if m.login_gap_seconds is None else round(m.login_gap_seconds / 60),
            )
        )
    days_left = max(0, (ctx.deadline - ctx.now).days) if ctx.deadline else None
    return {
        "customer": _Values(name=ctx.customer_name, email=ctx.to_address, id=ctx.customer_ref),
        "wave": ctx.wave,
        "weeks": ctx.weeks,
        "is_last": ctx.wave >= ctx.weeks,
        "reminders_left": max(0, ctx.weeks - ctx.wave),
        "days_left": days_left,
        "deadline": day_time(ctx.deadline),
        "mailboxes": mailboxes,
        "server": settings.submission_host,
        "help_url": settings.help_url,
        "timezone": ctx.timezone,
    }


# --- the message on the wire ------------------------------------------------------------


def message_id(campaign_id: int, wave: int, customer_id: int, domain: str, suffix: str = "") -> str:
    """Deterministic: a retry or a resend carries the same id, so duplicates are recognisable."""
    return f"<rollout.c{campaign_id}.w{wave}.k{customer_id}{suffix}@{domain}>"


class NoticeBuildError(DeliveryError):
    """This one notice cannot be built (its address, its name): that customer fails, the wave goes on."""


def clean_name(name: str) -> str:
    """Control characters (CR/LF included) become spaces: a name can never start a new header; bidi controls go."""
    return " ".join(_CONTROL.sub(" ", _BIDI.sub("", name)).split())


def checked_address(address: str, what: str) -> str:
    """A plain address for a header and the envelope: ASCII (an IDN domain in its punycode form)."""
    unsafe = _CONTROL.search(address) or _BIDI.search(address) or any(c in address for c in '<>,"\\ ')
    if unsafe or not address or "@" not in address:
        raise DeliveryError(
            f"{what} {address!r} is not a plain e-mail address (control characters or brackets): "
            "fix it in the inventory or config"
        )
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        raise DeliveryError(f"{what} {address!r} has a non-ASCII local part (that needs SMTPUTF8): give an ASCII one")
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        raise DeliveryError(f"{what} {address!r}: {domain!r} is not a valid domain name") from None


def display_address(name: str, address: str) -> str:
    """``Name <address>`` for a header, folded (RFC 5322): a long or non-ASCII name as encoded words, one per line."""
    name = clean_name(name)
    if not name:
        return address
    if name.isascii() and len(name) <= 60:
        return formataddr((name, address))
    return f"{_encoded_words(name)}\r\n <{address}>"


def _encoded_words(value: str) -> str:
    words: list[bytes] = []
    chunk = b""
    for char in value:
        encoded = char.encode()
        if len(chunk) + len(encoded) > NAME_WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode()}?=" for w in words)


def header_address(display: str, what: str) -> tuple[str, str]:
    """``Name <addr>`` from the config → (encoded header value, bare address)."""
    if _CONTROL.search(display):
        raise DeliveryError(f"{what} {display!r} contains control characters: fix the configuration")
    name, addr = parseaddr(display)
    addr = checked_address(addr, what)
    return display_address(name, addr), addr


@lru_cache(maxsize=1024)  # a wave has few distinct subjects (locale, wave, number of mailboxes)
def encode_header(value: str) -> str:
    """RFC 2047 base64 encoded-words, folded; ``email.header`` is slow enough to dominate a run."""
    value = clean_name(value)
    if value.isascii() and len(value) <= 900:
        return value
    return _encoded_words(value)


def _b64(text: str) -> bytes:
    """Base64 in lines of 76 characters, CRLF-terminated; one C call, then slicing
    (``base64.encodebytes`` makes a call per line)."""
    encoded = binascii.b2a_base64(text.encode("utf-8"), newline=False)
    if not encoded:
        return b""
    return b"\r\n".join([encoded[i : i + 76] for i in range(0, len(encoded), 76)]) + b"\r\n"


@lru_cache(maxsize=16)  # a run dates every message alike
def _date_header(date: datetime) -> str:
    return format_datetime(date)


@dataclass(frozen=True)
class Envelope:
    """Headers every notice of a run shares (from the configuration)."""

    from_header: str
    from_address: str
    reply_to: str | None
    domain: str

    @classmethod
    def from_settings(cls, settings: NoticeSettings) -> Envelope:
        from_header, from_address = header_address(settings.from_address, "[notices] from_address")
        reply_to = header_address(settings.reply_to, "[notices] reply_to")[0] if settings.reply_to else None
        return cls(from_header, from_address, reply_to, from_address.rpartition("@")[2])


def build_message(
    envelope: Envelope, to_name: str, to_address: str, msg_id: str, date: datetime, rendered: RenderedNotice
) -> bytes:
    """multipart/alternative (text, HTML), UTF-8, base64 bodies, CRLF line ends."""
    to_address = checked_address(to_address, "customer address")
    boundary = "=_rollout_" + msg_id.strip("<>").replace("@", "_")
    headers = [
        f"From: {envelope.from_header}",
        *([f"Reply-To: {envelope.reply_to}"] if envelope.reply_to else []),
        f"To: {display_address(to_name, to_address)}",
        f"Subject: {encode_header(rendered.subject)}",
        f"Date: {_date_header(date)}",
        f"Message-ID: {msg_id}",
        f"Content-Language: {rendered.locale}",
        "Auto-Submitted: auto-generated",
        "X-Auto-Response-Suppress: All",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
    ]
    part = "Content-Type: text/{}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    return b"".join(
        [
            "\r\n".join(headers).encode("ascii"),
            b"\r\n\r\n",
            f"--{boundary}\r\n".encode(),
            part.format("plain").encode(),
            _b64(rendered.text),
            f"--{boundary}\r\n".encode(),
            part.format("html").encode(),
            _b64(rendered.html),
            f"--{boundary}--\r\n".encode(),
        ]
    )


def compose(renderer: Renderer, envelope: Envelope, ctx: NoticeContext, msg_id: str, date: datetime) -> bytes:
    """The whole message for one notice; errors name the customer (and the template, if it failed)."""
    rendered = renderer.render(ctx)
    try:
        return build_message(envelope, ctx.customer_name, ctx.to_address, msg_id, date, rendered)
    except (DeliveryError, UnicodeError, ValueError) as exc:
        raise NoticeBuildError(f"customer {ctx.customer_ref} <{ctx.to_address}>: {exc}") from None
