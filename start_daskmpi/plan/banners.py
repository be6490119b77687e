"""What the user is told to type: the SSH tunnel commands and the URLs of the
dashboard and JupyterLab.

Each forward names the exact place its server listens on the node: the
dashboard's private socket, or 127.0.0.1 and its port (never ``localhost``,
which sshd may try as ::1 first, where another user could listen); and its
near end is 127.0.0.1 on the user's machine, which the printed URLs name.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from start_daskmpi.plan.ports import Endpoint

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Forward:
    """One ``-L``: ``port`` on the user's machine to ``target`` on the node (a
    socket's path, or HOST:PORT)."""

    port: int
    target: str

    @classmethod
    def to_port(cls, port: int) -> Forward:
        return cls(port, f"{LOOPBACK}:{port}")

    def option(self, target: str | None = None) -> str:
        return f"-L {LOOPBACK}:{self.port}:{target or self.target}"


def ssh_command(route: Sequence[str], forwards: Sequence[Forward]) -> str:
    """One ssh to the node through the login hops as jump hosts: the ports are
    forwarded from this machine straight to the node, and nothing listens on
    the login nodes; a port already taken here is an error, not a warning
    after which the browser would talk to whoever holds it."""
    jumps = f"-J {','.join(route[:-1])} " if len(route) > 1 else ""
    options = " ".join(forward.option() for forward in forwards)
    return f"ssh -o ExitOnForwardFailure=yes {jumps}{options} {route[-1]}"


def nested_ssh_command(route: Sequence[str], forwards: Sequence[Forward]) -> str:
    """The same as nested ssh, for a client without -J (before OpenSSH 7.3):
    each inner ssh listens on its login node's loopback, the last one
    forwards to the node's own targets."""
    def hop(index: int, host: str) -> str:
        last = index == len(route) - 1
        options = " ".join(f.option(None if last else f"{LOOPBACK}:{f.port}") for f in forwards)
        return f"ssh -t -o ExitOnForwardFailure=yes {options} {host}"

    return " ".join(hop(index, host) for index, host in enumerate(route))


def tunnel_lines(what: str, route: Sequence[str], forwards: Sequence[Forward]) -> list[str]:
    lines = [
        f"To connect to {what}, execute the following command in a shell on your local machine:",
        f"    {ssh_command(route, forwards)}",
    ]
    if len(route) > 1:
        lines.append(
            f"    (with an ssh older than OpenSSH 7.3, which lacks -J: "
            f"{nested_ssh_command(route, forwards)}; but that listens on each login node's "
            "127.0.0.1, where the other users of that node reach it too)"
        )
    return lines


ROUTE_HINT = (
    "No login route is known for this machine, so the tunnel below goes straight to "
    "the node: if your computer reaches it through a login node, give --ssh-hops you@LOGIN"
)


def dashboard_forward(dashboard: Endpoint) -> Forward:
    return Forward(dashboard.local_port, dashboard.target)


def dashboard_lines(port: int, inside_lab: tuple[int, int] | None = None) -> list[str]:
    """``inside_lab``: JupyterLab's port, and the dashboard's as its proxy names it."""
    inside = (
        f"      (also inside JupyterLab: "
        f"http://{LOOPBACK}:{inside_lab[0]}/proxy/{inside_lab[1]}/status)"
        if inside_lab is not None else ""
    )
    return ["To open the Dask dashboard, go to:", f"    http://{LOOPBACK}:{port}/status{inside}"]


def dashboard_link(dashboard: Endpoint) -> str:
    """The dashboard's URL on the user's machine, through the printed tunnel."""
    return f"http://{LOOPBACK}:{dashboard.local_port}/status"


def connection_banner(dashboard: Endpoint | None, route: Sequence[str]) -> str:
    """With a script: how to reach the dashboard while it runs."""
    if dashboard is None:
        return "The Dask dashboard is off (--no-dashboard, or bokeh is not installed)."
    return "\n".join(
        tunnel_lines("the Dask dashboard", route, [dashboard_forward(dashboard)])
        + dashboard_lines(dashboard.local_port)
    )


@dataclass(frozen=True)
class DashboardPlace:
    """Where the dashboard is, for JupyterLab's banner."""

    route: Sequence[str]  # the SSH route to the scheduler's node
    endpoint: Endpoint  # there
    proxied_port: int  # as JupyterLab's proxy names it


def jupyter_banner(
    lab_route: Sequence[str], jupyter_port: int, token: str, log: Path,
    dashboard: DashboardPlace | None,
) -> str:
    """With no script: how to reach JupyterLab, and the dashboard beside it.
    Each tunnel ends where its server runs: one tunnel for both where they
    share a node, else one each."""
    lab = Forward.to_port(jupyter_port)
    if dashboard is None:
        lines = tunnel_lines("JupyterLab", lab_route, [lab])
    elif list(dashboard.route) == list(lab_route):
        lines = tunnel_lines("JupyterLab and the Dask dashboard", lab_route,
                             [lab, dashboard_forward(dashboard.endpoint)])
    else:
        lines = [*tunnel_lines("JupyterLab", lab_route, [lab]), "",
                 *tunnel_lines("the Dask dashboard", dashboard.route,
                               [dashboard_forward(dashboard.endpoint)])]
    lines += [
        "",
        f"To open JupyterLab, go to (see log file {log}):",
        f"    http://{LOOPBACK}:{jupyter_port}/lab?token={token}",
    ]
    if dashboard is not None:
        inside_lab = (jupyter_port, dashboard.proxied_port)
        lines += ["", *dashboard_lines(dashboard.endpoint.local_port, inside_lab)]
    return "\n".join(lines)
