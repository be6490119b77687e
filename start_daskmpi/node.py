"""This node as the layout sees it: its name, the GPUs its workers take, its
cores and memory."""
from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Mapping

import psutil
from dask.system import CPU_COUNT

from .gpus import GPU_COUNTERS, check_gpu_required, choose_gpus, find_gpus, parse_visible_devices
from .layout import Node
from .network import node_addresses


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
    return Node(host=host, gpus=gpus, cores=CPU_COUNT, memory=memory, pin=pin,
                addresses=node_addresses())
