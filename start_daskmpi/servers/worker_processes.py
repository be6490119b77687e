"""Where a nanny's worker processes come from: a fork server started early.

distributed's nanny spawns its worker process, which imports Python, Dask and
distributed anew (about a second of CPU) while the rank waits for it.  The fork
server started here, as a worker's rank begins, has those imports done, and
forks each worker process (the first, and any restart) ready to run; in a local
cluster, one server serves every worker.

Under mpirun the server is a fork of the worker's rank, made after the rank's
own imports and before MPI starts: it costs no second import on each rank, all
at once across a node.  Elsewhere (a local cluster, initialize() in a script
that may have started MPI or CUDA already) it is a fresh interpreter, importing
while the scheduler starts.  Either way it holds no MPI state, no CUDA context
and no threads, so its children may use MPI's network and the GPU.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util
import os
import re
import threading
import traceback
from collections.abc import Iterator, Sequence

import dask

# Imported by the server alone, before its first fork (fork_server_preload.py).
PRELOAD = "start_daskmpi.servers.fork_server_preload"
# Before it (dask/distributed#9313), a worker process that failed at once could
# leave its nanny restarting it in a loop, then hanging, never saying it failed:
# a race that a fork, so much faster than a spawn, made the rule (seen under
# distributed 2024.8).
NANNY_RACE_FIXED = (2026, 7)  # distributed's release, year and month
SPAWN = multiprocessing.util.spawnv_passfds
IMPORTS_VARIABLE = "START_DASKMPI_FORK_SERVER_IMPORTS"


def nanny_survives_fast_starts(distributed_version: str) -> bool:
    """Whether this distributed (calendar versions, "2026.8.0") has the fix."""
    year_month = tuple(int(n) for n in re.findall(r"\d+", distributed_version)[:2])
    return year_month >= NANNY_RACE_FIXED


def start_fork_server(fork_this_process: bool = False, imports: Sequence[str] = ()) -> None:
    """Have this process's nannies fork their worker processes from a server
    started now, unless another start method than distributed's default was
    chosen in Dask's config, or distributed is older than NANNY_RACE_FIXED.
    ``fork_this_process``: the server is a fork of this process, which must not
    have started MPI, CUDA or a thread; else a fresh interpreter.  The server
    imports ``imports`` (the workers' --pre-import) before its first fork, on
    its one thread, while this process goes on."""
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
    # A thread (a site hook's, say) would not be in the fork, nor the locks it holds.
    fork = fork_this_process and threading.active_count() == 1
    started_by = forking_this_process if fork else contextlib.nullcontext
    # Read by its preload (fork_server_preload.py): the server's environment alone.
    os.environ[IMPORTS_VARIABLE] = ",".join(imports)
    try:
        with started_by():
            multiprocessing.forkserver.ensure_running()
    except OSError:
        return  # no socket for it (an unusable $TMPDIR, say): spawn, as distributed does
    finally:
        del os.environ[IMPORTS_VARIABLE]
    distributed.utils._forkserver_preload_set = True
    dask.config.set({option: "forkserver"})


@contextlib.contextmanager
def forking_this_process() -> Iterator[None]:
    """multiprocessing starts its fork server as a fresh interpreter, by the one
    call util.spawnv_passfds, and has no option to fork it instead: that call
    is replaced while the server starts."""
    # The rank's imports are what the fork saves: the worker's, here, at once.

    multiprocessing.util.spawnv_passfds = run_in_a_fork
    try:
        yield
    finally:
        multiprocessing.util.spawnv_passfds = SPAWN


def run_in_a_fork(path: str, args: Sequence[str], passfds: Sequence[int]) -> int:
    """spawnv_passfds's contract, ``python -c CODE`` run with only ``passfds``
    and the standard streams open, kept by a fork of this process running CODE.
    Returns the fork's pid."""
    *_, flag, code = args
    if flag != "-c":  # not the server's command as this module knows it
        return SPAWN(path, args, passfds)
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        close_all_but(passfds)
        # ensure_running forks while holding the server's lock: a process
        # forked from this one that started a fork server would wait on it.
        multiprocessing.forkserver._forkserver._lock = threading.Lock()
        exec(code, {"__name__": "__main__"})
        status = 0
    except SystemExit:  # the server's end, once the rank has ended
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


def close_all_but(passfds: Sequence[int]) -> None:
    """Close each file descriptor above the standard streams but ``passfds``:
    the server must hold none of the rank's, the pipe by which it learns that
    the rank ended least of all."""
    start = 3
    for fd in sorted(passfds):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, os.sysconf("SC_OPEN_MAX"))
