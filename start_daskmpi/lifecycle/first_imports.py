"""What a rank imports before its role starts, in every mode: now, on its
one thread, before any server or thread exists (servers/pre_imports.py says
why).  Under the command, before MPI starts, which waits for every rank anyway."""
from __future__ import annotations

import importlib.util
import os

from start_daskmpi.plan.config import Config
from start_daskmpi.plan.gpus import NVIDIA_PIN, find_gpus, parse_visible_devices
from start_daskmpi.plan.layout import SCHEDULER_RANK
from start_daskmpi.servers.pre_imports import import_each, modules_for
from start_daskmpi.servers.scheduler import scheduler_modules
from start_daskmpi.servers.worker_processes import start_fork_server


def import_for_the_role(config: Config, rank: int, fork_this_process: bool) -> None:
    """A worker's rank starts the fork server of its nanny's worker processes,
    which imports the --pre-import modules while the rank goes on (this very
    process forked, where ``fork_this_process``: only before MPI starts);
    without a nanny, the rank imports them.  The scheduler's rank imports
    what its start needs, and its --pre-import."""
    if config.run.join or rank > config.shape.driver_rank:
        if config.workers.nanny:
            start_fork_server(fork_this_process=fork_this_process, imports=worker_imports(config))
        else:
            import_each(worker_imports(config))
    elif rank == SCHEDULER_RANK:
        import_each([*scheduler_modules(config.network.dashboard),
                     *modules_for(config.workers.pre_import, gpu_worker=False, has_cupy=False)])


def worker_imports(config: Config) -> list[str]:
    """A worker's --pre-import, or the defaults, CuPy among them where this
    rank likely has a GPU."""
    cupy = config.workers.pre_import is None and has_cupy()  # else the GPU does not matter
    return modules_for(config.workers.pre_import, cupy and sees_a_gpu(config), cupy)


def sees_a_gpu(config: Config) -> bool:
    """Whether this rank's worker will likely have an NVIDIA GPU, told before
    MPI and the layout: a mask set, or NVML counting one (no CUDA context).
    A guess only decides what is imported early; the worker imports what it
    needs all the same (servers.workers.worker_pre_imports)."""
    if config.workers.gpus_per_node == 0:
        return False
    pin, visible, detected = find_gpus(config.workers.gpu_vendor, os.environ)
    found = len(parse_visible_devices(visible)) if visible is not None else detected
    return pin == NVIDIA_PIN and found > 0


def has_cupy() -> bool:
    return importlib.util.find_spec("cupy") is not None
