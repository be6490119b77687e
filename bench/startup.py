"""Whole-process start -> every worker registered -> script done -> exit: this
launcher vs dask-mpi, and its drop-in initialize() vs dask-mpi's.

    python bench/startup.py [--ranks 3 6] [--repeat 5] [--compare-with CHECKOUT ...]
        [--out bench/results/startup.json]

For each rank count, the same tiny job (wait for every worker, one task) runs
under the same mpirun, the variants interleaved (each round begins one variant
further on); taken are the seconds from mpirun's start to the job seeing every
worker registered, and to mpirun's exit.
dask-mpi's ``initialize()`` starts plain workers in the rank processes; the
launcher by default starts each worker behind a nanny, which restarts it if it
dies, and with ``--no-nanny`` like dask-mpi.  ``--compare-with`` adds the
launcher of another checkout of this repository (an earlier commit, say), with
and without the nanny, run side by side.  Loopback only.  Prints medians and
the ratios to dask-mpi, and for each run where the start-up went, from the
launcher's rank logs or dask-mpi's stderr (the seconds from mpirun's start to
the last rank agreed, the launcher's alone, the scheduler up, the last worker
started and registered).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from launch import PACKAGE_PATH, launcher_command  # noqa: E402

JOB = """
import time
from distributed import Client
client = Client()
client.wait_for_workers({workers})
print("REGISTERED", time.time(), flush=True)
assert client.submit(sum, [1, 2]).result() == 3
print("DONE", time.time(), flush=True)
"""

DASK_MPI = """
from dask_mpi import initialize
initialize(interface="lo", dashboard_address="127.0.0.1:0", nthreads=1)
""" + JOB

# The same script on this launcher's drop-in initialize() (its defaults: one
# thread, no nanny, as dask-mpi's), its workers on the CPU.
DROP_IN = """
from start_daskmpi import initialize
initialize(interface="lo", gpus_per_node=0, log_dir={logs!r})
""" + JOB


# Where a launcher run's time goes, from its rank logs (distributed's log
# format starts with the time): the last rank done with the agreement (the
# layout, the log folder, its certificate: its first line), the scheduler up,
# the last worker started, the last worker registered; at the end, once the
# script is done, the last worker stopping and the scheduler closing.
STARTUP_PHASES = {
    "ranks agreed": (r"rank\d+-[a-z]+\.log", r"start_daskmpi - INFO - rank \d+ on "),
    "scheduler up": (r"rank\d+-scheduler\.log", r"Scheduler at:"),
    "workers started": (r"rank\d+-worker(-process)?\.log", r"Start worker at:"),
    "workers registered": (r"rank\d+-worker(-process)?\.log", r"Registered to:"),
}
END_PHASES = {
    "workers stopping": (r"rank\d+-worker(-process)?\.log", r"Stopping worker"),
    "scheduler closing": (r"rank\d+-scheduler\.log", r"Scheduler closing all comms"),
}
PHASES = {**STARTUP_PHASES, **END_PHASES}
# In a run's order: the script's own words come between the two.
ORDER = [*STARTUP_PHASES, "registered", "script done", *END_PHASES, "exit"]
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def phases(lines: list[tuple[str, str]], start: float) -> dict[str, float]:
    """Seconds from ``start`` to the last line of each phase among ``lines``,
    (file name, line) pairs; a name of "" (dask-mpi's stderr) matches every file."""
    found: dict[str, float] = {}
    for name, line in lines:
        stamp = STAMP.match(line)
        for phase, (in_file, pattern) in PHASES.items():
            if stamp and (not name or re.fullmatch(in_file, name)) and re.search(pattern, line):
                at = datetime.datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                found[phase] = max(found.get(phase, 0.0), at - start)
    return found


def timed(command: list[str], logs: Path, timeout: float = 600) -> dict[str, Any]:
    """Seconds to every worker registered (as the script saw it), to the end,
    and to each phase of ``logs`` (emptied first; dask-mpi's: its stderr), of one
    run; of a failed run, its status and its output's last lines instead."""
    shutil.rmtree(logs, ignore_errors=True)
    start = time.time()
    done = subprocess.run(command, timeout=timeout, capture_output=True, text=True)
    end = time.time() - start
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).splitlines()[-6:]
        print(f"    failed, status {done.returncode}: {' | '.join(tail)}", flush=True)
        return {"failed": done.returncode, "tail": tail}
    said = {word: float(re.search(rf"^{word} (\S+)$", done.stdout, re.M)[1]) - start
            for word in ("REGISTERED", "DONE")}
    lines = [(path.name, line) for path in logs.glob("*.log")
             for line in path.read_text(errors="replace").splitlines()]
    lines += [("", line) for line in done.stderr.splitlines()]
    return {**phases(lines, start), "registered": said["REGISTERED"],
            "script done": said["DONE"], "exit": end}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare-with", type=Path, nargs="*", default=[], metavar="CHECKOUT")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # The drop-in's script imports start_daskmpi from this checkout.
    os.environ["PYTHONPATH"] = PACKAGE_PATH
    results = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} cores, Python {platform.python_version()}",
               "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in args.ranks:
            job = Path(tmp, f"job{ranks}.py")
            job.write_text(JOB.format(workers=ranks - 2))
            baseline = Path(tmp, f"dask_mpi{ranks}.py")
            baseline.write_text(DASK_MPI.format(workers=ranks - 2))
            logs = str(Path(tmp, "logs"))
            drop_in = Path(tmp, f"drop_in{ranks}.py")
            drop_in.write_text(DROP_IN.format(workers=ranks - 2, logs=logs))
            ours = ["--interface", "lo", "--gpus-per-node", "0", "--log-dir", logs]
            variants = {
                "launcher": launcher_command([*ours, str(job)], ranks),
                "launcher --no-nanny": launcher_command([*ours, "--no-nanny", str(job)], ranks),
                **{
                    f"launcher{nanny} of {checkout.name}": launcher_command(
                        [*ours, *nanny.split(), str(job)], ranks,
                        [sys.executable, str(checkout.resolve() / "start_daskmpi.py")],
                    )
                    for checkout in args.compare_with for nanny in ("", " --no-nanny")
                },
                "initialize()": launcher_command([], ranks, [sys.executable, str(drop_in)]),
                "dask-mpi": launcher_command([], ranks, [sys.executable, str(baseline)]),
            }
            for command in variants.values():
                timed(command, Path(logs))  # warm the file cache
            times: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
            names = list(variants)
            failed: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
            for round_ in range(args.repeat):
                # Each round begins one further on: no variant always follows the same one.
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    run = timed(variants[name], Path(logs))
                    (failed if "failed" in run else times)[name].append(run)
            times = {name: t for name, t in times.items() if t}  # not those whose runs all failed
            registered = {name: statistics.median(r["registered"] for r in t)
                          for name, t in times.items()}
            medians = {name: statistics.median(r["exit"] for r in t) for name, t in times.items()}
            breakdown = {name: {phase: round(statistics.median(r[phase] for r in t), 2)
                                for phase in ORDER
                                if all(phase in r for r in t)}
                         for name, t in times.items()}
            results["runs"].append({"ranks": ranks, "seconds": times, "medians": medians,
                                    "registered": registered, "phases": breakdown,
                                    "failed": failed})
            print(
                f"{ranks:3d} ranks: "
                + ", ".join(f"{name} {registered[name]:.2f} / {medians[name]:.2f} s"
                            for name in times)
                + " (registered / exit); exit ratios to dask-mpi: "
                + ", ".join(
                    f"{name} {medians[name] / medians['dask-mpi']:.2f}"
                    for name in times if name != "dask-mpi"
                ),
                flush=True,
            )
            for name, seen in breakdown.items():
                said = ", ".join(f"{phase} {at:.2f}" for phase, at in seen.items())
                if failed[name]:
                    statuses = ", ".join(str(run["failed"]) for run in failed[name])
                    said += f"; {len(failed[name])} more run(s) failed (status {statuses})"
                print(f"    {name}: {said}", flush=True)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
