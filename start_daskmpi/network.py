"""Which address the servers listen on: the interface the user named, loopback
for a local cluster, every address otherwise."""
from __future__ import annotations

import socket

import psutil

from .errors import LaunchError


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


def listen_host(interface: str | None, local: bool) -> str:
    """The host the scheduler binds: the interface's address, else loopback for
    a local cluster (as LocalCluster does) and all addresses under MPI."""
    if interface:
        return interface_address(interface)
    return "127.0.0.1" if local else ""
