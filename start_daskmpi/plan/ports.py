"""Ports and where a server listens: the scheduler's, the dashboard's and
JupyterLab's ports, free on both loopbacks, [HOST]:PORT as the user writes
it, and an Endpoint (a private Unix socket, or a TCP host and port)."""
from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

from start_daskmpi.errors import LaunchError

DEFAULT_SCHEDULER_PORT = 8786
DEFAULT_DASHBOARD_PORT = 8787  # the dashboard's port on your machine, where a socket serves it
DEFAULT_JUPYTER_PORT = 7787
PORT_SEARCH_SPAN = 100


def bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Tornado binds with SO_REUSEADDR, so a port in TIME_WAIT is free to it too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            # No IPv6 on this node: no one can hold the port there either.
            return family == socket.AF_INET6 and e.errno == errno.EADDRNOTAVAIL
    return True


def port_is_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound on ``host``; on loopback, on both loopbacks:
    a client that dials ``localhost`` may try ::1 first, and another user
    holding the port there would answer it."""
    loopback = ipaddress.ip_address(host).is_loopback if is_ip(host) else False
    hosts = [host, *(["::1", "127.0.0.1"] if loopback else [])]
    return all(bindable(each, port) for each in dict.fromkeys(hosts))


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def choose_port(
    requested: int | None,
    default: int,
    is_free: Callable[[int], bool],
    option: str,
) -> int:
    """An explicit port must be free; a default one that is taken (another user
    on a shared node) gives way to the next free port above it, else any."""
    if requested is not None:
        if requested and not is_free(requested):
            raise LaunchError(port_taken(requested, option))
        return requested
    for port in range(default, min(default + PORT_SEARCH_SPAN, 65536)):
        if is_free(port):
            return port
    return 0


def port_taken(port: int, option: str) -> str:
    return (
        f"port {port} of {option} is already in use on this node: "
        f"choose another, or leave {option} out to take a free one"
    )


def parse_host_port(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'HOST:PORT', ':PORT' (every interface), '[IPv6]:PORT', or a bare 'PORT'
    (on ``default_host``, as the dask CLI's bare port is on its default host)."""
    host, colon, port = text.rpartition(":")
    if not colon:
        host = default_host
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets: [{host}]:{port}")
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected [HOST]:PORT with a port 0-65535, got {text!r}")
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def loopback_for(host: str) -> str:
    """Where to reach a server bound to ``host`` from its own node."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def dashboard_address(requested: str, is_free: Callable[[str, int], bool]) -> str:
    """--dashboard-address, checked free (a port of 0: any)."""
    host, port = parse_host_port(requested)
    return join_host_port(host, choose_port(port, port, lambda p: is_free(host, p),
                                            "--dashboard-address"))


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens on its node: a Unix socket (in a private folder,
    so that only the user can connect), or a TCP host and port."""

    socket: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None

    @property
    def target(self) -> str:
        """As ``ssh -L PORT:TARGET`` names it."""
        return self.socket or join_host_port(self.host, self.port or 0)

    @property
    def local_port(self) -> int:
        """The port that stands for it on the user's machine, at the tunnel's
        near end, and in JupyterLab's proxy: its own, or the default."""
        return self.port or DEFAULT_DASHBOARD_PORT
