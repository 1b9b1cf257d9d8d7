"""Settings: ``rollout.toml`` < environment < command-line flags.

Every setting lives in a frozen dataclass. A TOML table ``[smtp]`` fills
``SmtpSettings``; any field can be overridden from the environment as
``ROLLOUT_<SECTION>_<FIELD>`` (top-level fields as ``ROLLOUT_<FIELD>``, so
``ROLLOUT_DATABASE_URL`` and ``ROLLOUT_SMTP_PASSWORD``). Secrets come only from
the file or the environment, never from argv.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_CONFIG_NAME = "rollout.toml"


def secret(default: Any = None) -> Any:
    return field(default=default, metadata={"secret": True})


@dataclass(frozen=True)
class ScanSettings:
    log_files: tuple[str, ...] = ()  # paths or globs the scheduler scans
    host: str | None = None  # host name for files without one (Dovecot log_path, Exim mainlog)
    window_minutes: int = 30
    tolerance_seconds: int = 120
    session_tracking: bool = True
    session_cap_hours: int = 24
    trusted_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    local_domains: tuple[str, ...] = ()  # added to the inventory's domains
    timezone: str = "UTC"  # zone of year-less, zone-less log stamps
    interval_minutes: int = 15
    workers: int = 0  # threads reading and parsing a big file (0: one per core; 1: parse in the scanning thread)
    lock_wait_seconds: float = 300.0  # one scan at a time per database: a second one waits this long, then gives up


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    security: str = "none"  # none | starttls | tls
    ca_file: str | None = None  # trust this CA bundle (a private CA) instead of the system's
    username: str | None = None
    password: str | None = secret()
    timeout_seconds: float = 30.0
    concurrency: int = 4
    rate_per_second: float = 0.0  # 0 = unlimited; counted at send time
    retries: int = 3
    retry_backoff_seconds: float = 1.0


@dataclass(frozen=True)
class NoticeSettings:
    template_dir: str | None = None  # operator's own templates, tried before the shipped ones
    default_locale: str = "en"
    from_address: str = "Mail Support <support@example.net>"
    reply_to: str | None = None
    help_url: str = "https://example.net/help/smtp-auth"
    submission_host: str = "mail.example.net"
    lookback_days: int = 14
    grace_hours: int = 48
    min_warning_days: int = 7  # a step holds back a mailbox without a delivered notice this long before it
    thank_you: bool = False
    workers: int = 0  # processes that render and send; 0 = one per CPU core (at most [smtp] concurrency)


@dataclass(frozen=True)
class EnforcementSettings:
    backend: str = "postfix-sender-map"
    map_path: str = "/etc/postfix/smtp-after-pop-disabled"
    map_type: str = "hash"
    postmap_command: str = "postmap"
    list_path: str = "/etc/rollout/smtp-after-pop-disabled.txt"
    reject_text: str = (
        "SMTP-after-POP is switched off for {address}: turn on SMTP authentication "
        "(port 587, STARTTLS, user name = your address), see {help_url}"
    )
    help_url: str = "https://example.net/help/smtp-auth"
    defer_code: str = "4.7.1"
    reject_code: str = "5.7.1"
    ladder: tuple[str, ...] = ("reject",)  # stages a cohort climbs: warn, defer, reject
    keep_versions: int = 5
    soak_hours: float = 24.0
    # the final step: the POP-before-SMTP client map ("hash:/etc/postfix/pop-before-smtp") is emptied,
    # or with retire = "check" only verified gone from every smtpd_*_restrictions (postconf)
    legacy_map: str | None = None
    retire: str = "empty"  # empty | check
    postconf_command: str = "postconf"
    reload_command: str = "postfix reload"  # undo of the final step in mode check changes main.cf: Postfix rereads it
    legacy_writers: tuple[str, ...] = ("pop-before-smtp", "poprelayd", "rpc.dracd", "dracd", "whosond")


@dataclass(frozen=True)
class GateSettings:
    """Figures that must have settled before the next step; a threshold set to "off" does not gate.

    The defaults are written for a provider of about 100,000 mailboxes (docs: configuration).
    """

    max_scan_age_minutes: float | None = 30.0
    window_hours: float = 6.0
    max_refusals_per_hour: float | None = 50.0  # the busiest hour in the window
    max_refused_share: float | None = 0.005  # of the last switched cohort, refused at least once in the window
    max_next_legacy_share: float | None = 0.02  # of the next cohort, still on the legacy path
    command: str | None = None  # an external check: exit 0 passes
    command_timeout_seconds: float = 60.0


@dataclass(frozen=True)
class RolloutSettings:
    window: str = "08:00-17:00"
    timezone: str = "Europe/Berlin"
    skip_weekends: bool = True


@dataclass(frozen=True)
class SchedulerSettings:
    lock_file: str = "rollout-scheduler.lock"  # SQLite only; PostgreSQL uses an advisory lock
    misfire_grace_seconds: int = 3600
    expire_minutes: int = 60  # how often ended exemptions are put back in the map


@dataclass(frozen=True)
class WebSettings:
    bind: str = "127.0.0.1:8080"  # HOST:PORT; loopback unless told otherwise
    threads: int = 4
    status_refresh_seconds: float = 60.0  # the overview's figures are recomputed this often (0: on every request)
    session_hours: float = 10.0  # a working day; then log in again
    login_attempts: int = 5  # failed logins per account and per client address ...
    lockout_minutes: int = 15  # ... within this time lock that account / address for it
    trusted_header: str | None = None  # e.g. "X-Remote-User" from an SSO reverse proxy; off by default
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks whose trusted_header is believed


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///rollout.db"
    scan: ScanSettings = field(default_factory=ScanSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    notices: NoticeSettings = field(default_factory=NoticeSettings)
    enforcement: EnforcementSettings = field(default_factory=EnforcementSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    gates: GateSettings = field(default_factory=GateSettings)
    web: WebSettings = field(default_factory=WebSettings)
    source: str = "defaults"  # where the file part came from, for `config show`


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective settings.

    ``path`` is ``--config``; without it ``ROLLOUT_CONFIG``, then ``./rollout.toml``
    if present. ``overrides`` are flags, as ``{"database_url": ...}`` or
    ``{"smtp.host": ...}``.
    """
    environ = os.environ if environ is None else environ
    path = path or (Path(environ["ROLLOUT_CONFIG"]) if environ.get("ROLLOUT_CONFIG") else None)
    if path is None and Path(DEFAULT_CONFIG_NAME).is_file():
        path = Path(DEFAULT_CONFIG_NAME)
    data: dict[str, Any] = _read_toml(path) if path else {}
    settings = _build(Settings, data, where=str(path) if path else "defaults")
    settings = dataclasses.replace(settings, source=str(path) if path else "defaults")
    settings = _apply_env(settings, environ)
    for key, value in (overrides or {}).items():
        if value is not None:
            settings = _set(settings, key, value, where="command line")
    validate(settings)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}): TOML files must be UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


# --- checks made when the settings are loaded: a wrong value fails at once, named, not mid-run ---

DATABASE_SCHEMES = ("sqlite", "postgresql")


def validate(settings: Settings) -> None:
    """Raise ConfigError naming the first setting that cannot work."""
    _check_database_url(settings.database_url)
    for network in settings.scan.trusted_networks:
        _check_network(network)
    for name, zone in (("scan.timezone", settings.scan.timezone), ("rollout.timezone", settings.rollout.timezone)):
        _check_zone(name, zone)
    _check_url("notices.help_url", settings.notices.help_url)
    _check_url("enforcement.help_url", settings.enforcement.help_url)
    _check_file_path("enforcement.map_path", settings.enforcement.map_path)
    _check_file_path("enforcement.list_path", settings.enforcement.list_path)
    _check_range("smtp.port", settings.smtp.port, 1, 65535)
    _check_range("smtp.concurrency", settings.smtp.concurrency, 1, 1000)
    _check_range("smtp.timeout_seconds", settings.smtp.timeout_seconds, 0.1, 3600)
    _check_range("notices.lookback_days", settings.notices.lookback_days, 1, 3660)
    _check_range("scan.interval_minutes", settings.scan.interval_minutes, 1, 1440)
    _check_range("enforcement.keep_versions", settings.enforcement.keep_versions, 0, 1000)
    _check_range("enforcement.soak_hours", settings.enforcement.soak_hours, 0, 24 * 366)
    if settings.smtp.security not in ("none", "starttls", "tls"):
        raise ConfigError(f"smtp.security must be none, starttls or tls, not {settings.smtp.security!r}")


def _check_database_url(url: str) -> None:
    scheme, sep, rest = url.partition("://")
    backend = scheme.partition("+")[0]
    if not sep or not scheme.replace("+", "").isalnum():
        raise ConfigError(
            f"database_url {mask_url(url)!r} is not a URL like sqlite:///path/rollout.db or postgresql://user@host/db"
        )
    if backend not in DATABASE_SCHEMES:
        raise ConfigError(f"database_url: {backend!r} databases are not supported (use sqlite:// or postgresql://)")
    if backend == "sqlite":
        database = rest.partition("?")[0][1:]  # after the host part, which SQLite leaves empty
        if database and database != ":memory:":
            folder = Path(database).expanduser().parent
            if not folder.is_dir():
                raise ConfigError(
                    f"database_url: the folder {folder} of the SQLite database does not exist "
                    "(rollout does not create it)"
                )


def _check_network(network: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise ConfigError(
            f"scan.trusted_networks: {network!r} is not a network like 192.0.2.0/24 or 2001:db8::/32"
        ) from None


def _check_zone(name: str, zone: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{name}: unknown time zone {zone!r} (use an IANA name such as Europe/Berlin or UTC)"
        ) from None


def _check_url(name: str, url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise ConfigError(f"{name}: {url!r} is not an http(s) URL like https://example.net/help")


def _check_file_path(name: str, path: str) -> None:
    """The file may be missing; what stands where its folders should be must be folders."""
    if not path or "\0" in path:
        raise ConfigError(f"{name} is empty")
    for parent in Path(path).expanduser().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{name}: {parent} is a file, where the folder of {path} should be")
            return


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, not {value!r}")


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = known.get(key)
        if f is None or f.name == "source":
            raise ConfigError(
                f"{where}: unknown setting {key!r} (known: {', '.join(sorted(k for k in known if k != 'source'))})"
            )
        hint = _hints(cls)[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: [{key}] must be a table")
            kwargs[key] = _build(hint, value, where=f"{where} [{key}]")
        else:
            kwargs[key] = _coerce(value, hint, f"{where}: {key}")
    return cls(**kwargs)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, what: str) -> Any:
    """Check a TOML value (or convert an environment string) to the field's type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None or value == "":
            return None
        (inner,) = [a for a in args if a is not type(None)]
        if inner in (int, float) and (value is False or str(value).strip().lower() == "off"):
            return None  # an optional number switched off (a gate that does not gate)
        return _coerce(value, inner, what)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{what} must be a list")
        return tuple(_coerce(v, args[0], what) for v in value)
    if hint is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{what} must be true or false, not {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{what} must be a number, not {value!r}")
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{what} must be a number, not {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{what} must be a string, not {value!r}")
        return value
    return value


def _apply_env(settings: Settings, environ: Mapping[str, str]) -> Settings:
    for dotted in _all_keys(Settings):
        name = "ROLLOUT_" + dotted.replace(".", "_").upper()
        if name in environ:
            settings = _set(settings, dotted, environ[name], where=f"environment {name}")
    return settings


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        hint = _hints(cls)[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            keys += _all_keys(hint, prefix=f"{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _set(settings: Settings, dotted: str, value: Any, where: str) -> Settings:
    section, _, name = dotted.rpartition(".")
    if not section:
        hint = _hints(Settings).get(name)
        if hint is None:
            raise ConfigError(f"{where}: unknown setting {dotted!r}")
        return dataclasses.replace(settings, **{name: _coerce(value, hint, f"{where}")})
    inner = getattr(settings, section)
    hint = _hints(type(inner)).get(name)
    if hint is None:
        raise ConfigError(f"{where}: unknown setting {dotted!r}")
    inner = dataclasses.replace(inner, **{name: _coerce(value, hint, f"{where}")})
    return dataclasses.replace(settings, **{section: inner})


def describe(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets masked (for `config show`)."""

    def walk(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                out[f.name] = walk(value)
            elif f.metadata.get("secret"):
                out[f.name] = "********" if value else None
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out

    data = walk(settings)
    data["database_url"] = mask_url(settings.database_url)
    return data


_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pass|pwd|sslpassword)=)[^&#]*")


def mask_url(url: str) -> str:
    """Hide the passwords in a database URL: ``user:PASS@`` and ``?password=PASS``."""
    url = _QUERY_SECRET.sub(r"\1********", url)
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.partition("?")[0]:
        return url
    path_start = rest.find("/", rest.rfind("@", 0, len(rest.partition("?")[0])))
    authority = rest[:path_start] if path_start >= 0 else rest
    credentials, _, host = authority.rpartition("@")
    if ":" in credentials:
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:********@{host}{rest[len(authority) :]}"
    return url
