"""This node as the layout sees it: its name, the GPUs its workers take, its
cores and memory."""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import resource
import socket
from collections.abc import Mapping
from pathlib import Path

import psutil

from start_daskmpi.plan.folders import default_local_directory
from start_daskmpi.plan.gpus import (
    GPU_COUNTERS,
    check_gpu_required,
    choose_gpus,
    find_gpus,
    parse_visible_devices,
)
from start_daskmpi.plan.layout import Node
from start_daskmpi.plan.network import node_addresses
from start_daskmpi.plan.sites import site_of


def cpu_list_size(text: str) -> int:
    """How many CPUs a cpuset list names: '0-3,8,10-11' -> 7."""
    count = 0
    for part in text.strip().split(","):
        if part:
            low, _, high = part.partition("-")
            count += int(high or low) - int(low) + 1
    return count


def cgroup_cpus(root: Path = Path("/sys/fs/cgroup"), own: Path = Path("/proc/self/cgroup")) -> int:
    """The CPUs this process's cgroup (the batch job's) may use, by its cpuset
    and its quota; 0 when no cgroup says."""
    limits = []
    with contextlib.suppress(OSError, ValueError):
        for line in own.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":  # cgroup v2
                folder = root / path.lstrip("/")
                limits.append(cpu_list_size((folder / "cpuset.cpus.effective").read_text()))
                quota, period = (folder / "cpu.max").read_text().split()
                if quota != "max":
                    limits.append(max(1, math.ceil(int(quota) / int(period))))
    return min((n for n in limits if n > 0), default=0)


def node_cores() -> int:
    """The node's cores for its workers: the job's share of the node, not this
    rank's affinity, which a launcher that binds ranks narrows to one core."""
    return cgroup_cpus() or psutil.cpu_count() or 1


MOST_OPEN_FILES = 1 << 20  # where the hard limit is none


def raise_open_file_limit() -> None:
    """Let this process (and its children) open as many files as the node
    allows, as ``dask scheduler`` does: anyone on the node can open
    connections to the scheduler's and workers' ports, each holding a file
    descriptor until its TLS handshake fails, and at the usual soft limit of
    1024 a few hundred would leave the user's own connections refused."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MOST_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def this_node(
    gpus_per_node: int | None,
    require_gpu: bool = False,
    vendor: str | None = None,
    environ: Mapping[str, str] = os.environ,
    memory: int | None = None,
) -> Node:
    """``memory``: the bytes workers may use, distributed's MEMORY_LIMIT (which
    heeds cgroups and rlimits) where workers start; a plan, which shows none,
    takes the physical memory."""
    looking = gpus_per_node != 0 or require_gpu
    counters = GPU_COUNTERS if looking else dict.fromkeys(GPU_COUNTERS, lambda: 0)
    pin, visible, detected = find_gpus(vendor, environ, counters)
    host = short_hostname()
    gpus = choose_gpus(visible, detected, gpus_per_node, host, pin)
    if require_gpu:
        real = detected if visible is None else len(parse_visible_devices(visible))
        check_gpu_required(host, real, len(gpus), importlib.util.find_spec("cupy") is not None)
    if memory is None:
        memory = psutil.virtual_memory().total
    scratch = default_local_directory(environ, site_of(host, socket.getfqdn(), environ))
    return Node(host=host, gpus=gpus, cores=node_cores(), memory=memory, pin=pin,
                addresses=node_addresses(), scratch=scratch)
