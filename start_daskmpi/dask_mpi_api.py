"""dask-mpi's Python API on this launcher: ``initialize()``, ``send_close_signal()``
and ``execute()``, with dask-mpi's signatures, called inside a script that
``mpirun`` starts on every rank:

    from start_daskmpi import initialize
    initialize()                    # rank 0: scheduler, rank 1: goes on, others: workers
    with Client() as client: ...    # rank 1 only

What the launcher adds under them: one worker per GPU, pinned to it; TLS with
credentials made for the job and shared over MPI; the script's exit status as
the job's; every end bounded.  Every launcher option is a keyword too
(``gpus_per_node=4``, ``tls=False``, ``min_workers=0.9``, ...).

A mistake (in the arguments, too few ranks, what a rank's checks find) is one
line from rank 0 and status 1 on every rank, as dask-mpi's exceptions end
the script there.  Distributed and mpi4py are imported only once
a function is called.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from .errors import LaunchError, report
from .layout import DRIVER_RANK, SCHEDULER_RANK, Shape
from .options import parse_args

# dask-mpi's default dashboard address: here, the launcher's own default (8787,
# or the next free port, on the servers' interface).
DASK_MPI_DASHBOARD = ":8787"
# The status of a mistake found before any server starts (said in one line):
# dask-mpi's, whose exceptions end the script (the command's are 2, as argparse's).
NO_START = 1
# Command-line options that describe a run of the command, not a cluster.
NOT_KEYWORDS = ("script", "script_args", "plan", "launch_command", "nodes", "ranks", "hostfile",
                "join")


def launcher_argv(
    interface: str | None, nthreads: int | None, local_directory: str | None,
    memory_limit: int | float | str, nanny: bool, dashboard: bool, dashboard_address: str,
    protocol: str | None, options: Mapping[str, Any],
) -> list[str]:
    """The command line that asks for what dask-mpi's keywords and the launcher's
    ``options`` (its long options, as keywords) ask for."""
    argv: list[str] = []
    for name in options:
        if name in NOT_KEYWORDS:
            raise LaunchError(f"{name} is an option of the command line only, not a keyword")
    if interface:
        argv += ["--interface", interface]
    if nthreads is not None:
        argv += ["--nthreads", str(nthreads)]
    if local_directory:
        argv += ["--local-directory", os.fspath(local_directory)]
    argv += ["--memory-limit", str(memory_limit)]
    argv.append("--nanny" if nanny else "--no-nanny")
    argv.append("--dashboard" if dashboard else "--no-dashboard")
    if dashboard_address != DASK_MPI_DASHBOARD:
        argv += ["--dashboard-address", dashboard_address]
    if protocol not in (None, "tls"):
        argv += ["--no-tls", "--protocol", protocol]
    for name, value in options.items():
        argv += option_argv(name, value)
    return argv


def option_argv(name: str, value: Any) -> list[str]:
    """``name=value`` as its command-line option: True a flag, False its --no-
    form (or nothing), a list the option repeated or joined as the option takes it."""
    option = "--" + name.replace("_", "-")
    if value is True:
        return [option]
    if value is False:
        return [f"--no-{name.replace('_', '-')}"] if name in ("tls", "nanny", "dashboard") else []
    if value is None:
        return []
    if name == "pre_import" and not isinstance(value, str):
        return [option, ",".join(value)]
    if name == "preload" and not isinstance(value, str):
        return [arg for each in value for arg in (option, os.fspath(each))]
    return [option, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]


def worker_kind(worker_class: Any, nanny: bool) -> tuple[bool, Any]:
    """(behind a nanny?, the Worker class to run, None for ours) for dask-mpi's
    ``worker_class`` (a class, or its import path) and ``nanny``."""
    from distributed import Nanny, Worker
    from distributed.utils import import_term

    cls = import_term(worker_class) if isinstance(worker_class, str) else worker_class
    if isinstance(cls, type) and issubclass(cls, Nanny):
        return True, None
    if isinstance(cls, type) and issubclass(cls, Worker):
        if nanny and cls is not Worker:
            raise LaunchError("nanny=True runs the launcher's workers: drop worker_class, "
                              "or nanny=True to run yours in the rank's process")
        return nanny, None if cls is Worker else cls
    raise LaunchError(f"worker_class {worker_class!r} is neither a distributed.Worker nor "
                      "a distributed.Nanny")


def cluster_args(
    interface: str | None, nthreads: int | None, local_directory: str | None,
    memory_limit: int | float | str, nanny: bool, dashboard: bool, dashboard_address: str,
    protocol: str | None, worker_class: Any, worker_options: Mapping[str, Any] | None,
    options: Mapping[str, Any],
) -> argparse.Namespace:
    nanny, cls = worker_kind(worker_class, nanny)
    args = parse_args(launcher_argv(interface, nthreads, local_directory, memory_limit, nanny,
                                    dashboard, dashboard_address, protocol, options))
    args.worker_class, args.worker_options = cls, dict(worker_options or {})
    args.jupyterlab = False  # the driver's part is the caller's script
    return args


def stop_for_mistake(comm: Any, error: LaunchError) -> NoReturn:
    """Every rank made the same mistake: rank 0 says it, every rank ends."""
    from .mpi import said_by_rank_0

    said_by_rank_0(str(error), comm.rank)
    raise SystemExit(NO_START)


def leave(world: Any, code: int, hosts: Sequence[str], driver: int) -> NoReturn:
    """End this process with the job, as a rank of the command does."""
    from .mpi import exit_together

    if not exit_together(world, code, hosts, driver):
        # A rank is gone: mpi4py's own MPI_Finalize at exit would wait for it forever.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


class ScriptStatus:
    """The status the script on the client's rank ends with, as far as Python
    shows it before the exit: ``sys.exit(n)`` and an uncaught exception (an
    interrupt said in one line, as the command says it).  A bare ``raise
    SystemExit(n)`` still ends the process, and so the job, with n."""

    def __init__(self) -> None:
        self.code = 0
        self.interrupted = False  # Python would exit 1, or by SIGINT: not the job's status
        self.plain_exit, self.plain_hook = sys.exit, sys.excepthook
        sys.exit, sys.excepthook = self.exit, self.excepthook

    def exit(self, code: object = None) -> NoReturn:
        from .script import status_of_exit

        if threading.current_thread() is threading.main_thread():  # elsewhere it ends a thread
            self.code = status_of_exit(code)
        self.plain_exit(code)

    def excepthook(self, kind: type[BaseException], error: BaseException, tb: Any) -> None:
        from .script import announce_interrupt

        if isinstance(error, KeyboardInterrupt):
            self.code, self.interrupted = announce_interrupt(error), True
        else:
            self.code = 1
            self.plain_hook(kind, error, tb)

    def restore(self) -> None:
        sys.exit, sys.excepthook = self.plain_exit, self.plain_hook


class ClientRank:
    """The client's rank under initialize(): the job's driver, while the rest of
    the script runs on it.  ``start`` returns once enough workers registered;
    ``end`` (send_close_signal(), or the script's exit) ends the job."""

    def __init__(self, world: Any, cluster: Any, hosts: Sequence[str], exit: bool) -> None:
        self.world, self.cluster, self.hosts, self.exit = world, cluster, hosts, exit
        self.driver = cluster.layout.driver_rank  # this rank
        self.stack = contextlib.ExitStack()
        self.beside: Any = None  # roles.Beside: what the servers beside the driver are told
        self.servers: threading.Thread | None = None  # theirs, where there are any
        self.job: Any = None
        self.status: ScriptStatus | None = None
        self.ended = False
        self.job_status = 0  # what end() ended the job with

    def start(self) -> None:
        from .banners import connection_banner
        from .driver import Job, connected
        from .mpi import hard_exit_ends_the_job
        from .roles import Beside, scheduler_reached, serve_beside_driver
        from .script import raise_terminated

        cluster = self.cluster
        self.beside = Beside()
        rank = self.world.rank
        if cluster.layout.roles[rank].kind == "scheduler" or cluster.layout.beside_rank(rank):
            self.servers = serve_beside_driver(self.world, cluster, self.beside)
        info = scheduler_reached(self.world, cluster, self.beside)
        if info is None:  # every rank knows, and ends with 2, as under the command
            self.servers_end(2)
            self.leave_with_the_others(2)
        self.job = Job(cluster.args, info, cluster.layout, cluster.log_dir, cluster.credentials,
                       cluster.private)
        previous = signal.signal(signal.SIGTERM, raise_terminated)
        self.stack.callback(signal.signal, signal.SIGTERM, previous)
        self.stack.enter_context(
            hard_exit_ends_the_job(self.world, self.hosts, self.job.end, self.driver)
        )
        try:
            _, route = self.stack.enter_context(connected(self.job))
        except (LaunchError, KeyboardInterrupt) as e:
            self.end(self.failed_start(e))
            raise SystemExit(self.job_status) from None
        print(connection_banner(info.dashboard, route))
        print(flush=True)
        self.status = ScriptStatus()
        atexit.register(self.end_at_exit)

    def failed_start(self, error: BaseException) -> int:
        from .script import announce_interrupt

        if isinstance(error, KeyboardInterrupt):
            return announce_interrupt(error)
        report(str(error))
        return 1

    def end_at_exit(self) -> None:
        if self.ended:
            return
        self.end(self.status.code if self.status else 0)
        # With exit=False, MPI is the caller's to finalise, at its exit: no shortcut.
        if self.exit and self.status and (self.status.interrupted
                                          or self.status.code != self.job_status):
            from .mpi import exit_past_python

            sys.stdout.flush()
            sys.stderr.flush()
            exit_past_python(self.job_status)

    def end(self, code: int) -> None:
        """End the job with ``code``, once: close the driver's client, tell the
        other ranks, and (with exit=True) leave MPI with them."""
        from .mpi import exit_together
        from .roles import end_job
        from .script import announce_interrupt

        if self.ended:
            return
        self.ended = True
        if self.status is not None:
            self.status.restore()
        try:
            self.stack.close()
        except KeyboardInterrupt as e:  # the scheduler was lost meanwhile
            code = announce_interrupt(e)
        self.job_status = code
        print("Successfully exited" if code == 0 else f"Exited with status {code}", flush=True)
        self.job.end(code)
        end_job(self.world, self.job, code)
        self.servers_end(code)
        if self.exit:
            exit_together(self.world, code, self.hosts, self.driver)

    def servers_end(self, code: int) -> None:
        """End the servers beside the driver, and wait for them (bounded): the
        scheduler's, beside, waits for the workers to leave."""
        from .mpi import LEAVE_TIMEOUT
        from .security import remove_private
        from .servers import WORKERS_LEAVE_TIMEOUT

        self.beside.ended(code)
        if self.servers is not None:
            self.servers.join(WORKERS_LEAVE_TIMEOUT + LEAVE_TIMEOUT)
        remove_private(self.cluster.private)

    def leave_with_the_others(self, code: int) -> NoReturn:
        if self.exit:
            leave(self.world, code, self.hosts, self.driver)
        raise SystemExit(code)


_client_rank: ClientRank | None = None  # this process's, under initialize()


def initialize(
    interface: str | None = None,
    nthreads: int = 1,
    local_directory: str | None = None,
    memory_limit: int | float | str = "auto",
    nanny: bool = False,
    dashboard: bool = True,
    dashboard_address: str = DASK_MPI_DASHBOARD,
    protocol: str | None = None,
    worker_class: Any = "distributed.Worker",
    worker_options: Mapping[str, Any] | None = None,
    comm: Any = None,
    exit: bool = True,
    **options: Any,
) -> bool:
    """Start the cluster on ``comm``'s ranks (default: every rank): rank 0 serves
    the scheduler, rank 1 returns True and goes on with the script, the others
    serve one worker each (one per GPU where there are GPUs; a rank left
    without one idles).  With ``exit=True`` (dask-mpi's default), the ranks
    other than 1 exit once the script ends on rank 1, with its status; with
    ``exit=False`` they return False then, and rank 1 ends the cluster with
    send_close_signal() (or at its exit).  dask-mpi names each worker after
    its rank; so does this.  ``options``: the launcher's own, by their long
    names (``gpus_per_node=4``, ``tls=False``, ``startup_timeout=60``, ...)."""
    world = mpi_comm(comm)
    try:
        args = cluster_args(interface, nthreads, local_directory, memory_limit, nanny, dashboard,
                            dashboard_address, protocol, worker_class, worker_options, options)
    except LaunchError as e:
        stop_for_mistake(world, e)
    return start_on(world, args, exit, lambda role: role.rank)


def start_on(world: Any, args: argparse.Namespace, exit: bool,
             name_worker: Callable[[Any], Any]) -> bool:
    global _client_rank
    from .mpi import faults_end_the_job
    from .node import raise_open_file_limit
    from .pre_imports import import_each
    from .roles import ended_if_a_rank_is_lost, prepare_cluster, serve_role
    from .security import remove_private
    from .servers import scheduler_modules

    raise_open_file_limit()

    if _client_rank is not None and not _client_rank.ended:
        raise RuntimeError("initialize() was called before in this process, and its cluster "
                           "still runs: call send_close_signal() first")
    if args.nanny and world.rank > DRIVER_RANK:
        from .worker_processes import start_fork_server

        start_fork_server()  # its worker processes import their --pre-import as they begin
    if world.rank == SCHEDULER_RANK:  # now, on this thread (pre_imports.py)
        import_each(scheduler_modules(args.dashboard))
    hosts: list[str] = []
    cluster = prepare_cluster(world, args, hosts, name_worker)
    if cluster is None:
        raise SystemExit(NO_START)
    if world.rank == cluster.layout.driver_rank:
        _client_rank = ClientRank(world, cluster, hosts, exit)
        _client_rank.start()
        return True
    with faults_end_the_job(world):
        try:
            code = ended_if_a_rank_is_lost(world, hosts, lambda: serve_role(world, cluster))
        finally:
            remove_private(cluster.private)
    if exit:
        leave(world, code, hosts, cluster.layout.driver_rank)
    return False


def mpi_comm(comm: Any) -> Any:
    if comm is not None:
        return comm
    from mpi4py import MPI

    return MPI.COMM_WORLD


def send_close_signal() -> None:
    """End the cluster that initialize() started, from the client's rank: the
    workers and the scheduler close, and their ranks return from initialize()
    (exit=False) or exit.  Called at the script's exit where it was not before."""
    if _client_rank is None:
        raise RuntimeError("send_close_signal(): no cluster of initialize() in this process "
                           f"(it is called on rank {DRIVER_RANK}, after initialize())")
    _client_rank.end(0)


def execute(
    client_function: Callable[..., Any] | None = None,
    client_args: Sequence[Any] = (),
    client_kwargs: Mapping[str, Any] | None = None,
    client_rank: int = DRIVER_RANK,
    scheduler: bool = True,
    scheduler_rank: int = SCHEDULER_RANK,
    scheduler_address: str | None = None,
    scheduler_port: int | None = None,
    scheduler_file: str | None = None,
    interface: str | None = None,
    nthreads: int = 1,
    local_directory: str = "",
    memory_limit: int | float | str = "auto",
    nanny: bool = False,
    dashboard: bool = True,
    dashboard_address: str = DASK_MPI_DASHBOARD,
    protocol: str | None = None,
    exclusive_workers: bool = True,
    worker_class: Any = "distributed.Worker",
    worker_options: Mapping[str, Any] | None = None,
    worker_name: str | None = None,
    comm: Any = None,
    **options: Any,
) -> None:
    """Run ``client_function(*client_args, **client_kwargs)`` on rank
    ``client_rank`` with a cluster on the ranks (the scheduler on
    ``scheduler_rank``, which may be the client's), then end the cluster; every
    rank returns.  The workers run on the other ranks, and with
    ``exclusive_workers=False`` on the scheduler's and the client's too.  They
    are named after their rank (``worker_name-rank`` with a ``worker_name``).
    An exception of the function ends the cluster, then reaches the caller."""
    from .script import interrupt_status, status_of_exit

    world = mpi_comm(comm)
    try:
        shape = execute_shape(scheduler, scheduler_address, exclusive_workers, client_rank,
                              scheduler_rank, world.size)
        if shape.driver_rank == SCHEDULER_RANK:
            check_threads_may_call_mpi()
        args = cluster_args(
            interface, nthreads, local_directory, memory_limit, nanny, dashboard,
            dashboard_address, protocol, worker_class, worker_options,
            {"scheduler_port": scheduler_port, "scheduler_file": scheduler_file, **options},
        )
        args.shape = shape
    except LaunchError as e:
        stop_for_mistake(world, e)
    order = rank_order(scheduler_rank, client_rank, world.size)
    ranks = world.Split(0, order.index(world.rank))
    try:
        def name(role: Any) -> Any:
            rank = order[role.rank]
            return f"{worker_name}-{rank}" if worker_name else rank

        if not start_on(ranks, args, exit=False, name_worker=name):
            return
        code = 1
        try:
            if callable(client_function):
                client_function(*client_args, **(client_kwargs or {}))
            code = 0
        except SystemExit as e:
            code = status_of_exit(e.code)
            raise
        except KeyboardInterrupt as e:  # Python says it as it reaches the caller
            code = interrupt_status(e)
            raise
        finally:
            assert _client_rank is not None
            _client_rank.end(code)
    finally:
        ranks.Free()


def execute_shape(
    scheduler: bool, scheduler_address: str | None, exclusive_workers: bool, client_rank: int,
    scheduler_rank: int, size: int,
) -> Shape:
    """Where execute()'s roles run, numbered as rank_order() numbers the ranks;
    what dask-mpi's execute() does and this launcher does not, said in one line."""
    if not scheduler:
        raise LaunchError(
            "scheduler=False: joining a running scheduler"
            + (f" ({scheduler_address})" if scheduler_address else "")
            + " is not supported; start the scheduler in this job"
        )
    for what, rank in (("client_rank", client_rank), ("scheduler_rank", scheduler_rank)):
        if not 0 <= rank < size:
            raise LaunchError(f"{what}={rank} is not a rank of the {size} in the communicator")
    shared = client_rank == scheduler_rank
    return Shape(SCHEDULER_RANK if shared else DRIVER_RANK, exclusive_workers)


def rank_order(scheduler_rank: int, client_rank: int, size: int) -> list[int]:
    """The caller's ranks in the order the launcher's roles take them: the
    scheduler's first, the client's next (where it has its own), the rest."""
    first = dict.fromkeys([scheduler_rank, client_rank])
    return [*first, *(r for r in range(size) if r not in first)]


def check_threads_may_call_mpi() -> None:
    """The scheduler beside the client serves on a thread of its own, which
    calls MPI: mpi4py must have asked for more than the main thread's calls."""
    from mpi4py import MPI

    if MPI.Query_thread() < MPI.THREAD_SERIALIZED:
        raise LaunchError(
            "client_rank == scheduler_rank runs the scheduler on a thread, which MPI "
            "allows only from thread level 'serialized' up: leave mpi4py.rc.thread_level "
            "at its default ('multiple')"
        )
