"""The launcher under a real mpirun, on CPU, on loopback only.

Every run is bounded by a timeout and reaped afterwards; each test also checks
that the run left no process behind.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from launch import (
    LAUNCHER,
    LOCAL_WORKER_ORIGIN,
    PACKAGE_PATH,
    RANKS_WORKER_ORIGIN,
    SCRIPTS,
    launch,
    report,
)
from start_daskmpi.mpi.world import done_within
from start_daskmpi.plan.gpus import count_gpus

HOST = socket.gethostname().split(".")[0]


def assert_clean(run, rc=0):
    assert run.rc == rc, run
    assert run.leftovers == [], run
    assert "Traceback" not in run.output, run


@pytest.mark.reliability("clean run")
@pytest.mark.timeout(120)
def test_script_runs_on_every_worker_and_exits_0(loopback, record):
    run = launch([*loopback, str(SCRIPTS / "report_cluster.py"), "0", "--flag"], np=4)
    record(run, "script, mpirun -np 4")
    assert_clean(run)
    seen = report(run)
    assert seen["workers"] == [f"{HOST}-cpu0", f"{HOST}-cpu1"]
    # Each worker process forked by its own rank's fork server, itself a fork of
    # the rank (worker_processes.py), or its rank's child where distributed is
    # too old for one.
    (one, started_one), (other, started_other) = seen["parents"]
    assert started_one == started_other == RANKS_WORKER_ORIGIN and one != other
    assert seen["same_scheduler"] and seen["answer"] == 42 and seen["name"] == "__main__"
    assert seen["argv"] == [str(SCRIPTS / "report_cluster.py"), "0", "--flag"]
    assert seen["path0"] == str(SCRIPTS)
    lines = run.stdout.splitlines()
    expected_order = [
        "Starting the scheduler", "Scheduler address: tls://127.0.0.1:", "Starting the workers",
        "Client status: <Client: 'tls://127.0.0.1:", "To connect to the Dask dashboard",
        "    ssh -o ExitOnForwardFailure=yes -L ", "To open the Dask dashboard, go to:",
        "    http://127.0.0.1:",
        "REPORT ", "Code ran successfully.", "Successfully exited",
    ]
    positions = [
        next(i for i, line in enumerate(lines) if line.startswith(s)) for s in expected_order
    ]
    assert positions == sorted(positions), run.stdout
    assert "processes=2 threads=" in run.stdout
    assert run.stderr == "", run


@pytest.mark.timeout(120)
@pytest.mark.skipif(0 < count_gpus() < 2, reason="fewer real GPUs than simulated ones")
@pytest.mark.parametrize(
    "options, pin",
    [
        (["--nanny"], "CUDA_VISIBLE_DEVICES"),
        (["--no-nanny"], "CUDA_VISIBLE_DEVICES"),
        (["--gpu-vendor", "amd"], "ROCR_VISIBLE_DEVICES"),
        (["--gpu-vendor", "intel"], "ZE_AFFINITY_MASK"),
    ],
)
def test_simulated_gpus_give_each_worker_its_own_device(loopback, options, pin):
    script = str(SCRIPTS / "report_cluster.py")
    run = launch([*loopback, "--gpus-per-node", "2", *options, script], np=4)
    assert_clean(run)
    seen = report(run)
    assert seen["workers"] == [f"{HOST}-gpu0", f"{HOST}-gpu1"]
    assert sorted(seen["pins"].values(), key=str) == [{pin: "0"}, {pin: "1"}]
    assert seen["resources"] == ["{'GPU': 1}", "{'GPU': 1}"]


@pytest.mark.timeout(120)
@pytest.mark.skipif(count_gpus() > 0, reason="the wrapper's made-up GPUs are not this node's")
def test_ranks_given_their_own_gpu_mask_keep_it(loopback):
    """Masks per rank, not per node: each worker runs on its own rank's GPU."""
    wrapper = [str(SCRIPTS / "own_gpu_per_rank.sh"), sys.executable, str(LAUNCHER)]
    cpu = loopback.index("--gpus-per-node")
    options = loopback[:cpu] + loopback[cpu + 2:]
    run = launch([*options, str(SCRIPTS / "report_cluster.py")], np=4, launcher=wrapper)
    assert_clean(run)
    seen = report(run)
    assert seen["workers"] == [f"{HOST}-gpu6", f"{HOST}-gpu7"]
    assert sorted(seen["devices"].values()) == ["6", "7"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("option, modules", [
    ([], ["dask.array"]),  # the default, which the first computation would otherwise import
    (["--pre-import", "colorsys,json.tool"], ["colorsys", "json.tool"]),
])
def test_the_scheduler_and_every_worker_pre_import(loopback, option, modules):
    run = launch([*loopback, *option, str(SCRIPTS / "pre_imports.py"), *modules], np=4)
    assert_clean(run)
    seen = report(run, "IMPORTED")
    assert len(seen) == 3 and all(found == modules for found in seen.values()), seen


@pytest.mark.timeout(120)
@pytest.mark.parametrize("nanny", ["--nanny", "--no-nanny"])
def test_every_worker_runs_the_preload(loopback, nanny):
    preload = ["--preload", str(SCRIPTS / "preload_mark.py")]
    run = launch([*loopback, nanny, *preload, str(SCRIPTS / "report_preloads.py")], np=4)
    assert_clean(run)
    assert report(run, "PRELOADED") == ["preload_mark.py", "preload_mark.py"], run


def test_a_wait_on_mpi_tests_until_done_and_gives_up_at_its_bound():
    answers = iter([False, False, True])
    assert done_within(lambda: next(answers), timeout=10)
    assert next(answers, "all asked") == "all asked"
    tests = []
    assert not done_within(lambda: tests.append(None), timeout=0.05)
    assert 2 <= len(tests)  # tested again and again, not once and given up


@pytest.mark.timeout(120)
def test_a_message_left_unread_does_not_fail_the_end():
    """After a signal, a rank stops waiting for the driver's word after its grace;
    the word may still come, unread by the end."""
    script = SCRIPTS / "unread_message_at_exit.py"
    run = launch([], np=2, launcher=[sys.executable, str(script)])
    assert run.rc == 0, run
    assert sorted(run.stdout.splitlines()) == ["rank 0 finalised: True", "rank 1 finalised: True"]


@pytest.mark.timeout(120)
def test_a_fault_once_mpi_is_finalised_is_logged_once_and_ends_with_1():
    run = launch([], np=1, launcher=[sys.executable, str(SCRIPTS / "fault_after_finalize.py")])
    assert run.rc == 1, run
    assert "rank 0 failed" in run.stderr and "RuntimeError: broke at the end" in run.stderr, run
    assert run.stderr.count("Traceback") == 1, run.stderr


@pytest.mark.timeout(120)
def test_the_servers_ranks_leave_without_pythons_teardown_the_driver_with_it(loopback, tmp_path):
    """Once MPI is finalised, a rank that runs no script ends as a nanny's
    worker process does: its atexit handlers run, Python's teardown (which took
    each rank up to 1.7 s) does not; the driver's still runs, and flushes what
    the script left open."""
    marks, left_open = tmp_path / "marks", tmp_path / "left-open"
    preload = ["--no-nanny", "--preload", str(SCRIPTS / "preload_end_marks.py")]
    run = launch([*loopback, *preload, str(SCRIPTS / "leaves_a_file_open.py"), str(left_open)],
                 np=4, env={"END_MARKS": str(marks)})
    assert_clean(run)
    assert marks.read_text().split() == ["atexit", "atexit"]
    assert left_open.read_text() == "written, never closed\n"


@pytest.mark.timeout(60)
def test_no_python_thread_runs_while_the_rank_leaves_past_pythons_teardown():
    done = subprocess.run([sys.executable, str(SCRIPTS / "threads_at_exit.py")],
                          capture_output=True, text=True, timeout=50,
                          env={**os.environ, "PYTHONPATH": PACKAGE_PATH})
    assert (done.returncode, done.stdout) == (0, "the thread ran on for 0 steps\n"), done


@pytest.mark.timeout(120)
@pytest.mark.skipif(count_gpus() > 1, reason="needs one GPU or none")
def test_rank_without_a_gpu_idles_and_says_what_fits(loopback):
    run = launch([*loopback, "--gpus-per-node", "1", str(SCRIPTS / "report_cluster.py")], np=4)
    assert_clean(run)
    assert report(run)["workers"] == [f"{HOST}-gpu0"]
    assert len(run.stderr.splitlines()) == 1, run.stderr
    (warning,) = run.stderr.splitlines()
    assert "1 rank(s) on" in warning and "(ranks 3)" in warning and "-np 3 fits" in warning


@pytest.mark.reliability("clean run")
@pytest.mark.timeout(120)
def test_without_mpirun_a_local_cluster_runs_the_script(tmp_path, record):
    run = launch(
        ["--log-dir", str(tmp_path / "logs"), "--gpus-per-node", "0",
         str(SCRIPTS / "report_cluster.py"), "4"]
    )
    record(run, "script, no mpirun (local cluster), sys.exit(4)")
    assert_clean(run, rc=4)
    seen = report(run)
    assert seen["workers"] and all(name.startswith(f"{HOST}-cpu") for name in seen["workers"])
    assert len({tuple(parent) for parent in seen["parents"]}) == 1  # one server forked all
    assert seen["parents"][0][1] == LOCAL_WORKER_ORIGIN
    assert seen["same_scheduler"] and seen["answer"] == 42
    assert "Scheduler address: tls://127.0.0.1:" in run.stdout


@pytest.mark.timeout(120)
def test_a_taken_default_port_gives_way_and_the_banner_says_so(loopback):
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
    assert scheduler_port != 8786
    # The dashboard is on a socket of the job's: the tunnel's near end keeps 8787.
    assert re.search(r"-L 127\.0\.0\.1:8787:\S+/dashboard\.sock ", run.stdout), run


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
    assert f"Plan:\n    {HOST}: rank 0 scheduler; rank 1 driver; rank(s) 2-3 workers on CPU\n" in (
        run.stdout
    )
    logs = tmp_path / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        "rank0-scheduler.log", "rank1-driver.log", "rank2-worker-process.log",
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
def test_only_this_jobs_credentials_get_in(loopback, tmp_path):
    """Each intruder refused by the side that should refuse it, for the reason
    it should: the scheduler's log gives its word on each (by the intruder's
    port), the intruder its own.  The job's own credentials get in from
    another process."""
    run = launch([*loopback, str(SCRIPTS / "intruders.py")], np=3)
    assert_clean(run)
    attempts = {a["label"]: a for a in map(json.loads, re.findall(r"^INTRUDER (.*)$",
                                                                  run.stdout, re.M))}
    scheduler_log = (tmp_path / "logs" / "rank0-scheduler.log").read_text()

    def scheduler_says(label: str) -> str:
        said = re.search(rf"TLS handshake failed with remote '\S+:{attempts[label]['port']}': "
                         r"(.*)$", scheduler_log, re.M)
        return said[1] if said else "nothing"

    expected = {  # label: (the scheduler's word, the intruder's)
        "plain tcp": ("WRONG_VERSION_NUMBER|RECORD_LAYER_FAILURE|record layer failure",
                      "the server closed the connection"),
        "this job's CA, no certificate": (
            "PEER_DID_NOT_RETURN_A_CERTIFICATE",
            "the server refused the client: TLSV13_ALERT_CERTIFICATE_REQUIRED"),
        "this job's CA, a certificate of another CA": (
            "CERTIFICATE_VERIFY_FAILED", "the server refused the client: TLSV1_ALERT_UNKNOWN_CA"),
        "another CA": (
            "TLSV1_ALERT_UNKNOWN_CA",  # the intruder's own alert: it refused the scheduler
            "the client refused the server: self-signed certificate"),
    }
    assert attempts.keys() == expected.keys(), run.stdout
    for label, (scheduler, intruder) in expected.items():
        assert re.search(scheduler, scheduler_says(label)), (label, scheduler_says(label))
        assert attempts[label]["client"].startswith(intruder), (label, attempts[label])
    assert "OWN connected, computed 3" in run.stdout, run.stdout
    # The client's credentials: in a private folder of the node while the job
    # runs, gone after it; nothing secret in the (shared) log folder.
    _, folder, mode, files = re.search(r"^CREDENTIALS .*$", run.stdout, re.M)[0].split()
    assert (mode, files) == (
        "700", "ca.pem:600,client-cert.pem:600,client-key.pem:600,client.env:600"
    )
    assert not folder.startswith(str(Path.home())) and not Path(folder).exists()
    logs = tmp_path / "logs"
    assert not any("PRIVATE KEY" in p.read_text() for p in logs.iterdir() if p.is_file())


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


@pytest.mark.timeout(120)
@pytest.mark.parametrize("nanny", ["--nanny", "--no-nanny"])
def test_a_heartbeat_that_meets_its_workers_close_prints_no_error(loopback, tmp_path, nanny):
    """A heartbeat in flight as its worker closes fails on the connection the
    close shut: distributed logs an ERROR with a traceback (2 clean runs in 14
    under load did).  Forced here (the preload holds a heartbeat until the
    close begins): the close waits for it, and nothing fails."""
    preload = ["--preload", str(SCRIPTS / "heartbeat_at_close.py")]
    script = tmp_path / "waits.py"  # past the first heartbeat, which the preload holds
    script.write_text("import time\ntime.sleep(3)\n")
    run = launch([*loopback, nanny, *preload, str(script)], np=3)
    assert_clean(run)
    assert "ERROR" not in run.output and run.stderr == "", run
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("rank2-*.log"))
    assert "the held heartbeat goes on" in logs and "ERROR" not in logs, logs[-3000:]


DATAFRAME_JOB = """
import dask.dataframe as dd
import pandas as pd
frame = dd.from_pandas(pd.DataFrame({"x": range(1000), "y": [i % 7 for i in range(1000)]}),
                       npartitions=4)
print("GROUPED", frame.groupby("y").x.sum().compute().sort_index().tolist())
"""


@pytest.mark.timeout(120)
def test_a_dask_dataframe_job_runs_on_the_cluster(loopback, tmp_path):
    """dask.dataframe, installed by the quickstart's [dataframe], on the workers."""
    pytest.importorskip("dask.dataframe")
    script = tmp_path / "frames.py"
    script.write_text(DATAFRAME_JOB)
    run = launch([*loopback, str(script)], np=4)
    assert_clean(run)
    expected = [sum(i for i in range(1000) if i % 7 == y) for y in range(7)]
    assert f"GROUPED {expected}" in run.stdout, run
