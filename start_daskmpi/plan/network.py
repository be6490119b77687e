"""Which address the servers listen on and advertise, never every address:
the interface the user named; else, when the job spans nodes, a network every
node has an address in (the fast fabric first, never loopback); else loopback."""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from start_daskmpi.errors import LaunchError

FABRICS = ("hsn", "ib")  # Slingshot and InfiniBand: chosen before Ethernet


@dataclass(frozen=True)
class Address:
    """One IPv4 address of a node."""

    interface: str
    address: str
    prefixlen: int

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"{self.address}/{self.prefixlen}", strict=False)

    @property
    def is_loopback(self) -> bool:
        return ipaddress.ip_address(self.address).is_loopback

    def __str__(self) -> str:
        return f"{self.interface} {self.address}/{self.prefixlen}"


def node_addresses() -> tuple[Address, ...]:
    return tuple(
        Address(name, a.address, ipaddress.ip_network(f"0.0.0.0/{a.netmask}").prefixlen)
        for name, addresses in psutil.net_if_addrs().items()
        for a in addresses
        if a.family == socket.AF_INET and a.netmask
    )


def shared_network(nodes: Sequence[Sequence[Address]]) -> ipaddress.IPv4Network | None:
    """A network of the first node's that holds an address of every other node:
    the fast fabric first, never loopback."""
    mine = [a for a in nodes[0] if not a.is_loopback]
    for candidate in sorted(mine, key=lambda a: not a.interface.startswith(FABRICS)):
        if all(
            any(ipaddress.ip_address(a.address) in candidate.network for a in other)
            for other in nodes[1:]
        ):
            return candidate.network
    return None


def interfaces_for(
    requested: str | None, hosts: Sequence[str], nodes: Sequence[Sequence[Address]]
) -> tuple[list[str | None], str | None]:
    """The interface each node's servers use, and a line saying how it was
    chosen (None: as asked, or one node, whose servers keep to its loopback:
    no other host needs them, and none can reach them)."""
    if len(nodes) == 1:
        loopback = next((a.interface for a in nodes[0] if a.is_loopback), None)
        return [requested or loopback], None
    if requested:
        named = [a for a in nodes[0] if a.interface == requested]
        if named and all(a.is_loopback for a in named):
            raise LaunchError(
                f"--interface {requested} is loopback, which the job's other "
                f"{len(nodes) - 1} node(s) cannot reach: name a network every node shares, "
                "or leave --interface out to have one chosen"
            )
        return [requested] * len(nodes), None
    network = shared_network(nodes)
    if network is None:
        have = "; ".join(
            f"{host} has {', '.join(str(a) for a in addresses if not a.is_loopback) or 'none'}"
            for host, addresses in zip(hosts, nodes, strict=True)
        )
        raise LaunchError(f"the job's nodes share no network ({have}): give --interface NAME")
    names = [
        next(a.interface for a in addresses if ipaddress.ip_address(a.address) in network)
        for addresses in nodes
    ]
    note = (
        f"Network: {network} ({', '.join(dict.fromkeys(names))}), which every node shares "
        "(--interface chooses another)"
    )
    return names, note


def check_interface(interface: str | None) -> None:
    if interface and interface not in psutil.net_if_addrs():
        known = ", ".join(sorted(psutil.net_if_addrs()))
        raise LaunchError(
            f"no network interface {interface!r} on {socket.gethostname()} (it has: {known})"
        )


def interface_address(interface: str) -> str:
    """The interface's IPv4 address, as Dask's ``interface=`` option takes it."""
    check_interface(interface)
    for address in psutil.net_if_addrs()[interface]:
        if address.family == socket.AF_INET:
            return address.address
    raise LaunchError(f"network interface {interface!r} has no IPv4 address: choose another")


def listen_host(interface: str | None) -> str:
    """The host the scheduler binds: the interface's address, else loopback."""
    return interface_address(interface) if interface else "127.0.0.1"
