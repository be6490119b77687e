"""Whole-process start -> ready -> script done -> exit: this launcher vs dask-mpi.

    python bench/startup.py [--ranks 3 6] [--repeat 5] [--out bench/results/startup.json]

For each rank count, the same tiny job (wait for every worker, one task) runs
under the same mpirun, the variants interleaved, and the wall time of the whole
mpirun is taken.  dask-mpi's ``initialize()`` starts plain workers in the rank
processes; the launcher by default starts each worker behind a nanny, which
restarts it if it dies, and with ``--no-nanny`` like dask-mpi.  Loopback only.
Prints medians and the ratios to dask-mpi.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from launch import launcher_command  # noqa: E402

JOB = """
import sys
from distributed import Client
client = Client()
client.wait_for_workers({workers})
assert client.submit(sum, [1, 2]).result() == 3
"""

DASK_MPI = """
from dask_mpi import initialize
initialize(interface="lo", dashboard_address="127.0.0.1:0", nthreads=1)
""" + JOB


def timed(command: list[str], timeout: float = 300) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, timeout=timeout, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
               f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}",
               "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in args.ranks:
            job = Path(tmp, f"job{ranks}.py")
            job.write_text(JOB.format(workers=ranks - 2))
            baseline = Path(tmp, f"dask_mpi{ranks}.py")
            baseline.write_text(DASK_MPI.format(workers=ranks - 2))
            logs = str(Path(tmp, "logs"))
            ours = ["--interface", "lo", "--gpus-per-node", "0", "--log-dir", logs]
            variants = {
                "launcher": launcher_command([*ours, str(job)], ranks),
                "launcher --no-nanny": launcher_command([*ours, "--no-nanny", str(job)], ranks),
                "dask-mpi": launcher_command([], ranks, [sys.executable, str(baseline)]),
            }
            for command in variants.values():
                timed(command)  # warm the file cache
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.repeat):
                for name, command in variants.items():
                    times[name].append(timed(command))
            medians = {name: statistics.median(t) for name, t in times.items()}
            results["runs"].append({"ranks": ranks, "seconds": times, "medians": medians})
            print(
                f"{ranks:3d} ranks: "
                + ", ".join(f"{name} {median:.2f} s" for name, median in medians.items())
                + "; ratios to dask-mpi: "
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
