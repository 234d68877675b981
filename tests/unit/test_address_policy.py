"""The HTTP(S) media guard's decisions, without a network: IPv6 addresses that lead to an IPv4 address (NAT64,
6to4, Teredo) are judged by it, and URLs with credentials are recognised by both URL parsers. The full address
table, and the same refusals through a real HTTP server, are in tests/integration/test_http_media.py."""

import ipaddress

import pytest

from internvl_batch.http_media import address_refusal, has_userinfo

INTERNAL = "a private, loopback or otherwise internal address (fetch.allow_private_networks is false)"
METADATA = "a link-local or cloud metadata address"


def teredo(server: str, client: str, port: int = 40000) -> str:
    """A Teredo address (RFC 4380): 2001:0::/32, the server's IPv4, flags, then the client's port and IPv4
    with every bit inverted."""
    value = (0x20010000 << 96) | (int(ipaddress.IPv4Address(server)) << 64) | (0x8000 << 48)
    value |= ((~port & 0xFFFF) << 32) | (~int(ipaddress.IPv4Address(client)) & 0xFFFFFFFF)
    return str(ipaddress.IPv6Address(value))


def nat64(ipv4: str) -> str:
    return str(ipaddress.IPv6Address((0x0064FF9B << 96) | int(ipaddress.IPv4Address(ipv4))))


def sixtofour(ipv4: str) -> str:
    return str(ipaddress.IPv6Address((0x2002 << 112) | (int(ipaddress.IPv4Address(ipv4)) << 80) | 1))


@pytest.mark.parametrize(
    "address, strict, permissive",
    [
        (nat64("8.8.8.8"), None, None),
        (nat64("169.254.169.254"), f"a NAT64 address of 169.254.169.254, {METADATA}", "same"),
        (nat64("100.100.100.200"), f"a NAT64 address of 100.100.100.200, {METADATA}", "same"),
        (nat64("10.0.0.1"), f"a NAT64 address of 10.0.0.1, {INTERNAL}", None),
        (nat64("224.0.0.1"), "a NAT64 address of 224.0.0.1, a multicast or reserved address", "same"),
        (sixtofour("8.8.8.8"), None, None),
        (sixtofour("127.0.0.1"), f"a 6to4 address of 127.0.0.1, {INTERNAL}", None),
        (sixtofour("169.254.169.254"), f"a 6to4 address of 169.254.169.254, {METADATA}", "same"),
        (sixtofour("192.168.1.1"), f"a 6to4 address of 192.168.1.1, {INTERNAL}", None),
        (teredo("65.54.227.120", "8.8.8.8"), None, None),
        (teredo("65.54.227.120", "127.0.0.1"), f"a Teredo address with client 127.0.0.1, {INTERNAL}", None),
        (
            teredo("65.54.227.120", "169.254.169.254"),
            f"a Teredo address with client 169.254.169.254, {METADATA}",
            "same",
        ),
        (teredo("169.254.169.254", "8.8.8.8"), f"a Teredo address with server 169.254.169.254, {METADATA}", "same"),
        (teredo("10.0.0.1", "8.8.8.8"), f"a Teredo address with server 10.0.0.1, {INTERNAL}", None),
    ],
)
def test_transition_addresses_are_judged_by_their_ipv4(address, strict, permissive):
    assert address_refusal(address, allow_private=False) == strict
    assert address_refusal(address, allow_private=True) == (strict if permissive == "same" else permissive)


def test_the_helpers_build_what_ipaddress_decodes():
    assert ipaddress.IPv6Address(teredo("65.54.227.120", "192.0.2.45")).teredo == (
        ipaddress.IPv4Address("65.54.227.120"),
        ipaddress.IPv4Address("192.0.2.45"),
    )
    assert ipaddress.IPv6Address(sixtofour("192.0.2.1")).sixtofour == ipaddress.IPv4Address("192.0.2.1")
    assert nat64("192.0.2.33") == "64:ff9b::c000:221"  # RFC 6052's example


def test_only_the_well_known_nat64_prefix_is_translated():
    # 64:ff9b:1::/48 (local use, RFC 8215) may embed the IPv4 address anywhere: it stays refused (reserved)
    assert address_refusal("64:ff9b:1::808:808", allow_private=True) == "a multicast or reserved address"


def test_ipv4_mapped_addresses_keep_their_plain_messages():
    assert address_refusal("::ffff:169.254.169.254", allow_private=True) == METADATA
    assert address_refusal("::ffff:127.0.0.1", allow_private=False) == INTERNAL
    assert address_refusal("::ffff:8.8.8.8", allow_private=False) is None


@pytest.mark.parametrize(
    "url, userinfo",
    [
        ("https://user:pass@media.example/x.jpg", True),
        ("https://token@media.example/x.jpg", True),
        ("https://:@media.example/x.jpg", True),
        ("http://user:pass@[::1]:8080/x.jpg", True),
        ("http://media.example\\@other.example/", True),  # the parsers may disagree on a backslash: refused
        ("https://media.example/x.jpg", False),
        ("https://media.example:443/x.jpg?next=a@b", False),
        ("https://media.example/a@b.jpg", False),
        ("https://media.example/x.jpg#frag@ment", False),
        ("http://[::1/x.jpg", False),  # unparseable: the request fails on its own
    ],
)
def test_userinfo_is_recognised(url, userinfo):
    assert has_userinfo(url) is userinfo
