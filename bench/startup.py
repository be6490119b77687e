"""Whole-process start -> every worker registered -> script done -> exit: this
launcher vs dask-mpi, and its drop-in initialize() vs dask-mpi's.

    python bench/startup.py [--ranks 3 6] [--repeat 5] [--compare-with CHECKOUT ...]
        [--out bench/results/startup.json]

For each rank count, the same tiny job (wait for every worker, one task) runs
under the same mpirun, the variants interleaved; taken are the seconds from
mpirun's start to the job seeing every worker registered, and to mpirun's exit.
dask-mpi's ``initialize()`` starts plain workers in the rank processes; the
launcher by default starts each worker behind a nanny, which restarts it if it
dies, and with ``--no-nanny`` like dask-mpi.  ``--compare-with`` adds the
launcher of another checkout of this repository (an earlier commit, say), run
side by side.  Loopback only.  Prints medians and the ratios to dask-mpi.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from launch import launcher_command  # noqa: E402

JOB = """
import time
from distributed import Client
client = Client()
client.wait_for_workers({workers})
print("REGISTERED", time.time(), flush=True)
assert client.submit(sum, [1, 2]).result() == 3
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


def timed(command: list[str], timeout: float = 600) -> tuple[float, float]:
    """Seconds to every worker registered, and to the end, of one run."""
    start = time.time()
    done = subprocess.run(command, check=True, timeout=timeout, capture_output=True, text=True)
    registered = float(re.search(r"^REGISTERED (\S+)$", done.stdout, re.M)[1])
    return registered - start, time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare-with", type=Path, nargs="*", default=[], metavar="CHECKOUT")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # The drop-in's script imports start_daskmpi from this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
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
                    f"launcher of {checkout.name}": launcher_command(
                        [*ours, str(job)], ranks,
                        [sys.executable, str(checkout.resolve() / "start_daskmpi.py")],
                    )
                    for checkout in args.compare_with
                },
                "initialize()": launcher_command([], ranks, [sys.executable, str(drop_in)]),
                "dask-mpi": launcher_command([], ranks, [sys.executable, str(baseline)]),
            }
            for command in variants.values():
                timed(command)  # warm the file cache
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
            for _ in range(args.repeat):
                for name, command in variants.items():
                    times[name].append(timed(command))
            registered = {name: statistics.median(r for r, _ in t) for name, t in times.items()}
            medians = {name: statistics.median(e for _, e in t) for name, t in times.items()}
            results["runs"].append({"ranks": ranks, "seconds": times, "medians": medians,
                                    "registered": registered})
            print(
                f"{ranks:3d} ranks: "
                + ", ".join(f"{name} {registered[name]:.2f} / {medians[name]:.2f} s"
                            for name in variants)
                + " (registered / exit); exit ratios to dask-mpi: "
                + ", ".join(
                    f"{name} {medians[name] / medians['dask-mpi']:.2f}"
                    for name in variants if name != "dask-mpi"
                ),
                flush=True,
            )
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
