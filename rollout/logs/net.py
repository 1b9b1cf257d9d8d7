"""IP normalisation (docs/detection.md §7.2 N1)."""

from __future__ import annotations

import ipaddress
import re
import socket
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


TRUSTED_CACHE_SIZE = 100_000


class TrustedNetworks:
    """``scan.trusted_networks``: ``contains(ip)`` for a normalised address (webmail, proxies, our own hosts, R2).

    Asked for nearly every login and message, mostly with addresses seen once: the common
    cases are decided without ``ipaddress`` (integer masks for both families, the first
    octet for IPv4), the rest cached within a bound so memory stays flat.
    """

    def __init__(self, networks: tuple[str, ...] | list[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._v4 = [(int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 4]
        self._v6 = [(int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 6]
        # first octets a trusted IPv4 address can start with (None: some network is wider than a /8)
        wide = any(n.prefixlen < 8 for n in self.networks if n.version == 4)
        self._octets = (
            None
            if wide
            else frozenset(str(n.network_address).partition(".")[0] for n in self.networks if n.version == 4)
        )
        # the same for IPv6: the first group a trusted address can start with, without leading zeros ("" for 0)
        v6 = [n for n in self.networks if n.version == 6]
        wide6 = any(n.prefixlen < 16 for n in v6)
        self._groups = None if wide6 else frozenset(format(int(n.network_address) >> 112, "x").lstrip("0") for n in v6)
        self._cache: dict[str, bool] = {}

    def contains(self, ip: str) -> bool:
        if ":" in ip:
            groups = self._groups
            if groups is not None and ip.partition(":")[0].lower().lstrip("0") not in groups:
                return False  # no trusted IPv6 network starts so
        elif self._octets is not None and ip.partition(".")[0] not in self._octets:
            return False  # no trusted dotted quad starts so: the common case
        known = self._cache.get(ip)
        if known is None:
            known = self._lookup(ip)
            if len(self._cache) >= TRUSTED_CACHE_SIZE:
                self._cache.clear()  # dynamic client IPs never end: keep memory flat
            self._cache[ip] = known
        return known

    def _lookup(self, ip: str) -> bool:
        try:
            if ":" in ip:
                value, nets = int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big"), self._v6
            elif DOTTED_QUAD.fullmatch(ip):
                value, nets = int.from_bytes(socket.inet_aton(ip), "big"), self._v4
            else:
                raise OSError
        except OSError:  # not what inet_pton reads (a scope ID, a stray form): ipaddress decides
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return False
            return any(addr in net for net in self.networks)
        return any(value & mask == net for net, mask in nets)
