"""Which webhook hosts tally refuses (SSRF): every spelling of a private
address, and names that resolve to one, through a table resolver (no
traffic, no DNS)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from tally.effects.endpoints import check_url
from tally.effects.targets import (
    SETTING,
    BlockedTarget,
    TableResolver,
    addresses,
    parse_ipv4,
)
from tally.errors import Invalid

NAMES = TableResolver(
    {
        "public.example": ["93.184.216.34"],
        "public6.example": ["2606:2800:220:1:248:1893:25c8:1946"],
        "internal.example": ["10.1.2.3"],
        "metadata.example": ["169.254.169.254"],
        "mixed.example": ["93.184.216.34", "192.168.1.9"],
        "six.example": ["fd00::5"],
    }
)

# host as urlsplit().hostname gives it -> the address it means
PRIVATE = [
    ("127.0.0.1", "127.0.0.1"),
    ("localhost", None),
    ("api.localhost", None),
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("0177.0.0.01", "127.0.0.1"),
    ("127.0.0.1.", "127.0.0.1"),
    ("0.0.0.0", "0.0.0.0"),
    ("0", "0.0.0.0"),
    ("::1", "::1"),
    ("::", "::"),
    ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
    ("::ffff:7f00:1", "::ffff:127.0.0.1"),
    ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
    ("64:ff9b::a00:1", "64:ff9b::a00:1"),
    ("2002:a9fe:a9fe::", "2002:a9fe:a9fe::"),
    ("169.254.169.254", "169.254.169.254"),
    ("2852039166", "169.254.169.254"),
    ("10.0.0.1", "10.0.0.1"),
    ("10.255.255.255", "10.255.255.255"),
    ("172.16.0.1", "172.16.0.1"),
    ("172.31.255.1", "172.31.255.1"),
    ("192.168.0.1", "192.168.0.1"),
    ("100.64.0.1", "100.64.0.1"),
    ("fd00::1", "fd00::1"),
    ("fc00::1", "fc00::1"),
    ("fe80::1", "fe80::1"),
    ("fe80::1%eth0", "fe80::1"),
    ("224.0.0.1", "224.0.0.1"),
    ("239.255.255.250", "239.255.255.250"),
    ("ff02::1", "ff02::1"),
    ("255.255.255.255", "255.255.255.255"),
    ("240.0.0.1", "240.0.0.1"),
    ("internal.example", "10.1.2.3"),
    ("metadata.example", "169.254.169.254"),
    ("mixed.example", "192.168.1.9"),
    ("six.example", "fd00::5"),
]
PUBLIC = [
    ("93.184.216.34", "93.184.216.34"),
    ("1.1.1.1", "1.1.1.1"),
    ("16843009", "1.1.1.1"),
    ("172.32.0.1", "172.32.0.1"),
    ("2606:4700::1111", "2606:4700::1111"),
    ("::ffff:8.8.8.8", "::ffff:8.8.8.8"),
    ("public.example", "93.184.216.34"),
    ("PUBLIC.example.", "93.184.216.34"),
    ("public6.example", "2606:2800:220:1:248:1893:25c8:1946"),
]


def check(host: str, *, allow_private: bool = False) -> list[str]:
    found = asyncio.run(addresses(host, 443, NAMES, allow_private=allow_private))
    return [str(a) for a in found]


@pytest.mark.parametrize(("host", "address"), PRIVATE)
def test_every_spelling_of_a_private_target_is_refused_naming_the_setting(
    host: str, address: str | None
) -> None:
    with pytest.raises(BlockedTarget) as refused:
        check(host)
    assert SETTING in refused.value.message
    if address is not None:
        assert str(ipaddress.ip_address(address)) in refused.value.message


@pytest.mark.parametrize(("host", "address"), PUBLIC)
def test_global_addresses_and_names_are_allowed(host: str, address: str) -> None:
    assert check(host) == [str(ipaddress.ip_address(address))]


@pytest.mark.parametrize(("host", "address"), [p for p in PRIVATE if p[1] is not None])
def test_the_setting_allows_private_targets(host: str, address: str) -> None:
    assert len(check(host, allow_private=True)) >= 1


def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(BlockedTarget, match="does not resolve"):
        check("nowhere.example")


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("1.2.3.4", "1.2.3.4"),
        ("10.0x10.0400", "10.16.1.0"),
        ("example.com", None),
        ("1.2.3.4.5", None),
        ("256.0.0.1", None),
        ("4294967296", None),
        ("08.0.0.1", None),  # not octal: a name, for the resolver to refuse
        ("cafe.be", None),
    ],
)
def test_ipv4_is_read_as_inet_aton_reads_it(text: str, address: str | None) -> None:
    parsed = parse_ipv4(text)
    assert (None if parsed is None else str(parsed)) == address


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://example.com:99999/x", "http://example.com:x/"]
)
def test_malformed_urls_are_invalid_not_errors(url: str) -> None:
    with pytest.raises(Invalid):
        check_url(url)
