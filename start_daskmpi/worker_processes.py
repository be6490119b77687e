"""Where a nanny's worker processes come from: a fork server started early.

distributed's nanny spawns its worker process, which imports Python, Dask and
distributed anew (about a second of CPU) while the rank waits for it.  The fork
server started here, as a worker's rank begins, does those imports once, while
the scheduler starts, and then forks each worker process (the first, and any
restart) ready to run; in a local cluster, one server serves every worker.  It
is a fresh interpreter, not a fork of the rank: it holds no MPI state, no CUDA
context and no threads, so its children may use MPI's network and the GPU.
"""
from __future__ import annotations

import importlib.metadata
import multiprocessing
import multiprocessing.forkserver
import re

import dask

# Imported by the server alone, before its first fork (fork_server_preload.py).
PRELOAD = "start_daskmpi.fork_server_preload"
# Before it (dask/distributed#9313), a worker process that failed at once could
# leave its nanny restarting it in a loop, then hanging, never saying it failed:
# a race that a fork, so much faster than a spawn, made the rule (seen under
# distributed 2024.8).
NANNY_RACE_FIXED = (2026, 7)  # distributed's release, year and month


def nanny_survives_fast_starts(distributed_version: str) -> bool:
    """Whether this distributed (calendar versions, "2026.8.0") has the fix."""
    year_month = tuple(int(n) for n in re.findall(r"\d+", distributed_version)[:2])
    return year_month >= NANNY_RACE_FIXED


def start_fork_server() -> None:
    """Have this process's nannies fork their worker processes from a server
    started now, unless another start method than distributed's default was
    chosen in Dask's config, or distributed is older than NANNY_RACE_FIXED."""
    option = "distributed.worker.multiprocessing-method"
    # The default is distributed's, which may not be imported yet.
    if dask.config.get(option, "spawn") != "spawn":
        return
    if not nanny_survives_fast_starts(importlib.metadata.version("distributed")):
        return
    # distributed would otherwise, at the first nanny's start, import its
    # optional packages (pandas among them) into this process to preload them,
    # with no effect on a server already running: a private flag says it did.
    import distributed.utils

    multiprocessing.get_context("forkserver").set_forkserver_preload([PRELOAD])
    try:
        multiprocessing.forkserver.ensure_running()
    except OSError:
        return  # no socket for it (an unusable $TMPDIR, say): spawn, as distributed does
    distributed.utils._forkserver_preload_set = True
    dask.config.set({option: "forkserver"})
