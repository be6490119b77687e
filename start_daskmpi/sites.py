"""Machines we know (ThetaGPU, Polaris, Aurora, Perlmutter, Frontier): how a
laptop reaches their compute nodes over SSH, and their node-local scratch."""
from __future__ import annotations

import functools
import re
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    """``{user}`` in a hop or a scratch folder is the user's name."""

    name: str
    pattern: str  # matched against the node's fully qualified name
    hops: tuple[str, ...]  # login hops before the compute node
    scratch: tuple[str, ...] = ()


SITES = (
    Site("ThetaGPU", r"^thetagpu\d+", ("{user}@theta.alcf.anl.gov", "thetagpusn1"),
         ("/raid/scratch",)),
    Site("Polaris", r"\.polaris\.alcf\.anl\.gov$|^x3\d{3}c\d+s\d+b\d+n\d+",
         ("{user}@polaris.alcf.anl.gov",), ("/local/scratch",)),
    Site("Aurora", r"\.aurora\.alcf\.anl\.gov$|^x4\d{3}c\d+s\d+b\d+n\d+",
         ("{user}@aurora.alcf.anl.gov",), ("/tmp",)),
    Site("Perlmutter", r"\.perlmutter\.nersc\.gov$|^nid\d{6}",
         ("{user}@perlmutter.nersc.gov",), ("/tmp",)),
    Site("Frontier", r"^frontier\d{5}", ("{user}@frontier.olcf.ornl.gov",),
         ("/mnt/bb/{user}", "/tmp")),
)


def site_of(host: str, fqdn: str) -> Site | None:
    return next(
        (site for site in SITES if re.search(site.pattern, fqdn) or re.search(site.pattern, host)),
        None,
    )


@functools.cache
def this_site() -> Site | None:
    # getfqdn() may ask DNS: once per process, not once per worker option.
    return site_of(socket.gethostname(), socket.getfqdn())


def default_ssh_hops(host: str, fqdn: str, user: str) -> list[str]:
    """The SSH route from a laptop to ``host``: the site's login hops where we
    know the site, else straight to this node."""
    site = site_of(host, fqdn)
    if site is None:
        # A name that resolves to loopback names no machine a laptop can reach.
        reachable = host if fqdn.split(".")[0] in ("localhost", "") else fqdn
        return [f"{user}@{reachable}"]
    return [hop.format(user=user) for hop in site.hops] + [host]


def ssh_route(hops_option: str | None, host: str, fqdn: str, user: str) -> list[str]:
    """--ssh-hops' hops then the node, else the default route."""
    if hops_option:
        return [hop.strip() for hop in hops_option.split(",") if hop.strip()] + [host]
    return default_ssh_hops(host, fqdn, user)
