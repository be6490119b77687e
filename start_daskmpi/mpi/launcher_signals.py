"""SIGUSR1, which launchers send to a rank's whole process group, for the rank
alone.

Launchers signal a rank's process group, and its other members
(multiprocessing's resource tracker, the worker processes, JupyterLab and its
kernels, the script's own children) die of a SIGUSR1.  Launchers send it:
MPICH's hydra, under -disable-auto-cleanup, to tell the MPI library of a
failed rank (the nanny's workers, killed, would restart empty); Open MPI's
mpirun forwards it from daskmpi_job_gpu.sh.  So the rank keeps it blocked,
which every process it starts inherits, and a thread of its own takes it.

Under Open MPI that thread turns it into a SIGTERM to the rank: Open MPI 5's
mpirun answers SIGTERM (a walltime, ``qdel``, ``scancel``) by killing every
rank at once, so no ``finally`` of the script would run and JupyterLab would
not stop; SIGUSR1 it forwards and lets the ranks end, each answering SIGTERM
by ending in order.  Under other launchers the thread leaves it to the handler
the MPI library installs (MPICH's, for its failure notices)."""
from __future__ import annotations

import signal
import threading
from collections.abc import Mapping

from start_daskmpi.mpi.world import OPEN_MPI_VARIABLES, launcher_world

LAUNCHERS_SIGNAL = signal.SIGUSR1


def keep_sigusr1_from_children(environ: Mapping[str, str]) -> None:
    """Under an MPI launcher, block it.  Call first, in the main thread: the
    processes and threads started later (MPI's own among them) inherit the
    block; then take_sigusr1, so that none but our thread takes the signal."""
    if launcher_world(environ) is not None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {LAUNCHERS_SIGNAL})


def take_sigusr1(environ: Mapping[str, str]) -> None:
    """Start the thread that takes it, under an MPI launcher: after any fork
    of this process (the nanny's fork server), which would not keep it."""
    if launcher_world(environ) is None:
        return
    under_open_mpi = OPEN_MPI_VARIABLES[0] in environ
    take = _relay_as_sigterm if under_open_mpi else _leave_to_the_mpi_library
    threading.Thread(target=take, name="SIGUSR1 of the launcher", daemon=True).start()


def _relay_as_sigterm() -> None:
    main = threading.main_thread().ident
    while True:
        signal.sigwait({LAUNCHERS_SIGNAL})
        # To the main thread, not the process, which would let this thread take
        # it: only a signal to the main thread wakes its blocking calls, where
        # Python runs the handler (the script's sleep, a wait on the cluster).
        signal.pthread_kill(main, signal.SIGTERM)


def _leave_to_the_mpi_library() -> None:
    # The one thread the kernel can deliver it to: the process's disposition
    # (MPICH's handler, once MPI_Init installs it) runs here.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {LAUNCHERS_SIGNAL})
    threading.Event().wait()
