"""Launch lines: built in one place, for --plan and the batch script alike."""
from __future__ import annotations

import shlex

import pytest

from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.launchers import MPICH, OPEN_MPI, SLURM, launcher_here
from start_daskmpi.plan.layout import Node
from start_daskmpi.plan.options import parse_args
from start_daskmpi.plan.report import launch_report

PROGRAMS = {"mpiexec": "/opt/mpi/bin/mpiexec", "srun": "/usr/bin/srun"}


def which(found):
    return lambda name: found.get(name)


@pytest.mark.parametrize("said, expected", [
    ("mpiexec (OpenRTE) 4.1.6", OPEN_MPI),
    ("mpirun (Open MPI) 5.0.8", OPEN_MPI),
    ("HYDRA build details:\n    Version: 4.3.0", MPICH),
    ("Intel(R) MPI Library for Linux* OS, Version 2021.10", MPICH),
])
def test_the_mpi_on_path_is_told_by_what_it_says(said, expected):
    launcher, program = launcher_here({}, which({"mpiexec": "/opt/mpi/bin/mpiexec"}),
                                      lambda p: said)
    assert launcher is expected and program == "/opt/mpi/bin/mpiexec"


def test_mpirun_when_there_is_no_mpiexec():
    launcher, program = launcher_here({}, which({"mpirun": "/x/mpirun"}), lambda p: "Open MPI")
    assert (launcher, program) == (OPEN_MPI, "/x/mpirun")


def test_srun_in_a_slurm_job_that_has_it():
    assert launcher_here({"SLURM_JOB_ID": "7"}, which(PROGRAMS), lambda p: "") == (SLURM, "srun")
    # a Slurm job without srun on PATH uses the MPI's own launcher
    found = launcher_here({"SLURM_JOB_ID": "7"}, which({"mpiexec": "/m"}), lambda p: "HYDRA")
    assert found == (MPICH, "/m")


def test_no_launcher_is_one_line():
    with pytest.raises(LaunchError, match="no mpiexec or mpirun on PATH: load your MPI module"):
        launcher_here({}, which({}), lambda p: "")


def test_the_batch_scripts_command_is_the_plans(monkeypatch):
    monkeypatch.setattr(
        "start_daskmpi.plan.launchers.launcher_here", lambda environ: (MPICH, PROGRAMS["mpiexec"])
    )
    args = parse_args(["--launch-command", "--nodes", "2", "--hostfile", "/tmp/my hosts"])
    line = launch_report(args, Node("n", ("0", "1", "2", "3"), 64, 2**30), {})
    assert shlex.split(line) == [
        "/opt/mpi/bin/mpiexec", "-n", "12", "--ppn", "6", "--hostfile", "/tmp/my hosts",
    ]
    cpu = parse_args(["--launch-command", "--nodes", "2", "-np", "8", "--hostfile", "h"])
    assert shlex.split(launch_report(cpu, Node("n", (), 8, 2**30), {}))[1:5] == [
        "-n", "8", "--ppn", "4",
    ]
    monkeypatch.setattr(
        "start_daskmpi.plan.launchers.launcher_here", lambda environ: (OPEN_MPI, "/ompi/bin/mpirun")
    )
    environ = {"PATH": "/bin", "DASK_DISTRIBUTED__WORKER__DAEMON": "False", "HOME": "/h",
               "START_DASKMPI_X": "1"}
    assert shlex.split(launch_report(args, Node("n", ("0",), 64, 2**30), environ)) == [
        "/ompi/bin/mpirun", "-np", "6", "-npernode", "3", "--hostfile", "/tmp/my hosts",
        "--bind-to", "none",
        # A node lost: mpirun ends the job after 30 s of silence and 6 probes 5 s apart.
        "--mca", "oob_tcp_keepalive_time", "30", "--mca", "oob_tcp_keepalive_intvl", "5",
        "--mca", "oob_tcp_keepalive_probes", "6",
        # Open MPI 4, signalled, gives the ranks 10 s (not 1) to end.
        "--mca", "odls_base_sigkill_timeout", "10",
        "-x", "PATH", "-x", "DASK_DISTRIBUTED__WORKER__DAEMON", "-x", "START_DASKMPI_X",
    ]


def test_hostfile_only_describes_a_planned_job():
    with pytest.raises(LaunchError, match="add --plan"):
        parse_args(["--hostfile", "h", "job.py"])
