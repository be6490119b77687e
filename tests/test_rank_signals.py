"""A launcher's SIGUSR1 to a rank's process group: the rank takes it, the
processes it started do not die of it.  Each case runs in a process of its
own, in a process group of its own, which the signal is sent to."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from launch import ROOT

# The rank: what cli.main does first, a handler standing in for MPICH's (or
# the roles' SIGTERM handler), then a child, as the nanny starts its workers.
RANK = """
import os, signal, subprocess, sys, time
from start_daskmpi.mpi.launcher_signals import keep_sigusr1_from_children, take_sigusr1

keep_sigusr1_from_children(os.environ)
take_sigusr1(os.environ)
taken = []
signal.signal(signal.SIGUSR1, lambda *_: taken.append("SIGUSR1"))
signal.signal(signal.SIGTERM, lambda *_: taken.append("SIGTERM"))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
time.sleep(0.5)  # the child runs
os.killpg(0, signal.SIGUSR1)  # as the launcher does
deadline = time.monotonic() + 10
while not taken and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.5)  # a child that dies of it has died by now
print(taken, child.poll())
child.kill()
child.wait()
"""

LAUNCHERS = {
    "MPICH's hydra": {"PMI_SIZE": "4", "PMI_RANK": "2"},
    "Open MPI": {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "2"},
    "none": {},
}


def run_rank(launcher: str) -> str:
    env = {k: v for k, v in os.environ.items()
           if not any(k in pair for pair in LAUNCHERS.values())}
    env.update(LAUNCHERS[launcher], PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", RANK], env=env, capture_output=True, text=True,
        timeout=60, start_new_session=True,  # its own group: the signal stays there
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("launcher, taken", [
    ("MPICH's hydra", "SIGUSR1"),  # left to the handler the MPI library installs
    ("Open MPI", "SIGTERM"),  # the rank ends in order, as on a SIGTERM
])
def test_the_rank_takes_the_launchers_sigusr1_and_its_children_live_on(launcher, taken):
    assert run_rank(launcher) == f"['{taken}'] None"


def test_outside_a_launcher_nothing_changes():
    """Run by hand, the process and its children keep SIGUSR1's defaults:
    here the child dies of it."""
    assert run_rank("none") == "['SIGUSR1'] -10"
