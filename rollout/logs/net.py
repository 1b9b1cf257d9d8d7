"""IP normalisation (docs/detection.md §7.2 N1)."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # no leading zeros
DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


@lru_cache(maxsize=65536)
def normalise_ip(raw: str) -> str | None:
    """``::ffff:1.2.3.4`` → ``1.2.3.4``; IPv6 compressed, lower case; None if not an address."""
    raw = raw.strip().strip("[]")
    if DOTTED_QUAD.fullmatch(raw):
        return raw  # plain dotted quad: the common case, without ipaddress's cost
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def client_ip(client: str) -> str | None:
    """``host[ip]`` or ``host[ip]:port`` → the normalised ip."""
    start = client.rfind("[")
    end = client.rfind("]")
    if start < 0 or end < start:
        return None
    return normalise_ip(client[start + 1 : end])
