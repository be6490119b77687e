"""Faults and bad input under a real mpirun, on loopback: every run bounded,
every process it started gone afterwards, and each outcome the one promised.

Each test notes what its runs showed with ``record``; bench/reliability.py
turns those notes into the reliability table of BENCHMARKS.md.
"""
from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from launch import (
    LAUNCHER,
    RANKS_WORKER_ORIGIN,
    SCRIPTS,
    Session,
    launch,
    launcher_reported_kill,
    our_lines,
    report,
)
from start_daskmpi.plan.gpus import count_gpus

HOST = socket.gethostname().split(".")[0]
TRACEBACK = "Traceback (most recent call last)"


def until_line(session: Session, pattern: str) -> float:
    """Wait for ``pattern`` in the run's output; return when it was seen."""
    session.wait_for(pattern)
    return time.monotonic()


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------


@pytest.mark.reliability("fault")
@pytest.mark.timeout(120)
@pytest.mark.skipif(0 < count_gpus() < 2, reason="fewer real GPUs than simulated ones")
def test_a_killed_worker_is_restarted_on_its_gpu_and_the_result_is_right(loopback, record):
    script = str(SCRIPTS / "kill_worker.py")
    run = launch([*loopback, "--gpus-per-node", "2", script, "40"], np=4)
    record(run, "worker process SIGKILLed mid-computation")
    assert run.rc == 0 and run.leftovers == [], run
    seen = report(run, "FAULT")
    assert seen["total"] == sum(x * x for x in range(40))
    assert seen["restarted"] and seen["victim"] == f"{HOST}-gpu0"
    assert seen["device_before"] == seen["device_after"] == "0"
    # The restart too (worker_processes.py), where distributed is recent enough.
    assert seen["started_by"] == [RANKS_WORKER_ORIGIN, RANKS_WORKER_ORIGIN]
    assert seen["workers"] == [f"{HOST}-gpu0", f"{HOST}-gpu1"]
    assert TRACEBACK not in run.output, run


@pytest.mark.reliability("fault")
@pytest.mark.timeout(120)
def test_a_killed_scheduler_ends_every_rank(loopback, record):
    with Session([*loopback, str(SCRIPTS / "lose_scheduler.py"), "kill", "task"], np=4) as run:
        pid = int(run.wait_for(r"SCHEDULER (\d+)")[1])
        os.kill(pid, signal.SIGKILL)  # a process this test started, by its pid
        killed = time.monotonic()
        done = run.finish(timeout=90)
    record(done, "scheduler process SIGKILLed")
    assert done.rc not in (0, None) and done.leftovers == [], done
    assert time.monotonic() - killed < 60, done
    # mpirun ends the job at once, and names the process that died, by its pid.
    assert launcher_reported_kill(done.output, pid), done



@pytest.mark.reliability("fault")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("waiting_on", ["task", "sleep"])
def test_a_scheduler_that_closes_ends_the_job_with_one_line(loopback, record, waiting_on):
    """The scheduler's process lives on (no mpirun to end the job): the driver
    sees it gone, whether the script waits on a task or on nothing of Dask's."""
    script = str(SCRIPTS / "lose_scheduler.py")
    with Session([*loopback, script, "close", waiting_on], np=4) as run:
        closed = until_line(run, "CLOSING")
        done = run.finish(timeout=90)
    record(done, f"scheduler closes, script waiting on {waiting_on}")
    assert done.rc == 1 and done.leftovers == [], done
    assert time.monotonic() - closed < 60, done
    lines = our_lines(done.stderr)
    assert len(lines) == 1, done
    (line,) = lines
    assert f"lost the scheduler (rank 0 on {HOST}): the job ends" in line, done
    if waiting_on == "sleep":
        assert TRACEBACK not in done.output, done


@pytest.mark.reliability("fault")
@pytest.mark.timeout(120)
def test_a_hard_kill_of_the_whole_launcher_leaves_nothing_running(loopback, tmp_path, record):
    """SIGKILL to mpirun's whole process group: every worker process (a
    nanny's child) ends with its rank, within 10 s."""
    script = tmp_path / "long.py"
    script.write_text("import time\nprint('READY', flush=True)\ntime.sleep(600)\n")
    with Session([*loopback, str(script)], np=4) as session:
        session.wait_for("READY")
        left = session.kill_all_hard()
        run = session.finish(timeout=30)
    record(run, "SIGKILL to mpirun's process group")
    assert left == [], left


@pytest.mark.reliability("fault")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])  # one id on every Python
def test_signal_interrupts_the_script_whose_finally_runs(
    loopback, tmp_path, record, signum, status
):
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
    record(run, f"{signal.Signals(signum).name} to mpirun")
    assert run.rc == status and run.leftovers == [], run
    assert time.monotonic() - signaled < 10, run
    assert marker.read_text() == "yes"
    assert f"Interrupted ({signal.Signals(signum).name}): stopping Dask" in run.stdout
    assert TRACEBACK not in run.output, run


@pytest.mark.reliability("fault")
@pytest.mark.timeout(120)
def test_the_walltime_stops_the_script_a_margin_before_it(loopback, tmp_path, record):
    """Slurm's end of the job, 30 s off past the margin: the script is stopped
    as SIGTERM stops it, its finally runs whole, and one line says why."""
    marker = tmp_path / "saved"  # a line for each second of the finally that ran
    ends = str(int(time.time()) + 90)
    with Session([*loopback, "--walltime-margin", "60",
                  str(SCRIPTS / "slow_finally.py"), "2", str(marker)],
                 np=3, env={"SLURM_JOB_END_TIME": ends}) as session:
        session.wait_for("READY")
        run = session.finish(timeout=60)
    record(run, "Slurm's walltime near, a 2 s finally")
    assert run.rc == 143 and run.leftovers == [], run
    assert marker.read_text().split() == ["0", "1"], run
    clock = time.strftime("%H:%M:%S", time.localtime(int(ends)))
    assert f"Walltime: the job ends at {clock} (Slurm); Dask stops 60 s before" in run.stdout
    assert (f"Interrupted (the job's walltime ends at {clock} (Slurm), in 60 s "
            "(--walltime-margin)): stopping Dask") in run.stdout, run
    assert TRACEBACK not in run.output, run


@pytest.mark.reliability("bad input")
@pytest.mark.timeout(120)
def test_a_walltime_already_within_the_margin_is_one_line(loopback, record):
    run = launch([*loopback, "--walltime", "30", str(SCRIPTS / "report_cluster.py")], np=3)
    record(run, "--walltime shorter than --walltime-margin")
    assert run.rc == 2 and run.leftovers == [], run
    (line,) = our_lines(run.stderr)
    assert re.fullmatch(
        r"start_daskmpi: error: the job's walltime ends at \d\d:\d\d:\d\d \(--walltime\), "
        r"within --walltime-margin \(60 s\): lower the margin, or ask for a longer job", line
    ), run
    assert "REPORT" not in run.stdout and TRACEBACK not in run.output, run


ENDINGS = {
    # how the script ends: (its source, mpirun's status, its traceback lines)
    "raises": ("raise ValueError('boom from the script')", 1, 1),
    "sys.exit(3)": ("sys.exit(3)", 3, 0),
    "os._exit(3)": ("os._exit(3)", 3, 0),
    "os._exit(0)": ("os._exit(0)", 0, 0),
}


@pytest.mark.reliability("fault")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("ranks", [4, None], ids=["mpirun", "local"])
@pytest.mark.parametrize("ending", list(ENDINGS))
def test_how_the_script_ends_is_how_the_job_ends(loopback, tmp_path, record, ending, ranks):
    source, status, tracebacks = ENDINGS[ending]
    marker = tmp_path / "ended_at"
    script = tmp_path / "ending.py"
    script.write_text(
        "import os, sys, time\n"
        "from distributed import get_client\n"
        "assert get_client().submit(sum, [1, 2]).result() == 3\n"
        f"open({str(marker)!r}, 'w').write(repr(time.time()))\n"
        f"{source}\n"
    )
    said = tmp_path / "status"
    run = launch([*loopback, "--status-file", str(said), str(script)], np=ranks)
    ended = time.time()
    record(run, f"script {ending}" + ("" if ranks else ", no mpirun"))
    assert run.rc == status and run.leftovers == [], run
    # What a batch script trusts over the launcher's word; a local os._exit is
    # the plain one, as in python, and leaves no word.
    if ranks or not ending.startswith("os._exit"):
        assert said.read_text() == f"{status}\n"
    else:
        assert not said.exists()
    assert ended - float(marker.read_text()) < 15, run
    assert run.output.count(TRACEBACK) == tracebacks, run
    if ending == "raises":
        assert "ValueError: boom from the script" in run.stderr
        assert f'File "{script}", line 5' in run.stderr and "runpy" not in run.stderr
    if ending == "sys.exit(3)":
        assert "Code failed with exit status 3." in run.stdout


@pytest.mark.reliability("fault")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("nanny", ["--nanny", "--no-nanny"])
def test_a_task_that_never_returns_does_not_hold_the_job(loopback, record, nanny):
    script = str(SCRIPTS / "task_never_returns.py")
    with Session([*loopback, nanny, script], np=4) as session:
        left = until_line(session, "LEFT RUNNING")
        run = session.finish(timeout=60)
    record(run, f"a task never returns ({nanny})")
    assert run.rc == 0 and run.leftovers == [], run
    assert time.monotonic() - left < 15, run
    assert "Successfully exited" in run.stdout
    assert TRACEBACK not in run.output, run


@pytest.mark.reliability("fault")
@pytest.mark.timeout(120)
def test_workers_that_never_register_are_named(loopback, record):
    # Every worker hangs in a preload, before it registers.
    hang = {"DASK_DISTRIBUTED__WORKER__PRELOAD": '["import time; time.sleep(600)"]'}
    run = launch(
        [*loopback, "--startup-timeout", "3", str(SCRIPTS / "report_cluster.py")],
        np=4, env=hang,
    )
    record(run, "workers never register")
    assert run.rc == 1 and run.leftovers == [], run
    assert "2 of 2 workers did not register within 3 s: rank(s) 2-3" in run.stderr, run
    assert f"{HOST}-cpu0, {HOST}-cpu1" in run.stderr
    assert TRACEBACK not in run.output, run


@pytest.mark.reliability("fault")
@pytest.mark.timeout(120)
def test_a_worker_that_fails_to_start_ends_the_job_at_once(loopback, record):
    broken = {"DASK_DISTRIBUTED__WORKER__PRELOAD": '["raise RuntimeError(\'bad preload\')"]'}
    run = launch([*loopback, str(SCRIPTS / "report_cluster.py")], np=3, env=broken)
    record(run, "a worker fails to start")
    assert run.rc == 1 and run.leftovers == [], run
    assert run.seconds < 60, run  # not the 120 s startup timeout
    (line,) = our_lines(run.stderr)
    assert f"worker {HOST}-cpu0 (rank 2) failed: RuntimeError: bad preload" in line, run


@pytest.mark.reliability("fault")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("preload, why", [
    ("import time; time.sleep(600)", "never registered"),  # a node slow to come up
    ("raise RuntimeError('bad preload')", "failed: RuntimeError: bad preload"),
], ids=["slow", "broken"])
def test_with_min_workers_the_script_starts_without_the_missing_ones(
    loopback, tmp_path, record, preload, why
):
    """Past --startup-timeout (5 s), the script still running, the missing worker
    is named; the job ends in order, with the script's status."""
    script = tmp_path / "job.py"
    script.write_text("import time\nprint('READY', flush=True)\ntime.sleep(10)\n")
    wrapper = [str(SCRIPTS / "last_rank_preload.sh"), sys.executable, str(LAUNCHER)]
    run = launch(
        [*loopback, "--min-workers", "1", "--startup-timeout", "5", str(script)],
        np=4, launcher=wrapper, env={"LAST_RANK_PRELOAD": preload}, timeout=60,
    )
    record(run, f"--min-workers 1, one of 2 workers {why.split(':')[0]}")
    assert "Workers: 1 of 2 registered (--min-workers 1); the others join as they come" in (
        run.stdout), run
    assert "READY" in run.stdout, run  # the script ran with one worker
    lines = our_lines(run.stderr)
    assert any(f"{HOST}-cpu1" in line and why in line for line in lines), run
    assert run.rc == 0 and TRACEBACK not in run.output and run.leftovers == [], run


# --------------------------------------------------------------------------
# Bad input: one line that says what to do, and nothing else
# --------------------------------------------------------------------------


def make_files(folder: Path) -> None:
    """The user's files, which no bad input may touch."""
    (folder / "job.py").write_text("print('the job')\n")
    (folder / "binary.py").write_bytes(b"\x7fELF\x00\x01\x02")
    (folder / "broken.py").write_text("def main(:\n    pass\n")
    (folder / "a_folder").mkdir()
    (folder / "notes.txt").write_text("keep me\n")
    for package in ("mpi4py", "cryptography", "distributed"):  # as if not installed
        (folder / f"no_{package}" / package).mkdir(parents=True)
        (folder / f"no_{package}" / package / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{package}'\", name={package!r})\n"
        )


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


SAFE = ["--interface", "lo", "--log-dir", "logs", "--gpus-per-node", "0"]
FAKE_WORLD = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "0",
              "PMI_SIZE": "4", "PMI_RANK": "0"}

# case: (arguments, ranks (None: no mpirun), environment, words of the one line)
BAD_INPUT = {
    "script missing": (["missing.py"], 3, {}, "script not found: missing.py"),
    "script is a folder": (["a_folder"], 3, {}, "not a file: a_folder"),
    "script is not Python": (["binary.py"], 3, {}, "binary.py is not a Python script"),
    "script has a syntax error": (["broken.py"], 3, {}, "broken.py:1: "),
    "unknown option": (["--bogus", "job.py"], 3, {}, "unrecognized arguments: --bogus"),
    "bad --memory-limit": (["--memory-limit", "lots", "job.py"], 3, {}, "expected bytes"),
    "--nthreads 0": (["--nthreads", "0", "job.py"], 3, {}, "expected a positive integer"),
    "--gpus-per-node -1": (["--gpus-per-node=-1", "job.py"], 3, {}, "expected 0 or more"),
    "port out of range": (["--scheduler-port", "70000", "job.py"], 3, {}, "a port number"),
    "bad --startup-timeout": (["--startup-timeout", "soon", "job.py"], 3, {}, "a duration"),
    "--pre-import bad name": (["--pre-import", "numpy,dask-ml", "job.py"], 3, {},
                              "not a module name: 'dask-ml'"),
    "--pre-import not installed": (["--pre-import", "no_such_module", "job.py"], 3, {},
                                   "--pre-import: no module named 'no_such_module'"),
    "--protocol without TLS": (["--protocol", "tcp", "job.py"], 3, {}, "add --no-tls"),
    "explicit port taken": (["--scheduler-port", "{taken}", "job.py"], 3, {}, "already in use"),
    "--log-dir unwritable": (["--log-dir", "notes.txt/logs", "job.py"], 3, {},
                             "cannot create --log-dir"),
    "--local-directory unwritable": (["--local-directory", "notes.txt/scratch", "job.py"], 3,
                                     {}, "cannot create --local-directory"),
    "world size 2": (["job.py"], 2, {}, "needs at least 3 ranks"),
    "no such --interface": (["--interface", "ib9", "job.py"], 3, {},
                            "no network interface 'ib9'"),
    "mpi4py missing": (["job.py"], 3, {"PYTHONPATH": "{no_mpi4py}"},
                       "cannot use MPI under this mpirun"),
    "cryptography missing (TLS)": (["job.py"], 3, {"PYTHONPATH": "{no_cryptography}"},
                                   "needs the cryptography package"),
    "distributed missing": (["job.py"], 3, {"PYTHONPATH": "{no_distributed}"},
                            "No module named 'distributed' (on "),
    "mpi4py of another MPI": (["job.py"], None, FAKE_WORLD,
                              "mpirun started 4 ranks but mpi4py sees 1"),
    "--require-gpu, no GPU": (["--require-gpu", "job.py"], 3, {"CUDA_VISIBLE_DEVICES": ""},
                              "--require-gpu, but"),
    "more GPUs than the node has": (["--gpus-per-node", "4", "job.py"], 3,
                                    {"CUDA_VISIBLE_DEVICES": "0,1"}, "has 2 GPU(s)"),
}


@pytest.mark.reliability("bad input")
@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_touches_nothing(tmp_path, record, case):
    args, ranks, env, words = BAD_INPUT[case]
    make_files(tmp_path)
    before = snapshot(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        places = {
            "taken": taken.getsockname()[1],
            "no_mpi4py": tmp_path / "no_mpi4py",
            "no_cryptography": tmp_path / "no_cryptography",
            "no_distributed": tmp_path / "no_distributed",
        }
        args = [a.format(**places) for a in args]
        # Shadows go first: where the packages themselves come by PYTHONPATH, they stay.
        env = {k: v.format(**places) + os.pathsep + os.environ.get(k, "")
               if k == "PYTHONPATH" else v.format(**places) for k, v in env.items()}
        # The case's own options come last, and win.
        run = launch([*SAFE, *args], np=ranks, cwd=tmp_path, env=env, timeout=60)
    record(run, case)
    assert run.rc == 2 and run.leftovers == [], run
    (line,) = our_lines(run.stderr)
    assert line.startswith("start_daskmpi: error: ") and words in line, run
    assert TRACEBACK not in run.output, run
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed
    assert all(k.startswith("logs/") for k in after.keys() - before.keys()), after


@pytest.mark.reliability("bad input")
@pytest.mark.timeout(120)
def test_two_launchers_on_one_node_at_once_both_run(tmp_path, record):
    """Both want the default ports at the same moment: one gives way."""
    runs = {}

    def start(name: str) -> None:
        runs[name] = launch(
            ["--interface", "lo", "--gpus-per-node", "0", "--log-dir", str(tmp_path / name),
             str(SCRIPTS / "report_cluster.py")],
            np=3,
        )

    threads = [threading.Thread(target=start, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, run in runs.items():
        record(run, f"two launchers at once ({name})")
        assert run.rc == 0 and run.leftovers == [], run
        assert report(run, "REPORT")["answer"] == 42
    scheduler = [re.search(r"Scheduler address: tls://127.0.0.1:(\d+)", r.stdout)[1]
                 for r in runs.values()]
    dashboard = [re.search(r"-L 127\.0\.0\.1:8787:(\S+\.sock) ", r.stdout)[1]
                 for r in runs.values()]
    assert len(set(scheduler)) == 2 and len(set(dashboard)) == 2, runs


WANTS_A_GPU = """
import asyncio
from distributed import get_client, wait
client = get_client()
future = client.submit(sum, [1, 2], resources={"GPU": 1})
try:
    wait(future, timeout=5)
except asyncio.TimeoutError:  # the builtin TimeoutError since Python 3.11
    print("STILL WAITING", flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ranks", [3, None], ids=["mpirun", "local"])
def test_a_task_asking_for_a_resource_no_worker_offers_is_one_line(tmp_path, loopback, ranks):
    """resources={"GPU": 1} on CPU workers: distributed waits in silence (a
    GPU worker might join); within seconds, one line says no worker offers it."""
    script = tmp_path / "wants_a_gpu.py"
    script.write_text(WANTS_A_GPU)
    run = launch([*loopback, str(script)], np=ranks)
    assert run.rc == 0 and run.leftovers == [] and "STILL WAITING" in run.stdout, run
    said = [line for line in our_lines(run.stderr) if "asks for resources" in line]
    assert len(said) == 1 and re.fullmatch(
        r"start_daskmpi: warning: task sum-\w+ asks for resources GPU=1, which none of the "
        r"cluster's \d worker\(s\) offers \(they offer: none\): it waits until a worker that "
        r"does joins; GPU workers offer GPU=1 each, CPU workers none", said[0]), run
