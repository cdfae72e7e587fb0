"""Which addresses the workers may call: the guard that keeps services, health checks and notifications off the
cloud metadata address and its kin.

Refused always: link-local addresses (169.254.0.0/16, where clouds answer metadata and credentials, and
fe80::/10), the unspecified ones (0.0.0.0, ::) and multicast (224.0.0.0/4, ff00::/8), in IPv4-mapped IPv6
form too; refused besides, the networks of ``MACHINERY_DENY_NETWORKS``. Loopback and private ranges stay
allowed: services live there.

A URL whose host is a literal address is checked when it is registered; a name is checked when it is called,
once resolved, since what it resolves to is known only then (and may change).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

from machinery.engine.errors import InvalidConfig, MachineryError

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
Resolver = Callable[[str], Iterable[str]]
"""A host name -> the addresses it resolves to, as text."""


def refusal(address: IPAddress, denied: Iterable[Network] = ()) -> str | None:
    """Why the workers may not call ``address``, or None if they may."""
    forms: list[IPAddress] = [address]
    shown = str(address)
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        forms.append(address.ipv4_mapped)
        shown += f" ({address.ipv4_mapped})"
    for form in forms:
        if form.is_link_local:
            return f"{shown} is link-local (where clouds serve instance metadata)"
        if form.is_unspecified:
            return f"{shown} is the unspecified address"
        if form.is_multicast:
            return f"{shown} is multicast"
    for network in denied:
        if any(form in network for form in forms):
            return f"{shown} is in {network}, denied by MACHINERY_DENY_NETWORKS"
    return None


def parse_networks(text: str) -> tuple[Network, ...]:
    """The networks of a comma-separated list of CIDRs, as ``MACHINERY_DENY_NETWORKS`` holds them."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError as e:
            raise InvalidConfig(f"MACHINERY_DENY_NETWORKS: {item!r} is not a network: {e}") from None
    return tuple(networks)


def resolve(host: str) -> list[str]:
    """The addresses ``host`` resolves to, by the system's resolver."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]


class RefusedAddress(MachineryError):
    """A host the workers may not call; the message says which address and why."""


@dataclass(frozen=True)
class AddressGuard:
    """The rule of :func:`refusal` with the networks denied besides, and the resolver names go through."""

    denied: tuple[Network, ...] = ()
    resolver: Resolver = field(default=resolve, compare=False)

    def check_url(self, url: str) -> str | None:
        """Why ``url`` may not be registered, if its host is a literal address the workers may not call."""
        host = urlsplit(url).hostname or ""
        try:
            address = ip_address(host)
        except ValueError:
            return None  # a name: checked once resolved, when called
        return refusal(address, self.denied)

    def address_of(self, host: str) -> IPAddress:
        """The address to connect to for ``host`` (a name or a literal address, IPv6 in brackets or not).

        Raises RefusedAddress if it, or any address the name resolves to, may not be called, and OSError if the
        name does not resolve.
        """
        try:
            addresses = [ip_address(host.strip("[]"))]
            resolved = ""
        except ValueError:
            addresses = [ip_address(found) for found in self.resolver(host)]
            resolved = f"{host} resolves to a refused address: "
        if not addresses:
            raise OSError(f"{host} resolves to no address")
        for address in addresses:
            reason = refusal(address, self.denied)
            if reason:
                raise RefusedAddress(f"{resolved}{reason}; not connected to")
        return addresses[0]


DEFAULT_GUARD = AddressGuard()
"""The guard refusing only what is always refused, resolving names with the system's resolver."""
