"""The address guard: which addresses the workers may call, by the rule alone and once a name is resolved."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from machinery.addresses import AddressGuard, RefusedAddress, parse_networks, refusal
from machinery.engine.errors import InvalidConfig

DENIED = (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:0.0.0.0", "unspecified"),
        ("::ffff:224.0.0.1", "multicast"),
        ("127.0.0.1", None),
        ("::1", None),
        ("10.1.2.3", None),
        ("172.16.0.1", None),
        ("192.168.1.1", None),
        ("fd12::1", None),
        ("::ffff:127.0.0.1", None),
        ("93.184.216.34", None),
        ("2606:2800:220:1::1", None),
    ],
)
def test_link_local_unspecified_and_multicast_addresses_are_refused_loopback_and_private_are_not(
    address: str, why: str | None
) -> None:
    reason = refusal(ip_address(address))
    if why is None:
        assert reason is None
    else:
        assert reason is not None and str(ip_address(address)) in reason and why in reason
        assert address.removeprefix("::ffff:") in reason


@pytest.mark.parametrize(
    ("address", "refused"),
    [("10.1.2.3", True), ("::ffff:10.1.2.3", True), ("fd12::1", True), ("11.0.0.1", False), ("fe12::1", False)],
)
def test_denied_networks_are_refused_in_mapped_form_too(address: str, refused: bool) -> None:
    reason = refusal(ip_address(address), DENIED)
    assert reason is None if not refused else "denied by MACHINERY_DENY_NETWORKS" in (reason or "")


def test_networks_are_read_from_a_comma_separated_list() -> None:
    assert parse_networks(" 10.0.0.0/8, fd00::/8,,192.168.1.7/24 ") == (*DENIED, ip_network("192.168.1.0/24"))
    assert parse_networks("") == ()
    with pytest.raises(InvalidConfig, match="MACHINERY_DENY_NETWORKS: '10.0.0.0/33'"):
        parse_networks("10.0.0.0/33")


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://169.254.169.254/latest/meta-data", True),
        ("http://[fe80::1]:8080/", True),
        ("https://[::ffff:169.254.169.254]/", True),
        ("http://0.0.0.0:5000/event", True),
        ("http://10.0.0.5/event", True),
        ("http://127.0.0.1:5000/event", False),
        ("http://metadata.example/", False),
    ],
)
def test_a_url_is_refused_at_registration_only_by_a_literal_address(url: str, refused: bool) -> None:
    assert (AddressGuard(DENIED[:1]).check_url(url) is not None) is refused


def test_a_name_is_refused_when_it_resolves_to_a_refused_address_saying_which_and_why() -> None:
    guard = AddressGuard(resolver={"metadata.example": ["169.254.169.254"]}.__getitem__)
    with pytest.raises(RefusedAddress) as raised:
        guard.address_of("metadata.example")
    assert str(raised.value) == (
        "metadata.example resolves to a refused address: 169.254.169.254 is link-local"
        " (where clouds serve instance metadata); not connected to"
    )


def test_a_name_resolving_to_any_refused_address_is_refused_and_one_resolving_to_allowed_ones_gives_the_first() -> None:
    names = {"mixed.example": ["127.0.0.1", "10.0.0.1"], "fine.example": ["::1", "127.0.0.1"]}
    guard = AddressGuard(DENIED, resolver=names.__getitem__)
    with pytest.raises(RefusedAddress, match="10.0.0.1 is in 10.0.0.0/8"):
        guard.address_of("mixed.example")
    assert guard.address_of("fine.example") == ip_address("::1")


def test_a_literal_address_is_not_resolved() -> None:
    guard = AddressGuard(resolver=lambda host: pytest.fail(f"resolved {host}"))
    assert guard.address_of("[::1]") == ip_address("::1")
    with pytest.raises(RefusedAddress, match=r"^169\.254\.169\.254 is link-local"):
        guard.address_of("169.254.169.254")
