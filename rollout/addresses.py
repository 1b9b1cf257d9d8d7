"""Validate and normalise mailbox addresses.

The domain is lower-cased and IDN domains are turned into their ASCII
(punycode) form; the local part is kept as given (RFC 5321 lets it be
case-sensitive, and support wants to see it as the customer wrote it).
Uniqueness is case-insensitive through ``address_key``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_LOCAL_FORBIDDEN = re.compile(r'[\s\x00-\x1f\x7f"(),:;<>@\[\\\]]')
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class AddressError(ValueError):
    """Why an address is not acceptable, in words for the operator."""


@dataclass(frozen=True)
class Address:
    local: str
    domain: str

    @property
    def text(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def key(self) -> str:
        return self.text.lower()


def parse_address(raw: str) -> Address:
    text = raw.strip()
    if not text:
        raise AddressError("address is empty")
    local, at, domain = text.rpartition("@")
    if not at:
        raise AddressError(f"{raw!r} has no @")
    if not local:
        raise AddressError(f"{raw!r} has an empty local part")
    if _LOCAL_FORBIDDEN.search(local):
        raise AddressError(f"{raw!r}: the local part contains a space, quote, control character or one of ()<>[]:;@\\,")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise AddressError(f"{raw!r}: the local part has a leading, trailing or double dot")
    if len(local.encode()) > 64:
        raise AddressError(f"{raw!r}: the local part is longer than 64 bytes")
    return Address(local, normalise_domain(domain, raw))


def login_key(name: str) -> str:
    """The one form in which login names, SASL users, senders and inventory addresses are compared: lower-cased,
    with an IDN domain in its ASCII form as ``Address.key`` has it (a login logged as ``anna@bücher.de`` is the
    mailbox ``anna@xn--bcher-kva.de``). A name whose domain is not a valid one is only lower-cased."""
    key = name.lower()
    if key.isascii():  # nearly every name: nothing for IDNA to do
        return key
    local, at, domain = key.rpartition("@")
    ascii_domain = _ascii_domain(domain.rstrip(".")) if at else None
    return f"{local}@{ascii_domain}" if ascii_domain is not None else key


def domain_key(domain: str) -> str:
    """A domain in the form ``Address.domain`` has: lower-cased, IDN in ASCII; an invalid one only lower-cased."""
    key = domain.strip().rstrip(".").lower()
    return key if key.isascii() else _ascii_domain(key) or key


def normalise_domain(domain: str, raw: str | None = None) -> str:
    shown = raw if raw is not None else domain
    domain = domain.strip().rstrip(".").lower()
    if not domain:
        raise AddressError(f"{shown!r} has an empty domain")
    ascii_domain = _ascii_domain(domain)
    if ascii_domain is None:
        raise AddressError(f"{shown!r}: {domain!r} is not a valid domain name")
    return ascii_domain


@lru_cache(maxsize=65_536)
def _ascii_domain(domain: str) -> str | None:
    """IDNA (punycode) form of a lower-cased domain, or None if it is not a valid name.

    Cached: a provider's million mailboxes sit in a few thousand domains.
    """
    if domain.isascii():
        ascii_domain = domain  # nothing for IDNA to do, and nameprep is slow
    else:
        try:
            ascii_domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or any(not _LABEL.match(label) for label in labels) or len(ascii_domain) > 253:
        return None
    return ascii_domain
