"""``main``: the command's entry.  It parses the options, answers --plan and
--launch-command, and runs this process's part: a rank's role under mpirun,
else the whole cluster locally.  Its return value is the process's exit status:
the script's, 2 for a mistake the user can fix, 128 + N after signal N."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import socket
import sys
from collections.abc import Sequence

from .errors import LaunchError
from .gpus import NVIDIA_PIN, find_gpus, parse_visible_devices
from .layout import DRIVER_RANK, SCHEDULER_RANK
from .mpi import faults_end_the_job, launcher_world, mpi_world, said_by_rank_0
from .node import raise_open_file_limit, this_node
from .options import parse_args
from .plan import launch_report, plan_report
from .rank_signals import keep_sigusr1_from_children, take_sigusr1


def main(argv: Sequence[str] | None = None) -> int:
    # mpirun forwards each rank's output as it comes: keep lines whole and in order.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        args = parse_args(argv)
        if args.plan or args.launch_command:
            node = this_node(args.gpus_per_node, vendor=args.gpu_vendor)
            print(launch_report(args, node, os.environ) if args.launch_command
                  else plan_report(args, node, os.environ))
            return 0
        raise_open_file_limit()
        keep_sigusr1_from_children(os.environ)  # before any process or thread starts
        launched = launcher_world(os.environ)
        if launched and (launched[0] > 1 or args.join):
            import_before_mpi(args, rank=launched[1])
        take_sigusr1(os.environ)
        world = mpi_world(os.environ, one_rank=args.join is not None)
        if world is None and args.join:
            raise LaunchError("--join runs under mpirun: mpirun -np N python start_daskmpi.py "
                              "--join FILE, one rank per GPU to add")
        if world is None:
            from .local import run_local  # Dask is imported only once a cluster starts

            return run_local(args)
    except LaunchError as e:
        launched = launcher_world(os.environ)
        said_by_rank_0(str(e), launched[1] if launched else None)
        return 2
    with faults_end_the_job(world):
        if args.join:
            from .joining import run_joining

            return run_joining(world, args)
        from .roles import run_rank

        return run_rank(world, args)


def import_before_mpi(args: argparse.Namespace, rank: int) -> None:
    """A rank imports Dask (a second or more of CPU) before MPI starts, as
    MPI_Init waits for every rank anyway.  Then a worker's rank forks the fork
    server of its nanny's worker process, those imports done, which imports
    the --pre-import modules while the rank goes on; without a nanny, the
    rank imports them now.  The scheduler's rank imports what its start will
    need, and its --pre-import.  Now, on the one thread (pre_imports.py)."""
    try:
        importlib.import_module(".joining" if args.join else ".roles", __package__)
    except ImportError as e:
        if (e.name or "").startswith(__package__):
            raise
        raise LaunchError(f"{e} (on {socket.gethostname()}): the job's Python lacks "
                          "start_daskmpi's requirements: pip install start_daskmpi, or "
                          "activate its environment in the job script") from None
    from .pre_imports import import_each, modules_for

    if args.join or rank > DRIVER_RANK:
        cupy = args.pre_import is None and has_cupy()  # else the GPU does not matter
        modules = modules_for(args.pre_import, cupy and sees_a_gpu(args), cupy)
        if args.nanny:
            from .worker_processes import start_fork_server

            start_fork_server(fork_this_process=True, imports=modules)
        else:
            import_each(modules)
    elif rank == SCHEDULER_RANK:
        from .servers import scheduler_modules

        import_each([*scheduler_modules(args.dashboard),
                     *modules_for(args.pre_import, gpu_worker=False, has_cupy=False)])


def sees_a_gpu(args: argparse.Namespace) -> bool:
    """Whether this rank's worker will likely have an NVIDIA GPU, told before
    MPI and the layout: a mask set, or NVML counting one (no CUDA context).
    A guess only decides what is imported early; the worker imports what it
    needs all the same (servers.worker_pre_imports)."""
    if args.gpus_per_node == 0:
        return False
    pin, visible, detected = find_gpus(args.gpu_vendor, os.environ)
    found = len(parse_visible_devices(visible)) if visible is not None else detected
    return pin == NVIDIA_PIN and found > 0


def has_cupy() -> bool:
    return importlib.util.find_spec("cupy") is not None
