"""Where a nanny's worker processes come from (worker_processes.py): a fork
server, forked from a rank under mpirun, else a fresh interpreter."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launch import FORK_SERVER, PACKAGE_PATH, ROOT, SCRIPTS
from start_daskmpi.servers import worker_processes
from start_daskmpi.servers.worker_processes import nanny_survives_fast_starts

needs_the_fix = pytest.mark.skipif(not FORK_SERVER, reason="no fork server before distributed "
                                   "2026.7 (worker_processes.NANNY_RACE_FIXED)")


def probe(tmp_path: Path, threads: str) -> dict:
    """tests/scripts/fork_server_probe.py's answer, once its rank has ended
    and the fork server with it.  Whatever is left of its process group (its
    own, made here) is killed at the end."""
    held = tmp_path / "held-by-the-rank.txt"
    rank = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "fork_server_probe.py"), str(held), threads],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": PACKAGE_PATH},
        start_new_session=True,
    )
    try:
        # Its first line, not the end of its output: a server left running holds that.
        seen = json.loads(rank.stdout.readline() or "{}")
        assert rank.wait(timeout=60) == 0 and seen, seen
        seen["server_outlived_the_rank"] = not gone(seen["server"])
        return seen
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(rank.pid, signal.SIGKILL)
        rank.wait()
        rank.stdout.close()


def gone(pid: int, bound: float = 30.0) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@needs_the_fix
@pytest.mark.timeout(120)
def test_a_ranks_fork_server_is_its_fork_with_its_imports_and_none_of_its_files(tmp_path):
    seen = probe(tmp_path, threads="none")
    assert seen["origin"] == "a fork of its rank", seen
    assert seen["distributed_is_the_ranks"], seen  # not imported anew
    assert not seen["server_holds_the_ranks_file"], seen
    assert not seen["server_outlived_the_rank"], seen


@needs_the_fix
@pytest.mark.timeout(120)
def test_a_rank_with_a_thread_gets_a_fresh_fork_server(tmp_path):
    seen = probe(tmp_path, threads="thread")
    assert seen["origin"] == "a fresh fork server", seen
    assert not seen["distributed_is_the_ranks"], seen
    assert not seen["server_outlived_the_rank"], seen


def test_a_command_other_than_python_c_is_spawned_as_multiprocessing_would(monkeypatch):
    spawned = []
    monkeypatch.setattr(worker_processes, "SPAWN", lambda *call: spawned.append(call) or 7)
    assert worker_processes.run_in_a_fork("/usr/bin/python3", ["python3", "server.py"], [5]) == 7
    assert spawned == [("/usr/bin/python3", ["python3", "server.py"], [5])]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method, expected", [
    # distributed's default: ours replaces it, where distributed is recent enough
    ("spawn", "forkserver True" if FORK_SERVER else "spawn False"),
    ("fork", "fork False"),  # a method of the user's own choosing is left as it is
])
def test_worker_processes_come_from_a_fork_server_unless_another_method_was_chosen(
    method, expected
):
    """A process started as the nanny starts its worker's (distributed's own
    context) has the fork server for its parent, not this process."""
    code = (
        "import os, time, dask, psutil\n"
        "from distributed.utils import get_mp_context\n"
        "from start_daskmpi.servers.worker_processes import start_fork_server\n"
        f"dask.config.set({{'distributed.worker.multiprocessing-method': {method!r}}})\n"
        "start_fork_server()\n"
        "child = get_mp_context().Process(target=time.sleep, args=(10,))\n"
        "child.start()\n"
        "parent = psutil.Process(child.pid).parent()\n"
        "print(dask.config.get('distributed.worker.multiprocessing-method'),\n"
        "      parent.pid != os.getpid()\n"
        "      and 'multiprocessing.forkserver' in ' '.join(parent.cmdline()))\n"
        "child.kill()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=50, cwd=ROOT)
    assert done.stdout.strip() == expected, done


def test_without_a_fork_server_the_nanny_spawns_as_distributed_does(monkeypatch):
    import multiprocessing.forkserver

    import dask

    def no_socket() -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(multiprocessing.forkserver, "ensure_running", no_socket)
    monkeypatch.setattr(worker_processes, "PRELOAD", "json")  # nothing of ours preloaded
    option = "distributed.worker.multiprocessing-method"
    with dask.config.set({option: "spawn"}):
        worker_processes.start_fork_server()
        assert dask.config.get(option) == "spawn"


@pytest.mark.parametrize("version, survives", [
    ("2024.8.0", False), ("2026.6.2", False), ("2026.7.0", True), ("2026.8.0", True),
    ("2027.1.0", True), ("2026.10.1+3.gabc", True),
])
def test_the_fork_server_waits_for_the_nanny_fix(version, survives):
    assert nanny_survives_fast_starts(version) is survives
