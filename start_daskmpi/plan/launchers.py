"""The launch command of each MPI launcher, built in this one place: --plan
prints them all, and daskmpi_job_gpu.sh asks for the one that fits its job
(--launch-command)."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from start_daskmpi.errors import LaunchError

# What a rank needs of the caller's environment: its Python and Dask's settings.
CARRIED = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX")
CARRIED_PREFIXES = ("DASK_", "START_DASKMPI_")


def carried_variables(environ: Mapping[str, str]) -> list[str]:
    """The names of the caller's variables a launcher must pass to other nodes."""
    return [name for name in CARRIED if name in environ] + sorted(
        name for name in environ if name.startswith(CARRIED_PREFIXES)
    )


# Open MPI's mpirun learns that a node is lost (its daemon silent, its link cut)
# from TCP keepalive on its connection to that node's daemon, by default after
# 300 s idle and 9 probes 20 s apart; then it ends the job.  Told sooner: after
# this idle time, and probes this far apart, this many unanswered.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 30, 5, 6
OPEN_MPI_NOTICES_A_LOST_NODE = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES  # seconds
# Open MPI 4's mpirun, told SIGTERM, forwards it and kills the ranks a second
# later (measured: 1 s of the script's finally ran); this many seconds instead
# (measured with 10: 9 s).  Open MPI 5 has no such setting, and ignores it.
OPEN_MPI_4_SIGKILL_DELAY = 10


@dataclass(frozen=True)
class Launcher:
    """How one kind of launcher is told: this many ranks, so many a node, these
    hosts; each rank free to use the node's every core (a worker runs threads);
    the caller's environment on every node."""

    name: str  # as --plan shows it
    program: str  # the command, found on PATH
    total: str  # its option for the rank count
    per_node: str  # its option for ranks a node
    hostfile: str | None  # its option for the node file; None: the batch system says
    unbound: tuple[str, ...] = ()  # what keeps it from binding each rank to one core
    bounded: tuple[str, ...] = ()  # what makes it end the job within a bound when a node is lost
    gentle: tuple[str, ...] = ()  # what gives the ranks time to end when it is signalled
    export: str | None = None  # its option for one variable to pass; None: it passes all

    def command(
        self, total: int, per_node: int, hostfile: str | None, variables: Sequence[str] = ()
    ) -> list[str]:
        words = [self.program, self.total, str(total), self.per_node, str(per_node)]
        if hostfile and self.hostfile:
            words += [self.hostfile, hostfile]
        words += self.unbound + self.bounded + self.gentle
        if self.export:
            words += [word for name in variables for word in (self.export, name)]
        return words


OPEN_MPI = Launcher(
    "Open MPI (Cobalt)", "mpirun", "-np", "-npernode", "--hostfile",
    unbound=("--bind-to", "none"), export="-x",
    bounded=tuple(word for name, value in (
        ("oob_tcp_keepalive_time", KEEPALIVE_IDLE),
        ("oob_tcp_keepalive_intvl", KEEPALIVE_INTERVAL),
        ("oob_tcp_keepalive_probes", KEEPALIVE_PROBES),
    ) for word in ("--mca", name, str(value))),
    gentle=("--mca", "odls_base_sigkill_timeout", str(OPEN_MPI_4_SIGKILL_DELAY)),
)
# MPICH's hydra (which binds nothing unless told), Cray's PALS (Polaris, Aurora), Intel MPI
MPICH = Launcher("MPICH, Cray (PBS)", "mpiexec", "-n", "--ppn", "--hostfile")
SLURM = Launcher("Slurm", "srun", "-n", "--ntasks-per-node", None, unbound=("--cpu-bind=none",))
LAUNCHERS = (OPEN_MPI, MPICH, SLURM)


def mpi_version(program: str) -> str:
    done = subprocess.run(
        [program, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return done.stdout + done.stderr


def launcher_here(
    environ: Mapping[str, str],
    which: Callable[[str], str | None] = shutil.which,
    version: Callable[[str], str] = mpi_version,
) -> tuple[Launcher, str]:
    """The launcher for a job here, and its path: srun in a Slurm job that has it,
    else the mpiexec (or mpirun) on PATH, Open MPI's or MPICH's by what it says.
    The path, not the name: Open MPI's mpirun, called by its full path, puts its
    own folder first on the ranks' PATH, where another python3 may be."""
    if environ.get("SLURM_JOB_ID") and which("srun"):
        return SLURM, "srun"
    program = which("mpiexec") or which("mpirun")
    if program is None:
        raise LaunchError(
            "no mpiexec or mpirun on PATH: load your MPI module, or activate the "
            "environment that has one"
        )
    said = version(program)
    return (OPEN_MPI if "Open MPI" in said or "OpenRTE" in said else MPICH), program


def launch_command(
    total: int, per_node: int, hostfile: str | None, environ: Mapping[str, str]
) -> list[str]:
    launcher, program = launcher_here(environ)
    words = launcher.command(total, per_node, hostfile, carried_variables(environ))
    return [program, *words[1:]]
