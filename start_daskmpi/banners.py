"""What the user is told to type: the SSH tunnel commands and the URLs of the
dashboard and JupyterLab."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def forwards(ports: Sequence[int]) -> str:
    return " ".join(f"-L {port}:localhost:{port}" for port in ports)


def ssh_command(route: Sequence[str], ports: Sequence[int]) -> str:
    """One ssh to the node through the login hops as jump hosts: the ports are
    forwarded from this machine straight to the node's loopback, and nothing
    listens on the login nodes; a port already taken here is an error, not a
    warning after which the browser would talk to whoever holds it."""
    jumps = f"-J {','.join(route[:-1])} " if len(route) > 1 else ""
    return f"ssh -o ExitOnForwardFailure=yes {jumps}{forwards(ports)} {route[-1]}"


def nested_ssh_command(route: Sequence[str], ports: Sequence[int]) -> str:
    """The same as nested ssh, for a client without -J (before OpenSSH 7.3):
    each inner ssh listens on its login node's loopback."""
    return " ".join(f"ssh -t -o ExitOnForwardFailure=yes {forwards(ports)} {hop}"
                    for hop in route)


def tunnel_lines(what: str, route: Sequence[str], ports: Sequence[int]) -> list[str]:
    lines = [
        f"To connect to {what}, execute the following command in a shell on your local machine:",
        f"    {ssh_command(route, ports)}",
    ]
    if len(route) > 1:
        lines.append(
            f"    (with an ssh older than OpenSSH 7.3, which lacks -J: "
            f"{nested_ssh_command(route, ports)}; but that listens on each login node's "
            "127.0.0.1, where the other users of that node reach it too)"
        )
    return lines


ROUTE_HINT = (
    "No login route is known for this machine, so the tunnel below goes straight to "
    "the node: if your computer reaches it through a login node, give --ssh-hops you@LOGIN"
)


def dashboard_lines(port: int, inside_lab: tuple[int, int] | None = None) -> list[str]:
    """``inside_lab``: JupyterLab's port, and the dashboard's as its proxy sees it."""
    inside = (
        f"      (also inside JupyterLab: "
        f"http://localhost:{inside_lab[0]}/proxy/{inside_lab[1]}/status)"
        if inside_lab is not None else ""
    )
    return ["To open the Dask dashboard, go to:", f"    http://localhost:{port}/status{inside}"]


def connection_banner(dashboard_port: int | None, route: Sequence[str]) -> str:
    """With a script: how to reach the dashboard while it runs."""
    if dashboard_port is None:
        return "The Dask dashboard is off (--no-dashboard, or bokeh is not installed)."
    return "\n".join(
        tunnel_lines("the Dask dashboard", route, [dashboard_port])
        + dashboard_lines(dashboard_port)
    )


@dataclass(frozen=True)
class DashboardPlace:
    """Where the dashboard is, for JupyterLab's banner."""

    route: Sequence[str]  # the SSH route to the scheduler's node
    port: int  # there
    proxied_port: int  # as JupyterLab's proxy sees it, on JupyterLab's node


def jupyter_banner(
    lab_route: Sequence[str], jupyter_port: int, token: str, log: Path,
    dashboard: DashboardPlace | None,
) -> str:
    """With no script: how to reach JupyterLab, and the dashboard beside it.
    Each tunnel ends where its server runs: one tunnel for both where they
    share a node, else one each."""
    if dashboard is None:
        lines = tunnel_lines("JupyterLab", lab_route, [jupyter_port])
    elif list(dashboard.route) == list(lab_route):
        lines = tunnel_lines("JupyterLab and the Dask dashboard", lab_route,
                             [jupyter_port, dashboard.port])
    else:
        lines = [*tunnel_lines("JupyterLab", lab_route, [jupyter_port]), "",
                 *tunnel_lines("the Dask dashboard", dashboard.route, [dashboard.port])]
    lines += [
        "",
        f"To open JupyterLab, go to (see log file {log}):",
        f"    http://localhost:{jupyter_port}/lab?token={token}",
    ]
    if dashboard is not None:
        inside_lab = (jupyter_port, dashboard.proxied_port)
        lines += ["", *dashboard_lines(dashboard.port, inside_lab)]
    return "\n".join(lines)
