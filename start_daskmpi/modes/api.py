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

import importlib
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, NoReturn

from start_daskmpi.driver.script import interrupt_status, status_of_exit
from start_daskmpi.errors import API_MISTAKE, LaunchError
from start_daskmpi.mpi.ending import said_by_rank_0
from start_daskmpi.mpi.world import comm_world, threads_may_call_mpi
from start_daskmpi.plan.config import Config, from_keywords
from start_daskmpi.plan.layout import DRIVER_RANK, SCHEDULER_RANK, Role, Shape

# dask-mpi's default dashboard address: here, the launcher's own default (the
# dashboard on a private socket, 8787 or the next free port in the tunnel).
DASK_MPI_DASHBOARD = ":8787"


def ranks() -> ModuleType:
    """The ranks' part (api_ranks.py), imported once a function is called:
    it imports distributed, which a script's import of this API must not."""
    return importlib.import_module("start_daskmpi.modes.api_ranks")


def dask_mpi_config(
    interface: str | None, nthreads: int | None, local_directory: str | None,
    memory_limit: int | float | str, nanny: bool, dashboard: bool, dashboard_address: str,
    protocol: str | None, worker_class: Any, worker_options: Mapping[str, Any] | None,
    options: Mapping[str, Any], shape: Shape | None = None,
) -> Config:
    """The configuration that dask-mpi's keywords and the launcher's ``options``
    (its long options, as keywords) ask for, each checked as its option is."""
    nanny, cls = worker_kind(worker_class, nanny)
    keywords: dict[str, Any] = dict(interface=interface or None, nthreads=nthreads,
                                    local_directory=local_directory or None,
                                    memory_limit=memory_limit, nanny=nanny, dashboard=dashboard)
    if dashboard_address != DASK_MPI_DASHBOARD:
        keywords["dashboard_address"] = dashboard_address
    if protocol not in (None, "tls"):  # dask-mpi's protocol="tcp" is a cluster without TLS
        keywords.update(tls=False, protocol=protocol)
    return from_keywords({**keywords, **options}, worker_class=cls,
                         worker_options=worker_options, shape=shape)


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


def stop_for_mistake(world: Any, error: LaunchError) -> NoReturn:
    """Every rank made the same mistake: rank 0 says it, every rank ends."""
    said_by_rank_0(str(error), world.rank)
    raise SystemExit(API_MISTAKE)


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
    world = comm if comm is not None else comm_world()
    try:
        config = dask_mpi_config(interface, nthreads, local_directory, memory_limit, nanny,
                                 dashboard, dashboard_address, protocol, worker_class,
                                 worker_options, options)
    except LaunchError as e:
        stop_for_mistake(world, e)
    return ranks().start_on(world, config, exit, lambda role: role.rank) is not None


def send_close_signal() -> None:
    """End the cluster that initialize() started, from the client's rank: the
    workers and the scheduler close, and their ranks return from initialize()
    (exit=False) or exit.  Called at the script's exit where it was not before."""
    client = ranks().client_rank()
    if client is None:
        raise RuntimeError("send_close_signal(): no cluster of initialize() in this process "
                           f"(it is called on rank {DRIVER_RANK}, after initialize())")
    client.end(0)


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
    world = comm if comm is not None else comm_world()
    try:
        shape = execute_shape(scheduler, scheduler_address, exclusive_workers, client_rank,
                              scheduler_rank, world.size)
        if shape.driver_rank == SCHEDULER_RANK:
            check_threads_may_call_mpi()
        config = dask_mpi_config(
            interface, nthreads, local_directory, memory_limit, nanny, dashboard,
            dashboard_address, protocol, worker_class, worker_options,
            {"scheduler_port": scheduler_port, "scheduler_file": scheduler_file, **options},
            shape,
        )
    except LaunchError as e:
        stop_for_mistake(world, e)
    order = rank_order(scheduler_rank, client_rank, world.size)
    sub_world = world.Split(0, order.index(world.rank))
    try:
        def name(role: Role) -> Any:
            rank = order[role.rank]
            return f"{worker_name}-{rank}" if worker_name else rank

        client = ranks().start_on(sub_world, config, exit=False, name_worker=name)
        if client is None:
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
            client.end(code)
    finally:
        sub_world.Free()


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
    if not threads_may_call_mpi():
        raise LaunchError(
            "client_rank == scheduler_rank runs the scheduler on a thread, which MPI "
            "allows only from thread level 'serialized' up: leave mpi4py.rc.thread_level "
            "at its default ('multiple')"
        )
