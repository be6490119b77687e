"""Runs of many CPU workers, oversubscribed, counted for a signal at the end.

    python bench/exit_crashes.py --ranks 34 --runs 20 [--no-nanny-too] [--launcher DIR]
                                 [--deadline SECONDS] [--out FILE.json]

Each run is ``mpirun --oversubscribe --bind-to none -np RANKS python
start_daskmpi.py --gpus-per-node 0 --nthreads 1 --memory-limit 2GB job.py``
(job.py: one small dask.array sum), as issue 26 saw Open MPI print
``*** End of error message ***`` (a rank got a signal) after 4 of 6 such runs
on a 16-core machine.  Every rank runs with PYTHONFAULTHANDLER=1: a rank
that gets SIGSEGV prints each of its threads' Python stack, which says which
rank and what it was doing.  Counted: status, the launcher's signal lines,
fatal errors; --launcher DIR runs another checkout's start_daskmpi.py
(an older commit, side by side).  Stops starting runs past --deadline.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOB = """
import dask.array as da
from distributed import get_client
client = get_client()
print("SUM", float((da.ones((4000, 4000), chunks=1000) + 1).sum().compute()), flush=True)
"""
SIGNS = re.compile(r"End of error message|exited on signal|Fatal Python error|"
                   r"Segmentation fault|BAD TERMINATION|Signal: ")


def mpirun_command(ranks: int) -> list[str]:
    mpirun = shutil.which("mpirun") or str(Path(sys.executable).parent / "mpirun")
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout
    carried = [w for name in ("PYTHONFAULTHANDLER", "PYTHONPATH") if name in os.environ
               for w in ("-x", name)]
    extra = ["--oversubscribe", "--bind-to", "none", *carried] if "Open MPI" in version else []
    return [mpirun, *extra, "-np", str(ranks)]


def one_run(args: argparse.Namespace, nanny: bool, folder: Path, number: int) -> dict:
    launcher = Path(args.launcher or ROOT) / "start_daskmpi.py"
    command = [*mpirun_command(args.ranks), sys.executable, str(launcher), "--interface", "lo",
               "--gpus-per-node", "0", "--nthreads", "1", "--memory-limit", "2GB",
               "--log-dir", str(folder / f"logs-{number}"), *([] if nanny else ["--no-nanny"]),
               str(folder / "job.py")]
    start = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        rc = None
        output = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(
            errors="replace")
    signs = [line for line in output.splitlines() if SIGNS.search(line)]
    return {"nanny": nanny, "rc": rc, "seconds": round(time.monotonic() - start, 2),
            "sum_ok": "SUM 32000000.0" in output, "signs": signs,
            "tail": output[-6000:] if signs or rc else ""}


def main() -> None:
    os.environ["PYTHONFAULTHANDLER"] = "1"  # every rank's, through mpirun
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=34)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-nanny-too", action="store_true",
                        help="every other run with --no-nanny")
    parser.add_argument("--launcher", help="the checkout whose start_daskmpi.py to run")
    parser.add_argument("--deadline", type=float, default=1e9, help="seconds: start no run after")
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    began = time.monotonic()
    runs = []
    with tempfile.TemporaryDirectory(prefix="exit-crashes-") as tmp:
        (Path(tmp) / "job.py").write_text(JOB)
        for number in range(args.runs):
            if time.monotonic() - began > args.deadline:
                break
            nanny = not (args.no_nanny_too and number % 2)
            runs.append(one_run(args, nanny, Path(tmp), number))
            last = runs[-1]
            print(f"run {number + 1} ({'nanny' if nanny else '--no-nanny'}): rc {last['rc']}, "
                  f"{last['seconds']} s, sum {'ok' if last['sum_ok'] else 'WRONG'}, "
                  f"{len(last['signs'])} sign(s) of a signal", flush=True)
    bad = [r for r in runs if r["rc"] != 0 or r["signs"] or not r["sum_ok"]]
    summary = {"ranks": args.ranks, "launcher": args.launcher or "this checkout",
               "runs": len(runs), "bad": len(bad), "each": runs}
    print(f"{args.ranks} ranks: {len(bad)} of {len(runs)} runs bad")
    for run in bad[:2]:
        print(run["tail"][-3000:])
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
