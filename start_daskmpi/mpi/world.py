"""MPI (with mpi/ending.py, the only modules that import mpi4py): the world,
the few messages the ranks exchange (the start, the end), agreement on
errors.  Everything between the start and the end goes through Dask.

A cluster without mpirun lives the same life in a world of one process
(ProcessWorld), whose collectives are trivial: its roles all share it.

mpi4py is imported inside the functions: importing it initialises MPI, which
a plan, a local cluster and a nanny's worker process must not do.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from start_daskmpi.errors import LaunchError, attempt, report
from start_daskmpi.plan.layout import DRIVER_RANK, SCHEDULER_RANK, Node

logger = logging.getLogger("start_daskmpi")

TAG_START = 1
TAG_END = 2
TAG_LEFT = 3
# Seconds between tests of a pending MPI operation.  MPI moves one on only
# inside a call (no progress thread), and a collective takes log2(ranks) rounds,
# each waiting for every rank's next test: a wait that is short by nature (the
# start's word, a collective, the end's handshakes) tests often, at a cost of
# microseconds a test; the wait for the job's end, which lasts the job, seldom.
QUICK_POLL = 0.005
POLL_INTERVAL = 0.05
LEAVE_TIMEOUT = 30.0  # seconds a rank done with its role waits for the others to be done
# Seconds a rank waits, after an ending signal, for the driver to end the job:
# the time the script's finally has.  Within Slurm's default KillWait (30 s).
SIGNAL_GRACE = 25.0
# What each MPI launcher tells its processes: world size and rank.
OPEN_MPI_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")
LAUNCHER_VARIABLES = (
    OPEN_MPI_VARIABLES,
    ("PMI_SIZE", "PMI_RANK"),
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"),
    ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID"),
)


def launcher_world(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """(size, rank) as the MPI launcher that started us says, read before MPI
    is initialised; None when no launcher we know started this process."""
    for size, rank in LAUNCHER_VARIABLES:
        if environ.get(size, "").isdigit() and environ.get(rank, "").isdigit():
            return int(environ[size]), int(environ[rank])
    return None


def mpi_world(environ: Mapping[str, str], one_rank: bool = False) -> Any:
    """COMM_WORLD when a launcher started several ranks (or one, where
    ``one_rank``), else None (local mode)."""
    launched = launcher_world(environ)
    if launched is None or (launched[0] == 1 and not one_rank):
        return None
    try:
        import mpi4py

        mpi4py.rc.finalize = False  # exit_together() does, bounded
        from mpi4py import MPI
    except (ImportError, RuntimeError) as e:
        raise LaunchError(
            f"cannot use MPI under this mpirun ({e}): pip install mpi4py, or "
            "start_daskmpi[mpi] for an MPI of its own"
        ) from None
    world = MPI.COMM_WORLD
    if world.size != launched[0]:
        library = MPI.Get_library_version().splitlines()[0].strip()
        raise LaunchError(
            f"mpirun started {launched[0]} ranks but mpi4py sees {world.size}: mpi4py "
            f"uses another MPI ({library}); use that MPI's mpirun, or rebuild mpi4py "
            "for this one (env MPICC=mpicc pip install --no-binary mpi4py mpi4py)"
        )
    return world


class ProcessWorld:
    """The world of a cluster without mpirun: this process, rank 0 of 1, which
    serves every role (the local mode).  The collectives the lifecycle uses
    hand a rank its own value; nothing here initialises MPI."""

    rank, size = 0, 1

    def bcast(self, value: Any, root: int = 0) -> Any:
        return value

    def allgather(self, value: Any) -> list[Any]:
        return [value]

    def gather(self, value: Any, root: int = 0) -> list[Any]:
        return [value]

    def scatter(self, values: Sequence[Any], root: int = 0) -> Any:
        return values[0]


def alone(world: Any) -> bool:
    """Whether ``world`` is this process alone, with no MPI under it."""
    return isinstance(world, ProcessWorld)


def comm_world() -> Any:
    from mpi4py import MPI

    return MPI.COMM_WORLD


def threads_may_call_mpi() -> bool:
    """Whether MPI was initialised for calls from another thread than the main one."""
    from mpi4py import MPI

    return MPI.Query_thread() >= MPI.THREAD_SERIALIZED


class RankLost(Exception):
    """A rank died, and the launcher keeps the job running: an MPI with fault
    tolerance (Open MPI's --with-ft=ulfm) says so on a message awaited from it."""

    def __init__(self, rank: int) -> None:
        super().__init__(rank)
        self.rank = rank


async def receive(world: Any, source: int, tag: int, interval: float = QUICK_POLL) -> Any:
    """One message, tested for every ``interval`` seconds: a blocking MPI receive
    would spin a core that the node's workers need.  Raises RankLost if
    ``source`` died."""
    from mpi4py import MPI

    request = world.irecv(source=source, tag=tag)
    try:
        while True:
            try:
                done, message = request.test()
            except MPI.Exception as e:
                if e.Get_error_class() == MPI.ERR_PROC_FAILED:
                    raise RankLost(source) from None
                raise
            if done:
                return message
            await asyncio.sleep(interval)
    except asyncio.CancelledError:
        request.Cancel()  # a receive left pending would trouble MPI_Finalize
        # Wait, not wait: a cancelled receive has no message to unpickle (MPICH
        # leaves garbage there), and one from a failed rank may end in error.
        with contextlib.suppress(MPI.Exception):
            request.Wait()
        raise


async def drivers_word(world: Any, driver: int = DRIVER_RANK) -> int:
    """The driver's word that the job is over: its exit status.  The launcher
    sends SIGINT and SIGTERM to every rank, so the driver is ending the job too:
    after one, wait for its word at most SIGNAL_GRACE seconds."""
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[int] = asyncio.Queue()
    if threading.current_thread() is threading.main_thread():  # else the driver's, beside
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, signals.put_nowait, signum)
    end = asyncio.ensure_future(receive(world, driver, TAG_END, POLL_INTERVAL))
    signaled = asyncio.ensure_future(signals.get())
    await asyncio.wait([end, signaled], return_when=asyncio.FIRST_COMPLETED)
    if end.done():
        signaled.cancel()
        return end.result()
    try:
        return await asyncio.wait_for(end, SIGNAL_GRACE)
    except (TimeoutError, asyncio.TimeoutError):  # one and the same since Python 3.11
        return 128 + signaled.result()


def send_to_all(world: Any, message: Any, tag: int) -> None:
    """``message`` to every other rank, waited for at most LEAVE_TIMEOUT: a rank
    on a node that was lost is left behind (exit_together names it)."""
    others = [r for r in range(world.size) if r != world.rank]
    if not others:
        return
    from mpi4py import MPI

    requests = [world.isend(message, dest=r, tag=tag) for r in others]
    done_within(lambda: MPI.Request.Testall(requests), LEAVE_TIMEOUT)


def done_within(done: Callable[[], bool], timeout: float) -> bool:
    """Test ``done`` every QUICK_POLL seconds until it is true, at most
    ``timeout`` seconds; whether it came true."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(QUICK_POLL)
    return True


def agree(world: Any, error: str | None) -> bool:
    """True when no rank has an error; rank 0 prints each distinct one once."""
    errors = world.allgather(error)
    if world.rank == SCHEDULER_RANK:
        for message in dict.fromkeys(e for e in errors if e):
            report(message)
    return not any(errors)


def gather_nodes(
    world: Any, probe: Callable[[], Node], own: Callable[[], Any]
) -> tuple[list[int], list[Node], list[Any]] | None:
    """Each rank's node index, the nodes in the order of their first rank, and
    each rank's ``own()``; None when a node's probe failed (said once, by rank
    0).  One rank per node probes (GPU detection is node-wide); ranks are told
    apart by their node's name, since an MPI that shares no memory between
    ranks (MPIR_CVAR_NOLOCAL, some fabrics) makes each rank a node of its own."""
    if alone(world):
        node, error = attempt(probe)
    else:
        from mpi4py import MPI

        node_comm = world.Split_type(MPI.COMM_TYPE_SHARED, key=world.rank)
        found, error = attempt(probe) if node_comm.rank == 0 else (None, None)
        node, error = node_comm.bcast((found, error), root=0)
        node_comm.Free()
    if not agree(world, error):
        return None
    gathered = world.allgather((node, own()))
    nodes: dict[str, Node] = {}  # by name, in the order of first rank
    for each, _ in gathered:
        nodes.setdefault(each.host, each)
    index = {name: i for i, name in enumerate(nodes)}
    return (
        [index[each.host] for each, _ in gathered],
        list(nodes.values()),
        [mine for _, mine in gathered],
    )


async def count_everywhere(world: Any, count: int) -> int:
    """The sum of ``count`` over every rank, awaited without blocking the event
    loop: the scheduler's keeps serving meanwhile."""
    if world.size == 1:
        return count
    from array import array

    from mpi4py import MPI

    mine, total = array("i", [count]), array("i", [0])
    request = world.Iallreduce([mine, MPI.INT], [total, MPI.INT], op=MPI.SUM)
    while not request.Test():
        await asyncio.sleep(QUICK_POLL)
    return total[0]
