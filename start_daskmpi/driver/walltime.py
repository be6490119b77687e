"""The job's end, as its batch system gives it, and the driver's stop a margin
before it: the script is interrupted as SIGTERM does (its ``finally`` blocks
run), JupyterLab stops and the job ends with one line that says why, instead
of the batch system killing every rank mid-write.

Slurm exports the end (``SLURM_JOB_END_TIME``, since 21.08), Cobalt too
(``COBALT_ENDTIME``); PBS Pro gives the start and the walltime to ``qstat``.
Elsewhere, ``--walltime`` counts from the launcher's start.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import psutil

from start_daskmpi.driver.script import Terminated, main_interrupted_when
from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.values import parse_clock

logger = logging.getLogger("start_daskmpi")

QSTAT_TIMEOUT = 10.0  # seconds PBS's qstat may take to answer, once, at the start
PBS_TIME = "%a %b %d %H:%M:%S %Y"  # qstat's stime: "Fri Nov 27 20:00:00 2026"


@dataclass(frozen=True)
class Deadline:
    at: float  # seconds since the epoch
    source: str  # who said so, for the user: "Slurm", "--walltime", ...

    def describe(self) -> str:
        return f"{time.strftime('%H:%M:%S', time.localtime(self.at))} ({self.source})"


class WalltimeReached(Terminated):
    """Raised in the driver, as SIGTERM is, a margin before the job's end."""


def pbs_deadline(job_id: str, qstat: Callable[[list[str]], str]) -> float | None:
    """Start plus walltime of a PBS Pro job, as ``qstat -f -F json`` shows them."""
    try:
        (job,) = json.loads(qstat(["qstat", "-f", "-F", "json", job_id]))["Jobs"].values()
        started = time.mktime(time.strptime(job["stime"], PBS_TIME))
        return started + parse_clock(job["Resource_List"]["walltime"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError) as e:
        logger.info("no walltime from PBS's qstat for %s: %s", job_id, e)
        return None


def run_qstat(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        raise OSError(f"{command[0]} not found")
    return subprocess.run(command, capture_output=True, text=True, check=True,
                          timeout=QSTAT_TIMEOUT).stdout


def deadline(
    walltime: float | None, started: float, environ: Mapping[str, str],
    qstat: Callable[[list[str]], str] = run_qstat,
) -> Deadline | None:
    """When the job ends: ``--walltime`` from ``started``, else what the batch
    system says; None where nothing says."""
    if walltime is not None:
        return Deadline(started + walltime, "--walltime")
    for variable, system in (("SLURM_JOB_END_TIME", "Slurm"), ("COBALT_ENDTIME", "Cobalt")):
        if environ.get(variable, "").isdigit():
            return Deadline(float(environ[variable]), system)
    if environ.get("PBS_JOBID"):
        at = pbs_deadline(environ["PBS_JOBID"], qstat)
        return Deadline(at, "PBS") if at is not None else None
    return None


@functools.cache  # asked by the preflight and by the driver: one qstat a job
def deadline_of_this_job(walltime: float | None) -> Deadline | None:
    """This job's end, ``walltime`` (--walltime) counted from this process's start."""
    return deadline(walltime, psutil.Process().create_time(), os.environ)


def check_time_left(end: Deadline | None, margin: float) -> None:
    """A job that would be stopped as it starts: one line before any server starts."""
    if end is not None and stop_at(end, margin) <= time.time():
        raise LaunchError(
            f"the job's walltime ends at {end.describe()}, within --walltime-margin "
            f"({margin:g} s): lower the margin, or ask for a longer job"
        )


def stop_at(end: Deadline, margin: float) -> float:
    """When the driver stops the job: ``margin`` seconds before its end."""
    return end.at - margin


@contextlib.contextmanager
def stopped_before_walltime(end: Deadline | None, margin: float) -> Iterator[None]:
    """Interrupt the main thread, as SIGTERM does, ``margin`` seconds before
    ``end``; the interrupt says why (WalltimeReached)."""
    if end is None:
        yield
        return

    def stop_time_came(done: threading.Event) -> bool:
        return not done.wait(max(0.0, stop_at(end, margin) - time.time()))

    def why() -> WalltimeReached:
        return WalltimeReached(
            f"the job's walltime ends at {end.describe()}, in {margin:g} s (--walltime-margin)"
        )

    with main_interrupted_when(stop_time_came, why, "walltime"):
        yield
