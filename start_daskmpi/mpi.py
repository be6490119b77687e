"""MPI, and the only module that imports mpi4py: the world, the few messages
the ranks exchange (the start, the end), agreement on errors, and a bounded
exit together.  Everything between the start and the end goes through Dask.

mpi4py is imported inside the functions: importing it initialises MPI, which
a plan, a local cluster and a nanny's worker process must not do.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

from .errors import LaunchError, attempt, report
from .launchers import OPEN_MPI_NOTICES_A_LOST_NODE
from .layout import DRIVER_RANK, SCHEDULER_RANK, Node, format_ranks

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
# Seconds a rank waits, after an ending signal, for the driver to end the job:
# the time the script's finally has.  Within Slurm's default KillWait (30 s).
SIGNAL_GRACE = 25.0
LEAVE_TIMEOUT = 30.0  # seconds a rank done with its role waits for the others to be done
LEAVE_GRACE = 10.0  # seconds the other ranks wait past the driver, which names the lost
# Seconds for the launcher to forward a rank's last lines before it ends the
# job: it drops what it has not read by then (MPICH's hydra, under load).
LINE_GRACE = 1.0
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


async def job_end(world: Any, driver: int = DRIVER_RANK) -> int:
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
    from mpi4py import MPI

    others = (r for r in range(world.size) if r != world.rank)
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
    from array import array

    from mpi4py import MPI

    mine, total = array("i", [count]), array("i", [0])
    request = world.Iallreduce([mine, MPI.INT], [total, MPI.INT], op=MPI.SUM)
    while not request.Test():
        await asyncio.sleep(QUICK_POLL)
    return total[0]


def ranks_not_leaving(world: Any) -> list[int]:
    """The ranks whose word that they are leaving did not come within LEAVE_TIMEOUT."""
    pending = {
        rank: world.irecv(source=rank, tag=TAG_LEFT)
        for rank in range(world.size) if rank != world.rank
    }

    def all_came() -> bool:
        for rank, request in list(pending.items()):
            if request.test()[0]:
                del pending[rank]
        return not pending

    done_within(all_came, LEAVE_TIMEOUT)
    return sorted(pending)


def exit_together(
    world: Any, status: int, hosts: Sequence[str] = (), driver: int = DRIVER_RANK
) -> bool:
    """Finalise MPI once every rank is done with its role.  MPICH's MPI_Finalize
    waits for every rank, with no bound; and its mpirun kills the ranks not yet
    finalised as soon as one exits non-zero, then reports the kill instead of
    the status.  So every rank tells the driver it is leaving; a rank that
    never does (its node lost, its link cut) is named by the driver, which ends
    the job with ``status`` (end_job_without_lost_ranks).  ``hosts``: each
    rank's node; ``driver``: the driver's rank.  Whether MPI was finalised."""
    from mpi4py import MPI

    if world.size == 1:  # a joining job of one rank, or execute()'s all in one
        MPI.Finalize()
        return True
    if world.rank == driver:
        missing = ranks_not_leaving(world)
        logger.info("ranks that did not say they leave: %s", missing)
        if missing:
            where = sorted({hosts[r] for r in missing}) if hosts else ["their node(s)"]
            report(
                f"rank(s) {format_ranks(missing)} on {', '.join(where)} did not answer at "
                f"the end (a node lost, or its network cut): the job ends without them"
            )
            sys.stdout.flush()
            end_job_without_lost_ranks(world, status)
        leaving = None
    else:
        leaving = world.isend(None, dest=driver, tag=TAG_LEFT)
    done = world.Ibarrier()
    # The others outwait the driver's own two waits: it speaks for the job.
    wait = LEAVE_TIMEOUT if world.rank == driver else 2 * LEAVE_TIMEOUT + LEAVE_GRACE
    if done_within(done.Test, wait) and (leaving is None or leaving.Test()):
        read_what_is_left(world)
        MPI.Finalize()
        return True
    return False


def read_what_is_left(world: Any) -> None:
    """Read the messages no role waits for any more (the driver's word, come
    after a signal's grace ended the wait for it): MPICH's MPI_Finalize fails
    on a message left unread.  Every rank has passed the barrier, so whatever
    was sent before it has come."""
    from mpi4py import MPI

    status = MPI.Status()
    while world.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
        # As bytes: what it says no longer matters, and need not unpickle.
        unread = bytearray(status.Get_count(MPI.BYTE))
        world.Recv([unread, MPI.BYTE], source=status.Get_source(), tag=status.Get_tag())


def leave_without_teardown(status: int) -> NoReturn:
    """End this process with ``status`` once MPI is finalised, as a nanny's
    worker process ends (multiprocessing leaves by os._exit): the atexit
    handlers run and the output is flushed, but Python does not tear down
    its thousand modules one object at a time, which took each rank 0.5-1.7 s,
    every rank at once, after the job was over (BENCHMARKS.md).  Only for a
    rank that runs none of the script: the driver's teardown may still flush
    a file the script left open."""
    atexit._run_exitfuncs()  # private, and the only way to run them before leaving
    sys.stdout.flush()
    sys.stderr.flush()
    exit_past_python(status)


def exit_past_python(status: int) -> NoReturn:
    """End the process with libc's exit(3), skipping Python's teardown; not
    os._exit's _exit(2): MPICH's exit handlers must run for its mpirun to
    count this rank's end as clean (else it kills the other ranks).

    Called holding the GIL (PyDLL, not CDLL): exit(3) runs the C libraries'
    destructors, and a Python thread still running (a background import, say)
    would call into a library already torn down (seen: pyarrow's, SIGSEGV)."""
    ctypes.PyDLL(None).exit(status)
    raise SystemExit(status)  # not reached


def end_job_without_lost_ranks(world: Any, status: int) -> NoReturn:
    """End the job now with ``status``, where some ranks cannot be reached (their
    node lost, its link cut).  MPICH's and Slurm's launchers obey MPI_Abort at
    once.  Open MPI's mpirun, told to abort, waits to hear from the lost node's
    daemon until TCP gives up on it (a quarter of an hour); but it ends the job
    itself once its keepalive finds that daemon silent, which the launch lines
    bound (launchers.py): wait for that first, then abort all the same."""
    from mpi4py import MPI

    if MPI.Get_library_version().startswith("Open MPI"):
        logger.info("waiting for mpirun to end the job, its keepalive having found the node lost")
        # Its SIGTERM is the end we wait for: no traceback from our handlers.
        with contextlib.suppress(ValueError):  # only the main thread may say so
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep(OPEN_MPI_NOTICES_A_LOST_NODE + LEAVE_GRACE)
    abort_job(world, status)


def said_by_rank_0(message: str, rank: int | None) -> None:
    """Every rank met the same mistake: rank 0 (``rank`` None: no launcher
    started this process) says it once.  The others give its line time to
    reach the terminal before they exit: mpirun, seeing one exit non-zero,
    kills the rest (Open MPI at once)."""
    if rank in (None, SCHEDULER_RANK):
        report(message)
    else:
        time.sleep(LINE_GRACE)


@contextlib.contextmanager
def faults_end_the_job(world: Any) -> Iterator[None]:
    """A fault of ours in the block ends the job, logged: the other ranks would
    wait for this one forever."""
    rank = world.rank  # asked now: by the fault, MPI may be finalised
    try:
        yield
    except Exception:
        logger.exception("rank %d failed", rank)
        abort_job(world, 1)


def abort_job(world: Any, status: int) -> NoReturn:
    """MPI_Abort: the launcher ends every rank, once it has the lines this rank
    wrote.  MPICH's returns, though (the launcher kills this rank a moment
    later): end here, as if it had not."""
    from mpi4py import MPI

    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(LINE_GRACE)
    if not MPI.Is_finalized():  # a fault in MPI_Finalize leaves no MPI to abort
        world.Abort(status)
    os._exit(status)


@contextlib.contextmanager
def hard_exit_ends_the_job(
    world: Any, hosts: Sequence[str], record: Callable[[int], None], driver: int = DRIVER_RANK
) -> Iterator[None]:
    """Make the script's ``os._exit(n)`` end the job with status n, as it ends
    ``python script.py``: mpirun would see the driver vanish, kill the other
    ranks and report a signal.  ``record`` is given the status (the job's
    end, on the driver's side), then the other ranks are told, and exit with
    it; a forked child's ``os._exit`` stays the plain one."""
    plain_exit, driver_pid = os._exit, os.getpid()

    def end_job_and_exit(status: int) -> None:
        if os.getpid() == driver_pid:
            sys.stdout.flush()
            sys.stderr.flush()
            # The status is known and the end bounded: the driver's watchers, seeing
            # the scheduler close meanwhile, must not turn this exit into another.
            with contextlib.suppress(ValueError):  # only the main thread may set it
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            record(status)
            send_to_all(world, status, TAG_END)
            exit_together(world, status, hosts, driver)
            exit_past_python(status)
        plain_exit(status)

    os._exit = end_job_and_exit
    try:
        yield
    finally:
        os._exit = plain_exit
