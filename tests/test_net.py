"""net.TrustedNetworks decides as ipaddress does, for every spelling of an address it may be asked about."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.logs.net import TrustedNetworks

NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "192.0.2.0/24", "2001:db8:ff::/48", "fd00::/8")


def reference(ip: str, networks: tuple[str, ...] = NETWORKS) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(n) for n in networks)


v4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
v6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
near = st.sampled_from(
    [
        "127.0.0.1",
        "10.255.0.1",
        "192.0.2.77",
        "192.0.3.1",
        "::1",
        "::2",
        "2001:db8:ff::1",
        "2001:db8:fe::1",
        "fd12::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "2001:DB8:FF::9",
        "0:0:0:0:0:0:0:1",
        "FD00::1",
        "1.2.3",
        "x",
    ]
)


@settings(deadline=None)  # no timing: a loaded machine must not fail it
@given(st.one_of(v4, v6, near, near.map(str.upper)))
def test_trusted_networks_agree_with_ipaddress(ip: str) -> None:
    assert TrustedNetworks(NETWORKS).contains(ip) == reference(ip)


def test_a_network_wider_than_the_first_group_is_still_found() -> None:
    wide = ("0.0.0.0/0", "::/0")
    trusted = TrustedNetworks(wide)
    assert trusted.contains("203.0.113.9") and trusted.contains("2a00::1") and not trusted.contains("not-an-address")
