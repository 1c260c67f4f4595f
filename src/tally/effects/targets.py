"""Where a webhook may be sent: only to global addresses, unless the
deployment allows private targets (``TALLY_WEBHOOK_ALLOW_PRIVATE``).

A webhook URL is chosen by whoever holds a secret key; without this rule it
would make tally a proxy into the network it runs in (SSRF): loopback
services, the cloud's metadata address, the private network. The host is
read the way the system's resolver reads it (``127.1``, ``2130706433``,
``0x7f.1``, ``0177.0.0.1`` are all 127.0.0.1; ``[::ffff:127.0.0.1]`` is
too), names are resolved, and every address is checked: one non-global
address refuses the URL. The check runs when the URL is registered and
again before each connection, whose socket then goes to an address just
checked (a name that resolved to a public address at registration and to
a private one later is refused then: DNS rebinding).

The rules are pure; resolution goes through a ``Resolver`` (the system's
``getaddrinfo`` in production, a table in tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tally.errors import Invalid

SETTING = "TALLY_WEBHOOK_ALLOW_PRIVATE"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not reachable on the public internet, or not meant to be sent to (RFC 6890
# and the IANA special-purpose registries), beside what ``ipaddress`` flags.
_V4_BLOCKED = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network" (0.0.0.0 reaches the local host)
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
    )
)
_V6_BLOCKED = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",  # protocol assignments, Teredo
        "2001:db8::/32",
        "fc00::/7",  # unique-local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
# IPv6 addresses that carry an IPv4 address the packets end up at
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")

_V4_PART = re.compile(r"^(0[xX][0-9a-fA-F]+|[0-9]+)$")


class BlockedTarget(Invalid):
    """A webhook URL that leads to a private address (a 400 at registration,
    a failed attempt at send time)."""


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> Sequence[str]:
        """The addresses ``host`` resolves to (raises ``OSError`` if none)."""
        ...


class SystemResolver:
    """The system's resolver (``getaddrinfo``, in a thread)."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class TableResolver:
    """A fixed table of names (tests): an unknown name does not resolve."""

    names: Mapping[str, Sequence[str]] = field(default_factory=dict)

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        found = self.names.get(host)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not known")
        return list(found)


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read as inet_aton reads it: one to four dot-separated parts,
    each decimal, octal (leading 0) or hex (0x), the last filling the bytes
    left (``127.1``, ``2130706433``, ``0x7f.0.0.1``, ``0177.0.0.1``);
    ``None`` when it is not a number of that form."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # a trailing dot
    if not 1 <= len(parts) <= 4 or not all(_V4_PART.match(p) for p in parts):
        return None
    numbers = []
    for part in parts:
        if part[:2].lower() == "0x":
            numbers.append(int(part[2:], 16))
        elif len(part) > 1 and part[0] == "0":
            if any(ch in "89" for ch in part):
                return None
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = 0
    for n in head:
        value = value << 8 | n
    return ipaddress.IPv4Address(value << 8 * (4 - len(head)) | last)


def parse_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, if it is one (not a name)."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.partition("%")[0])  # without a zone
        except ValueError:
            return None
    return parse_ipv4(host)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip in _V4_MAPPED or ip in _V4_COMPATIBLE or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return ipaddress.IPv4Address(int(ip) >> 80 & 0xFFFFFFFF)
    return None


def why_private(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a global unicast address (``None`` when it is)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None and ip not in (
            ipaddress.IPv6Address("::"),
            ipaddress.IPv6Address("::1"),
        ):
            reason = why_private(inner)
            return None if reason is None else f"{reason} (inside the IPv6 address {ip})"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.IPv6Network("fc00::/7"):
        return "a unique-local address"
    if ip.is_private:
        return "a private address"
    blocked = _V4_BLOCKED if isinstance(ip, ipaddress.IPv4Address) else _V6_BLOCKED
    if not ip.is_global or any(ip in net for net in blocked):
        return "a reserved, non-global address"
    return None


def _refuse(host: str, ip: IPAddress, reason: str) -> BlockedTarget:
    shown = host if host == str(ip) else f"{host} ({ip})"
    return BlockedTarget(
        f"the webhook URL's host {shown[:120]} is {reason}; tally refuses private "
        f"webhook targets unless {SETTING}=true"
    )


def is_local_name(host: str) -> bool:
    """``localhost`` and the names under it are the local host (RFC 6761)."""
    return host == "localhost" or host.endswith(".localhost")


async def addresses(
    host: str, port: int, resolver: Resolver, *, allow_private: bool
) -> list[IPAddress]:
    """The addresses to connect to for ``host``: all of them global unless
    ``allow_private``. Raises ``BlockedTarget`` (a private address, or a
    name that does not resolve)."""
    name = host.lower().rstrip(".") or host
    literal = parse_address(name)
    if literal is not None:
        found = [literal]
    else:
        if is_local_name(name) and not allow_private:
            raise BlockedTarget(
                f"the webhook URL's host {host[:120]} is the local host; tally refuses "
                f"private webhook targets unless {SETTING}=true"
            )
        try:
            resolved = await resolver.resolve(name, port)
        except OSError as err:
            raise BlockedTarget(
                f"the webhook URL's host {host[:120]} does not resolve ({err.strerror or err})"
            ) from None
        found = [a for a in (parse_address(str(r)) for r in resolved) if a is not None]
        if not found:
            raise BlockedTarget(f"the webhook URL's host {host[:120]} has no address")
    if not allow_private:
        for ip in found:
            reason = why_private(ip)
            if reason is not None:
                raise _refuse(host, ip, reason)
    return found
