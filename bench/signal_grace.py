"""How long a script's ``finally`` gets when an MPI launcher is told to end the job.

    python bench/signal_grace.py [--mpirun PATH] [--python PATH] [--ranks 3]

Starts start_daskmpi under the launcher with a script whose ``finally`` writes
a line each second for 40 s, then signals the launcher (not its ranks) the way
a batch system or daskmpi_job_gpu.sh does, and reports, for each way, the
seconds of the ``finally`` that ran, the launcher's status and how long it took
to end.  Each way runs in a process group of its own, which is killed at the
end whatever happened.  Loopback only, CPU workers.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "scripts" / "slow_finally.py"
FINALLY_SECONDS = 40


def is_open_mpi(mpirun: str) -> bool:
    done = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30)
    return "Open MPI" in done.stdout + done.stderr


def measure(mpirun: str, python: str, ranks: int, signum: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        marker = folder / "seconds"
        command = [
            mpirun, *extra, "-np", str(ranks), python, str(ROOT / "start_daskmpi.py"),
            "--interface", "lo", "--gpus-per-node", "0", "--log-dir", str(folder / "logs"),
            "--local-directory", str(folder), str(SCRIPT), str(FINALLY_SECONDS), str(marker),
        ]
        env = {**os.environ, "TMPDIR": str(folder)}
        with open(folder / "output", "w+") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
            try:
                deadline = time.monotonic() + 120
                while "READY" not in (folder / "output").read_text():
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((folder / "output").read_text()[-2000:])
                    time.sleep(0.2)
                process.send_signal(signum)
                signaled = time.monotonic()
                try:
                    rc = process.wait(timeout=FINALLY_SECONDS + 60)
                except subprocess.TimeoutExpired:  # the signal changed nothing
                    rc = "still running"
                took = time.monotonic() - signaled
            finally:
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # the group made for this run
                except ProcessLookupError:
                    pass
                process.wait()
        ran = len(marker.read_text().split()) if marker.exists() else 0
        return {"rc": rc, "seconds_to_end": round(took, 1), "finally_seconds": ran}


def ways(open_mpi: bool) -> list[tuple[str, int, list[str]]]:
    found = [("SIGTERM to the launcher", signal.SIGTERM, []),
             ("SIGUSR1 to the launcher (daskmpi_job_gpu.sh's way)", signal.SIGUSR1, [])]
    if open_mpi:
        found.insert(1, ("SIGTERM, with --mca odls_base_sigkill_timeout 10",
                         signal.SIGTERM, ["--mca", "odls_base_sigkill_timeout", "10"]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpirun", default=str(Path(sys.executable).parent / "mpirun"))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--ranks", type=int, default=3)
    args = parser.parse_args()
    mpirun = args.mpirun if Path(args.mpirun).exists() else shutil.which("mpirun")
    open_mpi = is_open_mpi(mpirun)
    said = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout
    version = next((line for line in said.splitlines() if "Version" in line or "MPI" in line),
                   said.splitlines()[0])
    print(f"{version.strip()}; the finally would run {FINALLY_SECONDS} s")
    print("| signal | finally's seconds that ran | launcher's status | seconds to end |")
    print("|---|---|---|---|")
    extra = ["--oversubscribe"] if open_mpi else []
    for name, signum, more in ways(open_mpi):
        seen = measure(mpirun, args.python, args.ranks, signum, extra + more)
        print(f"| {name} | {seen['finally_seconds']} | {seen['rc']} | "
              f"{seen['seconds_to_end']} |", flush=True)


if __name__ == "__main__":
    main()
