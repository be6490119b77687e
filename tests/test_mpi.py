"""The launcher under a real mpirun, on CPU, on loopback only.

Every run is bounded by a timeout and reaped afterwards; each test also checks
that the run left no process behind.
"""
from __future__ import annotations

import json
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from launch import LAUNCHER, SCRIPTS, Session, launch, mpirun
from start_daskmpi import count_gpus

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(mpirun() is None, reason="no mpirun: pip install mpich"),
]

HOST = socket.gethostname().split(".")[0]


@pytest.fixture
def loopback(tmp_path):
    """Options that keep a run on loopback, its files in the test's folder, and
    its workers on the CPU, as on CI, even on a machine with GPUs."""
    return [
        "--interface", "lo",
        "--log-dir", str(tmp_path / "logs"),
        "--local-directory", str(tmp_path / "scratch"),
        "--gpus-per-node", "0",
    ]


def our_lines(stream: str) -> list[str]:
    """Our own lines, without the notices Open MPI adds when a rank exits non-zero."""
    return [line for line in stream.splitlines() if line.startswith("start_daskmpi:")]


def report(run) -> dict:
    (line,) = [line for line in run.stdout.splitlines() if line.startswith("REPORT ")]
    return json.loads(line.removeprefix("REPORT "))


def assert_clean(run, rc=0):
    assert run.rc == rc, run
    assert run.leftovers == [], run
    assert "Traceback" not in run.output, run


@pytest.mark.timeout(120)
def test_script_runs_on_every_worker_and_exits_0(loopback):
    run = launch([*loopback, str(SCRIPTS / "report_cluster.py"), "0", "--flag"], np=4)
    assert_clean(run)
    seen = report(run)
    assert seen["workers"] == [f"{HOST}-cpu0", f"{HOST}-cpu1"]
    assert seen["same_scheduler"] and seen["answer"] == 42 and seen["name"] == "__main__"
    assert seen["argv"] == [str(SCRIPTS / "report_cluster.py"), "0", "--flag"]
    assert seen["path0"] == str(SCRIPTS)
    lines = run.stdout.splitlines()
    expected_order = [
        "Starting the scheduler", "Scheduler address: tls://127.0.0.1:", "Starting the workers",
        "Client status: <Client: 'tls://127.0.0.1:", "To connect to the Dask dashboard",
        "    ssh -t -L ", "To open the Dask dashboard, go to:", "    http://localhost:",
        "REPORT ", "Code ran successfully.", "Successfully exited",
    ]
    positions = [
        next(i for i, line in enumerate(lines) if line.startswith(s)) for s in expected_order
    ]
    assert positions == sorted(positions), run.stdout
    assert "processes=2 threads=" in run.stdout
    assert run.stderr == "", run


@pytest.mark.timeout(120)
def test_exit_status_of_the_script_is_mpiruns(loopback):
    run = launch([*loopback, str(SCRIPTS / "report_cluster.py"), "3"], np=3)
    assert_clean(run, rc=3)
    assert "Code failed with exit status 3." in run.stdout


@pytest.mark.timeout(120)
def test_raising_script_ends_every_rank_quickly(loopback, tmp_path):
    marker = tmp_path / "raised_at"
    script = tmp_path / "raise_later.py"
    stamp = f"import time; open({str(marker)!r}, 'w').write(repr(time.time()))"
    source = (SCRIPTS / "raise_error.py").read_text()
    script.write_text(source.replace("def main():", f"def main():\n    {stamp}"))
    run = launch([*loopback, str(script)], np=4)
    ended = time.time()
    assert run.rc not in (0, None), run
    assert run.leftovers == [], run
    assert ended - float(marker.read_text()) < 15, run
    assert run.stderr.count("Traceback (most recent call last)") == 1, run
    assert "ValueError: boom from the script, after 0.25" in run.stderr
    assert f'File "{script}", line' in run.stderr and "runpy" not in run.stderr


@pytest.mark.timeout(120)
@pytest.mark.skipif(0 < count_gpus() < 2, reason="fewer real GPUs than simulated ones")
@pytest.mark.parametrize("nanny", ["--nanny", "--no-nanny"])
def test_simulated_gpus_give_each_worker_its_own_device(loopback, nanny):
    script = str(SCRIPTS / "report_cluster.py")
    run = launch([*loopback, "--gpus-per-node", "2", nanny, script], np=4)
    assert_clean(run)
    seen = report(run)
    assert seen["workers"] == [f"{HOST}-gpu0", f"{HOST}-gpu1"]
    assert sorted(seen["devices"].values()) == ["0", "1"]
    assert seen["resources"] == ["{'GPU': 1}", "{'GPU': 1}"]


@pytest.mark.timeout(120)
@pytest.mark.skipif(count_gpus() > 1, reason="needs one GPU or none")
def test_rank_without_a_gpu_idles_and_says_what_fits(loopback):
    run = launch([*loopback, "--gpus-per-node", "1", str(SCRIPTS / "report_cluster.py")], np=4)
    assert_clean(run)
    assert report(run)["workers"] == [f"{HOST}-gpu0"]
    (warning,) = run.stderr.splitlines()
    assert "1 rank(s) on" in warning and "(ranks 3)" in warning and "-np 3 fits" in warning


@pytest.mark.timeout(120)
def test_without_mpirun_a_local_cluster_runs_the_script(tmp_path):
    run = launch(
        ["--log-dir", str(tmp_path / "logs"), "--gpus-per-node", "0",
         str(SCRIPTS / "report_cluster.py"), "4"]
    )
    assert_clean(run, rc=4)
    seen = report(run)
    assert seen["workers"] and all(name.startswith(f"{HOST}-cpu") for name in seen["workers"])
    assert seen["same_scheduler"] and seen["answer"] == 42
    assert "Scheduler address: tls://127.0.0.1:" in run.stdout


@pytest.mark.timeout(60)
def test_two_ranks_is_one_clear_error(loopback):
    run = launch([*loopback, str(SCRIPTS / "report_cluster.py")], np=2)
    assert run.rc == 2 and run.leftovers == [], run
    assert run.stdout == ""
    (line,) = our_lines(run.stderr)
    assert line.startswith("start_daskmpi: error: needs at least 3 ranks")
    assert "Traceback" not in run.output


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "args, words",
    [
        (["missing.py"], "script not found: missing.py"),
        (["--bogus", "job.py"], "unrecognized arguments: --bogus"),
        (["--interface", "ib9", "job.py"], "no network interface 'ib9'"),
    ],
)
def test_user_errors_are_one_line_on_one_rank(tmp_path, args, words):
    run = launch(["--log-dir", str(tmp_path / "logs"), *args], np=3, cwd=tmp_path)
    assert run.rc == 2 and run.leftovers == [], run
    (line,) = our_lines(run.stderr)
    assert line.startswith("start_daskmpi: error:") and words in line, run
    assert "Traceback" not in run.output


@pytest.mark.timeout(120)
def test_taken_default_ports_give_way_and_the_banner_says_so(loopback):
    with ExitStack() as stack:
        for port in (8786, 8787):
            sock = stack.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
            except OSError:
                pass  # taken already, which is what this test needs
        run = launch([*loopback, str(SCRIPTS / "report_cluster.py")], np=3)
    assert_clean(run)
    scheduler_port = int(re.search(r"Scheduler address: tls://127.0.0.1:(\d+)", run.stdout)[1])
    dashboard_port = int(re.search(r"http://localhost:(\d+)/status", run.stdout)[1])
    assert scheduler_port != 8786 and dashboard_port != 8787
    assert f"-L {dashboard_port}:localhost:{dashboard_port}" in run.stdout


@pytest.mark.timeout(60)
def test_taken_explicit_port_is_an_error(loopback):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        script = str(SCRIPTS / "report_cluster.py")
        run = launch([*loopback, "--scheduler-port", str(port), script], np=3)
    assert run.rc == 2 and run.leftovers == [], run
    (line,) = our_lines(run.stderr)
    assert f"port {port} of --scheduler-port is already in use" in line


@pytest.mark.timeout(120)
def test_workers_that_never_register_are_named(loopback):
    # Every worker hangs in a preload, before it registers.
    hang = {"DASK_DISTRIBUTED__WORKER__PRELOAD": '["import time; time.sleep(600)"]'}
    run = launch(
        [*loopback, "--startup-timeout", "3", str(SCRIPTS / "report_cluster.py")],
        np=4, env=hang,
    )
    assert run.rc == 1 and run.leftovers == [], run
    assert "2 of 2 workers did not register within 3 s: rank(s) 2-3" in run.stderr, run
    assert f"{HOST}-cpu0, {HOST}-cpu1" in run.stderr


@pytest.mark.timeout(120)
def test_a_worker_that_fails_to_start_ends_the_job_at_once(loopback):
    broken = {"DASK_DISTRIBUTED__WORKER__PRELOAD": '["raise RuntimeError(\'bad preload\')"]'}
    run = launch([*loopback, str(SCRIPTS / "report_cluster.py")], np=3, env=broken)
    assert run.rc == 1 and run.leftovers == [], run
    assert run.seconds < 60, run  # not the 120 s startup timeout
    (line,) = our_lines(run.stderr)
    assert f"worker {HOST}-cpu0 (rank 2) failed: RuntimeError: bad preload" in line, run


@pytest.mark.timeout(60)
def test_more_gpus_than_the_node_has_is_an_error(tmp_path):
    run = launch(
        ["--log-dir", str(tmp_path / "logs"), "--gpus-per-node", "4", "job.py"],
        np=3, env={"CUDA_VISIBLE_DEVICES": "0,1"},
    )
    assert run.rc == 2 and run.leftovers == [], run
    (line,) = our_lines(run.stderr)
    assert "--gpus-per-node 4, but" in line and "has 2 GPU(s) (CUDA_VISIBLE_DEVICES=0,1)" in line


@pytest.mark.timeout(60)
def test_mpi4py_of_another_mpi_is_detected(tmp_path):
    # What each rank sees when mpi4py's MPI is not the mpirun's: a world of one.
    fake = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "0", "PMI_SIZE": "4",
            "PMI_RANK": "0"}
    run = launch(["--log-dir", str(tmp_path / "logs"), str(SCRIPTS / "report_cluster.py")],
                 env=fake)
    assert run.rc == 2 and run.leftovers == [], run
    (line,) = our_lines(run.stderr)
    assert "mpirun started 4 ranks but mpi4py sees 1" in line


@pytest.mark.timeout(120)
def test_scheduler_file_and_logs(loopback, tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    script = tmp_path / "connect.py"
    script.write_text(
        "import sys\nfrom distributed import Client\n"
        "with Client(scheduler_file=sys.argv[1], timeout=30) as c:\n"
        "    print('via file:', len(c.scheduler_info(n_workers=-1)['workers']))\n"
    )
    run = launch(
        [*loopback, "-v", "--scheduler-file", str(scheduler_file), str(script),
         str(scheduler_file)],
        np=4,
    )
    assert_clean(run)
    assert "via file: 2" in run.stdout
    assert "distributed.scheduler - INFO" in run.stderr  # -v: INFO on the terminal
    logs = tmp_path / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        "credentials", "rank0-scheduler.log", "rank1-driver.log", "rank2-worker-process.log",
        "rank2-worker.log", "rank3-worker-process.log", "rank3-worker.log",
    ]
    assert "Register worker" in (logs / "rank0-scheduler.log").read_text()
    assert "Start worker at" in (logs / "rank2-worker-process.log").read_text()
    assert all(p.stat().st_mode & 0o077 == 0 for p in [logs, *logs.iterdir()])


@pytest.mark.timeout(120)
def test_without_verbose_the_terminal_gets_no_info_logs(loopback):
    run = launch([*loopback, str(SCRIPTS / "report_cluster.py")], np=3)
    assert_clean(run)
    assert " - INFO - " not in run.output


@pytest.mark.timeout(120)
@pytest.mark.skipif(
    not (Path(sys.executable).parent / "start-daskmpi").exists(), reason="not pip-installed"
)
def test_console_script_runs_the_same_launcher(loopback):
    command = [str(Path(sys.executable).parent / "start-daskmpi")]
    run = launch([*loopback, str(SCRIPTS / "report_cluster.py")], np=3, launcher=command)
    assert_clean(run)
    assert report(run)["workers"] == [f"{HOST}-cpu0"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_interrupts_the_script_whose_finally_runs(loopback, tmp_path, signum, status):
    marker = tmp_path / "finally_ran"
    script = tmp_path / "long.py"
    script.write_text(
        "import time\n"
        "try:\n"
        "    print('READY', flush=True)\n"
        "    time.sleep(600)\n"
        "finally:\n"
        f"    open({str(marker)!r}, 'w').write('yes')\n"
    )
    with Session([*loopback, str(script)], np=3) as session:
        session.wait_for("READY")
        session.process.send_signal(signum)
        signaled = time.monotonic()
        run = session.finish(timeout=30)
    assert run.rc == status and run.leftovers == [], run
    assert time.monotonic() - signaled < 10, run
    assert marker.read_text() == "yes"
    assert f"Interrupted ({signal.Signals(signum).name}): stopping Dask" in run.stdout


@pytest.mark.timeout(120)
def test_only_this_jobs_credentials_get_in(loopback, tmp_path):
    run = launch([*loopback, str(SCRIPTS / "intruders.py")], np=3)
    assert_clean(run)
    attempts = [line for line in run.stdout.splitlines() if line.startswith("INTRUDER")]
    assert len(attempts) == 3 and all("refused" in line for line in attempts), run.stdout
    credentials = tmp_path / "logs" / "credentials"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in credentials.iterdir()} == {
        "ca.pem": 0o600, "client-cert.pem": 0o600, "client-key.pem": 0o600,
    }


@pytest.mark.timeout(120)
def test_no_tls_runs_plain_tcp(loopback):
    run = launch([*loopback, "--no-tls", str(SCRIPTS / "report_cluster.py")], np=3)
    assert_clean(run)
    assert "Scheduler address: tcp://127.0.0.1:" in run.stdout
    assert report(run)["answer"] == 42


def test_import_has_no_side_effects():
    code = (
        "import sys, start_daskmpi; "
        "assert 'mpi4py.MPI' not in sys.modules; "
        "assert sys.stdout.line_buffering is False"
    )
    subprocess.run([sys.executable, "-c", code], cwd=LAUNCHER.parent, check=True, timeout=60)
