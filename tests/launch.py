"""Run the launcher as a user would, bounded, and reap whatever it leaves behind.

Every process a run starts carries a fresh token in its environment (mpirun
passes the environment to its ranks, and nannies to their workers), so the
run's processes are found by that token, and only those, even after hydra has
moved them into sessions of their own.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "start_daskmpi.py"
SCRIPTS = Path(__file__).resolve().parent / "scripts"
TOKEN_VARIABLE = "START_DASKMPI_TEST_RUN"


def mpirun() -> str | None:
    """The mpirun beside this Python (a venv's MPICH wheel) first, else PATH's."""
    beside = Path(sys.executable).parent / "mpirun"
    return str(beside) if beside.exists() else shutil.which("mpirun")


def is_open_mpi(command: str) -> bool:
    done = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30)
    return "Open MPI" in done.stdout + done.stderr


def mpirun_prefix(np: int) -> list[str]:
    command = mpirun()
    if command is None:
        raise RuntimeError("no mpirun: pip install mpich")
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
    """``mpirun -np NP python start_daskmpi.py ARGS`` (no mpirun when np is None)."""
    token = uuid.uuid4().hex
    command = [
        *(mpirun_prefix(np) if np else []),
        *(launcher or [sys.executable, str(LAUNCHER)]),
        *args,
    ]
    environ = {**os.environ, **(env or {}), TOKEN_VARIABLE: token, "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    process = subprocess.Popen(
        command, cwd=cwd, env=environ, text=True, start_new_session=True,
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
