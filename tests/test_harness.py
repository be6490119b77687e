"""The harness's own checks, proved able to fail: a check that never sees what
it looks for would pass every broken run."""
from __future__ import annotations

import subprocess
import sys

from launch import (
    launcher_reported_kill,
    our_lines,
    reap,
    run_processes,
    tracked_environment,
)


def test_the_leftover_check_sees_a_planted_process_and_reaps_it():
    token, env = tracked_environment(None)
    planted = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        assert [process.pid for process in run_processes(token)] == [planted.pid]
        left = reap(token, grace=0)
        assert len(left) == 1 and left[0].startswith(f"{planted.pid} ")
        assert planted.poll() is not None and run_processes(token) == []
    finally:
        planted.kill()  # this test's own child, by its pid
        planted.wait()


def test_the_kill_check_needs_the_launchers_own_line():
    """The script prints the scheduler's pid, and Dask may log 'Killed' later:
    neither is the launcher naming the killed process."""
    script_only = "SCHEDULER 4242\nREADY\nworker Killed by the nanny\nsignal 9\n"
    assert not launcher_reported_kill(script_only, 4242)
    for mpich in ("=   PID 4242 RUNNING AT vm\n=   EXIT CODE: 9\n",
                  "=   RANK 0 PID 4242 RUNNING AT vm\n=   KILLED BY SIGNAL: 9 (Killed)\n"):
        assert launcher_reported_kill(mpich, 4242) and not launcher_reported_kill(mpich, 424)
    assert not launcher_reported_kill("=   PID 4242 RUNNING AT vm\n=   EXIT CODE: 1\n", 4242)
    open_mpi = ("mpirun noticed that process rank 0 with PID 4242 on node vm exited on "
                "signal 9 (Killed).\n")
    assert launcher_reported_kill(open_mpi, 4242)


def test_our_lines_survive_the_nul_open_mpi_leaves_before_them():
    stderr = ("MPI_ABORT was invoked on rank 0\n-----\n"
              "\0start_daskmpi: error: lost the driver (rank 1 on n1): the job ends\n")
    assert our_lines(stderr) == [
        "start_daskmpi: error: lost the driver (rank 1 on n1): the job ends"
    ]
