"""daskmpi_job_gpu.sh, run as each scheduler would run it: a node file listing
this machine, the scheduler's variables, and the real mpirun; loopback only."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from launch import NEEDS_MPIRUN, ROOT, SCRIPTS, launch, mpirun, reap, report, tracked_environment
from start_daskmpi.plan.gpus import count_gpus
from start_daskmpi.plan.layout import format_ranks

HOST = socket.gethostname().split(".")[0]
GPUS = count_gpus() or 2  # the node's, or 2 simulated where it has none


def scheduler_environment(scheduler: str, nodefile: Path) -> dict[str, str]:
    if scheduler == "Cobalt":
        return {"COBALT_NODEFILE": str(nodefile), "COBALT_JOBID": "4242"}
    if scheduler == "PBS":
        return {"PBS_NODEFILE": str(nodefile), "PBS_JOBID": "4242.pbs", "PBS_O_WORKDIR": str(ROOT)}
    return {"SLURM_JOB_NODELIST": socket.gethostname(), "SLURM_JOB_ID": "4242",
            "SLURM_SUBMIT_DIR": str(ROOT)}


@pytest.mark.timeout(150)
@NEEDS_MPIRUN
@pytest.mark.parametrize("scheduler", ["Cobalt", "PBS", "Slurm"])
def test_the_batch_script_plans_and_runs_the_job(tmp_path, scheduler):
    nodefile = tmp_path / "nodes"
    nodefile.write_text(f"{socket.gethostname()}\n" * 2)  # PBS lists a node once per chunk
    bin_dir = str(Path(mpirun()).parent)  # the venv's mpirun, as DASKMPI_ENV would give
    env = {
        **scheduler_environment(scheduler, nodefile),
        "PATH": f"{Path(sys.executable).parent}:{bin_dir}:{os.environ['PATH']}",
        "DASKMPI_GPUS_PER_NODE": str(GPUS),
        "DASKMPI_OPTIONS": f"--interface lo --log-dir {tmp_path / 'logs'}",
    }
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("echo 'the venv is active'\n")
    env["DASKMPI_ENV"] = str(venv)
    script = [str(SCRIPTS / "report_cluster.py"), "0"]
    if scheduler == "PBS":  # qsub passes no arguments to a job script
        env["DASKMPI_SCRIPT"] = " ".join(script)
        script = []
    run = launch(script, cwd=ROOT, env=env, timeout=120,
                 launcher=[shutil.which("bash"), str(ROOT / "daskmpi_job_gpu.sh")])
    assert run.rc == 0 and run.leftovers == [] and "Traceback" not in run.output, run
    assert run.stdout.startswith("the venv is active\n")
    assert f"{scheduler} job on 1 node(s) ({socket.gethostname()}), {GPUS} GPU(s) a node" in (
        run.stdout
    )
    assert f"{GPUS + 2} ranks on 1 node(s) of {GPUS} GPU(s)" in run.stdout  # the plan
    gpus = ", ".join(str(i) for i in range(GPUS))
    workers = f"rank(s) {format_ranks(range(2, GPUS + 2))} workers on GPU(s) {gpus}"
    assert f"node0: rank 0 scheduler; rank 1 driver; {workers}" in run.stdout
    seen = report(run)
    assert seen["workers"] == [f"{HOST}-gpu{i}" for i in range(GPUS)]
    assert sorted(seen["devices"].values()) == [str(i) for i in range(GPUS)]
    assert "Successfully exited" in run.stdout


def batch(tmp_path: Path, launcher: str, script: list[str]):
    """The batch script with DASKMPI_LAUNCHER standing in for the MPI launcher:
    it runs start_daskmpi here, without MPI, as a local cluster."""
    env = {
        **scheduler_environment("Slurm", tmp_path / "nodes"),
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DASKMPI_GPUS_PER_NODE": "0",
        "DASKMPI_OPTIONS": f"--interface lo --log-dir {tmp_path / 'logs'}",
        "DASKMPI_LAUNCHER": launcher,
    }
    run = launch(script, cwd=tmp_path, env=env, timeout=120,
                 launcher=[shutil.which("bash"), str(ROOT / "daskmpi_job_gpu.sh")])
    assert list(tmp_path.glob(".daskmpi_status.*")) == [], "the status file stays behind"
    return run


@pytest.mark.timeout(150)
def test_the_batch_script_keeps_the_scripts_status_where_the_launcher_says_0(tmp_path):
    """Open MPI's mpirun exits 0 when it loses a node, whatever the script did:
    the driver's own word (--status-file) decides."""
    failing = tmp_path / "fails.py"
    failing.write_text("raise SystemExit(3)\n")
    says_zero = "sh -c '\"$@\"; exit 0' launcher"
    run = batch(tmp_path, says_zero, [str(failing)])
    assert run.rc == 3 and "Exited with status 3" in run.stdout, run


@pytest.mark.timeout(150)
def test_the_batch_script_fails_a_job_whose_driver_never_said_how_it_ended(tmp_path):
    run = batch(tmp_path, "true", [str(SCRIPTS / "report_cluster.py")])
    assert run.rc == 1, run
    assert "daskmpi_job_gpu.sh: error: the job ended before its driver could tell how " \
        "(a node lost?): see the MPI launcher's lines above" in run.stdout, run


@pytest.mark.timeout(150)
def test_the_batch_script_keeps_the_scripts_arguments_out_of_the_output(tmp_path):
    """The job's output file may be readable by others: the 'running:' line
    names the script, not what it was given."""
    quiet = tmp_path / "quiet.py"
    quiet.write_text("import sys\nassert sys.argv[1:] == ['--token', 's3cret']\n")
    run = batch(tmp_path, "sh -c '\"$@\"' launcher", [str(quiet), "--token", "s3cret"])
    assert run.rc == 0, run
    assert f"--status-file {tmp_path}/.daskmpi_status." in run.stdout
    assert f" {quiet} ...\n" in run.stdout and "s3cret" not in run.output, run


@pytest.mark.timeout(150)
def test_the_batch_script_makes_the_jobs_output_file_private(tmp_path):
    """Batch systems write the job's output with the submitter's umask, often
    readable by all; it gets JupyterLab's token and the cluster's addresses."""
    output = tmp_path / "job.out"
    output.touch(mode=0o644)
    output.chmod(0o644)
    token, env = tracked_environment({
        **scheduler_environment("Slurm", tmp_path / "nodes"), "SLURM_SUBMIT_DIR": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DASKMPI_GPUS_PER_NODE": "0", "DASKMPI_OPTIONS": f"--log-dir {tmp_path / 'logs'}",
        "DASKMPI_LAUNCHER": "sh -c '\"$@\"' launcher",
    })
    script = tmp_path / "done.py"
    script.write_text("print('DONE')\n")
    with output.open("w") as out:
        done = subprocess.run(["bash", str(ROOT / "daskmpi_job_gpu.sh"), str(script)],
                              stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                              timeout=120, start_new_session=True)
    assert reap(token) == []
    assert done.returncode == 0, output.read_text()
    assert stat.S_IMODE(output.stat().st_mode) == 0o600 and "DONE" in output.read_text()
