"""``main``: the command's entry.  It parses the options, answers --plan and
--launch-command, and runs this process's part: a rank's role under mpirun,
else the whole cluster locally.  Its return value is the process's exit status:
the script's, 2 for a mistake the user can fix, 128 + N after signal N."""
from __future__ import annotations

import importlib
import os
import socket
import sys
from collections.abc import Sequence
from types import ModuleType

from start_daskmpi.errors import MISTAKE, LaunchError
from start_daskmpi.mpi.ending import faults_end_the_job, said_by_rank_0
from start_daskmpi.mpi.launcher_signals import keep_sigusr1_from_children, take_sigusr1
from start_daskmpi.mpi.world import launcher_world, mpi_world
from start_daskmpi.plan.config import Config, from_args
from start_daskmpi.plan.node import raise_open_file_limit, this_node
from start_daskmpi.plan.options import parse_args
from start_daskmpi.plan.report import launch_report, plan_report


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
        config = from_args(args)
        raise_open_file_limit()
        keep_sigusr1_from_children(os.environ)  # before any process or thread starts
        launched = launcher_world(os.environ)
        if launched and (launched[0] > 1 or config.run.join):
            import_before_mpi(config, rank=launched[1])
        take_sigusr1(os.environ)
        world = mpi_world(os.environ, one_rank=config.run.join is not None)
        if world is None and config.run.join:
            raise LaunchError("--join runs under mpirun: mpirun -np N python start_daskmpi.py "
                              "--join FILE, one rank per GPU to add")
        mode = the_mode(config, world)
    except LaunchError as e:
        launched = launcher_world(os.environ)
        said_by_rank_0(str(e), launched[1] if launched else None)
        return MISTAKE
    if world is None:  # one process: a fault of ours is its traceback, nothing waits
        return mode.run_local(config)
    with faults_end_the_job(world):
        return mode.run_joining(world, config) if config.run.join else mode.run_rank(world, config)


def the_mode(config: Config, world: object) -> ModuleType:
    """This run's mode (modes/), imported now, and Dask with it."""
    name = "local" if world is None else "join" if config.run.join else "launcher"
    return imported(f"start_daskmpi.modes.{name}")


def import_before_mpi(config: Config, rank: int) -> None:
    """A rank imports Dask (a second or more of CPU) and what its role starts
    with before MPI starts, as MPI_Init waits for every rank anyway; a
    worker's rank forks its nanny's fork server now, MPI not yet started."""
    first_imports = imported("start_daskmpi.lifecycle.first_imports")
    first_imports.import_for_the_role(config, rank, fork_this_process=True)


def imported(module: str) -> ModuleType:
    """``module``, imported; where the job's Python lacks what it needs, one line
    to say so (by rank 0: every rank has the same Python)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if (e.name or "").startswith("start_daskmpi"):
            raise
        raise LaunchError(f"{e} (on {socket.gethostname()}): the job's Python lacks "
                          "start_daskmpi's requirements: pip install start_daskmpi, or "
                          "activate its environment in the job script") from None
