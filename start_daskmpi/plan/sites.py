"""Machines we know (ThetaGPU, Polaris, Aurora, Perlmutter, Frontier): how a
laptop reaches their compute nodes over SSH, and their node-local scratch."""
from __future__ import annotations

import functools
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    """``{user}`` in a hop or a scratch folder is the user's name.

    A site is known by its domain in the node's fully qualified name.  Where
    the node's name is short (no domain), its pattern counts only with the
    site's own variable: HPE Cray EX machines share their node names (nidNNNNNN
    on Perlmutter, LUMI and Alps alike; xNNNNcNsNbNnN)."""

    name: str
    domain: str | None  # matched against the end of the fully qualified name
    node_names: str  # matched against a short name...
    marker: tuple[str, str] | None  # ...where this variable matches this, if any
    hops: tuple[str, ...]  # login hops before the compute node
    scratch: tuple[str, ...] = ()

    def is_here(self, host: str, fqdn: str, environ: Mapping[str, str]) -> bool:
        if self.domain and re.search(rf"\.{self.domain}$", fqdn):
            return True
        if not re.search(self.node_names, host):
            return False
        if self.marker is None:
            return True
        variable, value = self.marker
        return re.search(value, environ.get(variable, "")) is not None


SITES = (
    Site("ThetaGPU", None, r"^thetagpu\d+$", None,  # its domain is all of ALCF's
         ("{user}@theta.alcf.anl.gov", "thetagpusn1"), ("/raid/scratch",)),
    Site("Polaris", r"polaris\.alcf\.anl\.gov", r"^x3\d{3}c\d+s\d+b\d+n\d+$",
         ("PBS_O_HOST", "polaris"), ("{user}@polaris.alcf.anl.gov",), ("/local/scratch",)),
    Site("Aurora", r"aurora\.alcf\.anl\.gov", r"^x4\d{3}c\d+s\d+b\d+n\d+$",
         ("PBS_O_HOST", "aurora"), ("{user}@aurora.alcf.anl.gov",), ("/tmp",)),
    Site("Perlmutter", r"perlmutter\.nersc\.gov", r"^nid\d{6}$", ("NERSC_HOST", "^perlmutter$"),
         ("{user}@perlmutter.nersc.gov",), ("/tmp",)),
    Site("Frontier", r"frontier\.olcf\.ornl\.gov", r"^frontier\d{5}$", None,
         ("{user}@frontier.olcf.ornl.gov",), ("/mnt/bb/{user}", "/tmp")),
)


def site_of(host: str, fqdn: str, environ: Mapping[str, str] = os.environ) -> Site | None:
    return next((site for site in SITES if site.is_here(host, fqdn, environ)), None)


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


def route_is_a_guess(hops_option: str | None, host: str, fqdn: str) -> bool:
    """No --ssh-hops and no known site: the route goes straight to the node,
    which a laptop reaches only where the node is on its network."""
    return not hops_option and site_of(host, fqdn) is None


def ssh_route(hops_option: str | None, host: str, fqdn: str, user: str) -> list[str]:
    """--ssh-hops' hops then the node, else the default route."""
    if hops_option:
        return [hop.strip() for hop in hops_option.split(",") if hop.strip()] + [host]
    return default_ssh_hops(host, fqdn, user)
