"""Run the launcher as a user would, bounded, and reap whatever it leaves behind.

Every process a run starts carries a fresh token in its environment (mpirun
passes the environment to its ranks, and nannies to their workers), so the
run's processes are found by that token, and only those, even after hydra has
moved them into sessions of their own.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from start_daskmpi.servers.worker_processes import nanny_survives_fast_starts

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "start_daskmpi.py"
NOTEBOOK = "jupyterlab_cupy_test.ipynb"
SCRIPTS = Path(__file__).resolve().parent / "scripts"
TOKEN_VARIABLE = "START_DASKMPI_TEST_RUN"
# PYTHONPATH for a script that imports start_daskmpi from this checkout, the
# caller's own kept (a GPU machine's wheels are found through it).
PACKAGE_PATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
STARTED: list[str] = []  # tokens of the runs started so far; conftest reaps them after each test


NO_MPIRUN = "no mpirun: pip install mpich"


def mpirun() -> str | None:
    """The mpirun beside this Python (a venv's MPICH wheel) first, else PATH's."""
    beside = Path(sys.executable).parent / "mpirun"
    return str(beside) if beside.exists() else shutil.which("mpirun")


# For a test that reaches mpirun other than through launch() or Session with np
# ranks, which skip by themselves.
NEEDS_MPIRUN = pytest.mark.skipif(mpirun() is None, reason=NO_MPIRUN)
# Whether the nanny's worker processes come from a fork server here
# (start_daskmpi/servers/worker_processes.py: not under distributed before 2026.7).
FORK_SERVER = nanny_survives_fast_starts(importlib.metadata.version("distributed"))
# What started a worker process (tests/scripts/worker_origin.py), in a rank
# under mpirun and in a local cluster.
RANKS_WORKER_ORIGIN = "a fork of its rank" if FORK_SERVER else "its rank"
LOCAL_WORKER_ORIGIN = "a fresh fork server" if FORK_SERVER else "its rank"


def is_open_mpi(command: str) -> bool:
    done = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30)
    return "Open MPI" in done.stdout + done.stderr


def mpirun_prefix(np: int) -> list[str]:
    """mpirun for ``np`` ranks; the test that asks for it is skipped where
    there is none (a local run needs none)."""
    command = mpirun()
    if command is None:
        pytest.skip(NO_MPIRUN)
    # Open MPI refuses more ranks than cores unless told; MPICH just runs them.
    extra = ["--oversubscribe"] if is_open_mpi(command) else []
    return [command, *extra, "-np", str(np)]


def run_processes(token: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(TOKEN_VARIABLE) == token:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def reap(token: str, grace: float = 5.0) -> list[str]:
    """Wait ``grace`` seconds for the run's processes to end, then kill the rest
    by pid; return a description of each one that had to be killed."""
    deadline = time.monotonic() + grace
    while (left := run_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = []
    for process in left:
        try:
            described.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
            process.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(left, timeout=10)
    return described


def report(run: Run, tag: str = "REPORT") -> dict:
    """The JSON a script printed after ``tag``: by default what
    tests/scripts/report_cluster.py saw of its cluster."""
    (line,) = [line for line in run.stdout.splitlines() if line.startswith(f"{tag} ")]
    return json.loads(line.removeprefix(f"{tag} "))


# How each launcher reports a rank killed by SIGKILL, naming its pid on one
# line (MPICH's hydra puts the signal on the next, as an exit code or a signal
# by version; Open MPI on the same): a check on these cannot be met by the pid
# anywhere else in the output, such as the script's own lines.
KILL_REPORTS = (
    r"^=\s+(RANK \d+ )?PID {pid} RUNNING AT \S+\s*\n=\s+(EXIT CODE|KILLED BY SIGNAL): 9\b",
    r"^.*with PID {pid} on node \S+ exited on signal 9\b",  # Open MPI
)


def launcher_reported_kill(output: str, pid: int) -> bool:
    return any(re.search(report.format(pid=pid), output, re.M) for report in KILL_REPORTS)


def our_lines(stream: str) -> list[str]:
    """Our own lines, without the notices Open MPI adds when a rank exits non-zero.
    Open MPI 5 ends its MPI_ABORT notice with a NUL byte, which can land at the
    start of the next line forwarded (ours): it is the launcher's, dropped."""
    lines = stream.replace("\0", "").splitlines()
    return [line for line in lines if line.startswith("start_daskmpi:")]


def notebook_sums(printed: str) -> dict[str, float]:
    """jupyterlab_cupy_test.ipynb's printed sums by label ('with gpus',
    'without gpus'), each checked here against the expectation for its SIZE."""
    from cupy_test import expected_sum, tolerance  # at the root, on pytest's pythonpath

    size = int(re.search(r"SIZE, CHUNKS = (\d+)", (ROOT / NOTEBOOK).read_text())[1])
    mean = expected_sum(size)[0]
    sums = {label: float(total) for label, total in re.findall(
        r"^(with gpus|without gpus) +[\d.]+ s +sum (\S+) ", printed, re.M)}
    wrong = {label: total for label, total in sums.items()
             if not abs(total - mean) <= tolerance(size)}
    assert sums and not wrong, f"sums {sums}, expected {mean} +- {tolerance(size)}"
    return sums


@dataclass
class Run:
    rc: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float
    leftovers: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return (
            f"rc={self.rc} after {self.seconds:.1f}s, leftovers={self.leftovers}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


def launcher_command(
    args: list[str], np: int | None = None, launcher: list[str] | None = None
) -> list[str]:
    """``mpirun -np NP python start_daskmpi.py ARGS`` (no mpirun when np is None)."""
    return [
        *(mpirun_prefix(np) if np else []),
        *(launcher or [sys.executable, str(LAUNCHER)]),
        *args,
    ]


def tracked_environment(env: dict[str, str] | None) -> tuple[str, dict[str, str]]:
    """A fresh run token, noted for conftest's reaping, and the run's environment
    carrying it."""
    token = uuid.uuid4().hex
    STARTED.append(token)
    return token, {**os.environ, **(env or {}), TOKEN_VARIABLE: token, "PYTHONUNBUFFERED": "1"}


def launch(
    args: list[str],
    *,
    np: int | None = None,
    timeout: float = 90,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    launcher: list[str] | None = None,
) -> Run:
    """Run launcher_command() to its end, bounded; reap what it leaves."""
    token, environ = tracked_environment(env)
    start = time.monotonic()
    process = subprocess.Popen(
        launcher_command(args, np, launcher), cwd=cwd, env=environ, text=True,
        start_new_session=True,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = process.communicate(stdin, timeout=timeout)
        rc: int | None = process.returncode
    except subprocess.TimeoutExpired:
        rc = None
        reap(token, grace=0)
        stdout, stderr = process.communicate()
    seconds = time.monotonic() - start
    return Run(rc, stdout, stderr, seconds, reap(token))


class Session:
    """A launcher run that goes on while the test talks to it: its output is read
    as it comes, its stdin written, signals sent; leaving the ``with`` block ends
    it (killed if need be) and reaps what it leaves."""

    def __init__(
        self,
        args: list[str],
        *,
        np: int | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        launcher: list[str] | None = None,
    ) -> None:
        self.token, environ = tracked_environment(env)
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            launcher_command(args, np, launcher), cwd=cwd, env=environ, text=True,
            start_new_session=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.stdout),
                                  (self.process.stderr, self.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line)
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        """The first match of ``pattern`` in stdout, waited for."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = re.search(pattern, "".join(self.stdout))
                if match:
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise AssertionError(f"no {pattern!r} in the output:\n{self.output}")
                self._changed.wait(min(left, 0.5))

    def send(self, text: str) -> None:
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        self.process.stdin.close()

    def kill_all_hard(self, grace: float = 10) -> list[str]:
        """SIGKILL to the launcher's whole process group, which no process can
        catch; the run's processes still there ``grace`` seconds later."""
        os.killpg(self.process.pid, signal.SIGKILL)
        return reap(self.token, grace=grace)

    def finish(self, timeout: float = 60) -> Run:
        """Wait for the run to end by itself; kill it at ``timeout``."""
        try:
            rc: int | None = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
            reap(self.token, grace=0)
            self.process.wait()
        for reader in self._readers:
            reader.join(10)
        seconds = time.monotonic() - self.started
        return Run(rc, "".join(self.stdout), "".join(self.stderr), seconds, reap(self.token))

    @property
    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            reap(self.token, grace=0)
        self.finish(timeout=30)


class Lab:
    """What the launcher printed about its JupyterLab and dashboard."""

    BANNER = r"http://127\.0\.0\.1:(\d+)/lab\?token=(\S+)"

    def __init__(self, session: Session) -> None:
        match = session.wait_for(self.BANNER)
        session.wait_for("JupyterLab started. Type 'stop' to stop Dask:")
        self.port, self.token = int(match[1]), match[2]
        self.base = f"http://127.0.0.1:{self.port}"
        # The dashboard's port at the tunnel's near end, on the user's machine.
        self.dashboard_port = int(session.wait_for(r"http://127\.0\.0\.1:(\d+)/status")[1])
        # The dashboard's port on JupyterLab's node, where its proxy looks.
        self.proxied_port = int(session.wait_for(r"/proxy/(\d+)/status")[1])
        self.scheduler = session.wait_for(r"Scheduler address: (\S+)")[1]
        self.log_dir = Path(session.wait_for(r"Logs: (\S+)")[1])
