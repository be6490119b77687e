"""The end of a rank under MPI, bounded: every rank done with its role
finalises MPI together with the others; one lost is named, and the job
ends without it; a fault of ours, or the script's os._exit, ends the job
rather than leave the other ranks waiting."""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from start_daskmpi.errors import report
from start_daskmpi.mpi.world import (
    LEAVE_TIMEOUT,
    TAG_END,
    TAG_LEFT,
    alone,
    done_within,
    send_to_all,
)
from start_daskmpi.plan.launchers import OPEN_MPI_NOTICES_A_LOST_NODE
from start_daskmpi.plan.layout import DRIVER_RANK, SCHEDULER_RANK, format_ranks

logger = logging.getLogger("start_daskmpi")

LEAVE_GRACE = 10.0  # seconds the other ranks wait past the driver, which names the lost
# Seconds for the launcher to forward a rank's last lines before it ends the
# job: it drops what it has not read by then (MPICH's hydra, under load).
LINE_GRACE = 1.0


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
    the job with ``status`` (abort_without_lost_ranks).  ``hosts``: each
    rank's node; ``driver``: the driver's rank.  Whether MPI was finalised."""
    if alone(world):
        return True
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
            abort_without_lost_ranks(world, status)
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


def abort_without_lost_ranks(world: Any, status: int) -> NoReturn:
    """End the job now with ``status``, where some ranks cannot be reached (their
    node lost, its link cut).  MPICH's and Slurm's launchers obey MPI_Abort at
    once.  Open MPI's mpirun, told to abort, waits to hear from the lost node's
    daemon until TCP gives up on it (a quarter of an hour); but it ends the job
    itself once its keepalive finds that daemon silent, which the launch lines
    bound (plan/launchers.py): wait for that first, then abort all the same."""
    from mpi4py import MPI

    if MPI.Get_library_version().startswith("Open MPI"):
        logger.info("waiting for mpirun to end the job, its keepalive having found the node lost")
        # Its SIGTERM is the end we wait for: no traceback from our handlers.
        with contextlib.suppress(ValueError):  # only the main thread may say so
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep(OPEN_MPI_NOTICES_A_LOST_NODE + LEAVE_GRACE)
    abort(world, status)


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
        abort(world, 1)


def abort(world: Any, status: int) -> NoReturn:
    """MPI_Abort: the launcher ends every rank, once it has the lines this rank
    wrote.  MPICH's returns, though (the launcher kills this rank a moment
    later): end here, as if it had not."""
    sys.stdout.flush()
    sys.stderr.flush()
    if not alone(world):
        from mpi4py import MPI

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
