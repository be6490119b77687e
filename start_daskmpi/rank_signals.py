"""SIGUSR1 as a gentle SIGTERM, for Open MPI 5.

Open MPI 5's mpirun answers SIGTERM (a walltime, ``qdel``, ``scancel``) by
killing every rank at once: no ``finally`` of the script runs, JupyterLab does
not stop.  SIGUSR1 it forwards to the ranks and lets them end.
daskmpi_job_gpu.sh turns the batch system's SIGTERM into a SIGUSR1 to it, and
each rank turns that into a SIGTERM to itself, which every role answers by
ending in order.  Not under other launchers: MPICH's hydra forwards SIGTERM
gently, and sends SIGUSR1 itself, to tell the MPI library of a failed rank.

Launchers signal a rank's whole process group.  Its other members
(multiprocessing's resource tracker, the worker processes, JupyterLab and its
kernels, the script's own children) would die of a SIGUSR1, so the rank keeps
it blocked, which every process it starts inherits, and a thread of its own
waits for it."""
from __future__ import annotations

import signal
import threading
from collections.abc import Mapping

GENTLE_SIGTERM = signal.SIGUSR1
OPEN_MPI_RANK = "OMPI_COMM_WORLD_SIZE"  # set by Open MPI's launcher for each rank


def take_sigusr1_as_sigterm(environ: Mapping[str, str]) -> None:
    """Under Open MPI's launcher.  Call first, in the main thread: threads
    started later (MPI's own among them) inherit the block, and none may take
    the signal instead."""
    if OPEN_MPI_RANK not in environ:
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {GENTLE_SIGTERM})
    threading.Thread(target=_relay, name="SIGUSR1 as SIGTERM", daemon=True).start()


def _relay() -> None:
    main = threading.main_thread().ident
    while True:
        signal.sigwait({GENTLE_SIGTERM})
        # To the main thread, not the process, which would let this thread take
        # it: only a signal to the main thread wakes its blocking calls, where
        # Python runs the handler (the script's sleep, a wait on the cluster).
        signal.pthread_kill(main, signal.SIGTERM)
