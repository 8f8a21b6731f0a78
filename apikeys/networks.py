"""IP allowlists of API keys (docs/product.md#ip-allowlists).

A key may carry up to `MAX_RANGES` CIDR ranges, IPv4 and IPv6. A single address is the
range of that one address (`/32`, `/128`). Ranges are stored normalised (`10.0.0.0/8`,
`2001:db8::/32`), deduplicated and sorted, so two lists that allow the same ranges read
the same. A range with host bits set (`10.0.0.1/8`) is refused with the range it
probably meant, rather than widened or narrowed silently; so is a scoped address
(`fe80::1%eth0`), whose zone no client address carries. An IPv4-mapped IPv6 range is
stored as the IPv4 range it stands for.

The client address is the one `config.net.client_ip` reads (`TRUSTED_PROXY_HOPS`), or the
one the verify API is told. An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a
dual-stack socket reports for an IPv4 client) is checked as the IPv4 address it carries.
An address that cannot be read is outside every list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_RANGES = 50
MAX_RANGE_LENGTH = 64


class NetworkError(ValueError):
    """An allowlist that cannot be stored; `message` says which entry and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def clean_allowed_ips(values: object) -> list[str]:
    """`values` (a list of strings) as a normalised, deduplicated, sorted list of CIDR
    ranges; raises `NetworkError` for anything else."""
    if not isinstance(values, list | tuple):
        raise NetworkError("Give the allowed IPs as a list of CIDR ranges.")
    if len(values) > MAX_RANGES:
        raise NetworkError(f"A key may carry at most {MAX_RANGES} IP ranges.")
    networks: set[IPNetwork] = set()
    for value in values:
        if not isinstance(value, str):
            raise NetworkError("Each allowed IP must be a string such as 203.0.113.0/24.")
        text = value.strip()
        if not text or len(text) > MAX_RANGE_LENGTH or "%" in text:
            raise NetworkError(f"{text[:MAX_RANGE_LENGTH]!r} is not an IP address or CIDR range.")
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise NetworkError(
                    f"{text!r} is not an IP address or CIDR range (such as 203.0.113.0/24 "
                    "or 2001:db8::/32)."
                ) from None
            raise NetworkError(
                f"{text!r} has bits set beyond its prefix length; did you mean {loose}?"
            ) from None
        networks.add(_unmapped(network))
    ordered = sorted(networks, key=lambda n: (n.version, n.network_address, n.prefixlen))
    return [str(n) for n in ordered]


def _unmapped(network: IPNetwork) -> IPNetwork:
    """An IPv4-mapped IPv6 range (`::ffff:192.0.2.0/120`) as the IPv4 range it stands for:
    client addresses of that form are checked as IPv4, so the range must be one too."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


def parse_lines(text: str) -> list[str]:
    """A textarea's ranges: one per line or separated by commas or spaces."""
    return [part for part in text.replace(",", " ").split() if part]


@lru_cache(maxsize=4096)
def networks_of(ranges: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """The stored ranges as network objects (parsed once per process and list)."""
    return tuple(ipaddress.ip_network(r, strict=False) for r in ranges)


def address_of(ip: str | None) -> IPAddress | None:
    """`ip` as an address, an IPv4-mapped IPv6 address as its IPv4 one; None if unreadable."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def within(network: IPNetwork, networks: Iterable[IPNetwork]) -> bool:
    """Whether `network` lies wholly inside one of `networks`."""
    return any(
        network.version == outer.version and network.subnet_of(outer)  # type: ignore[arg-type]
        for outer in networks
    )


def allows(networks: Iterable[IPNetwork], ip: str | None) -> bool:
    """Whether `ip` lies in one of `networks` (an empty list allows nothing here: callers
    check for an allowlist first)."""
    address = address_of(ip)
    if address is None:
        return False
    return any(address.version == n.version and address in n for n in networks)
