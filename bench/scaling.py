"""Startup scaling: seconds from `mpirun` to "all workers registered", by ranks.

    python bench/scaling.py [--ranks 3 4 6 8 12 16] [--repeat 3] [--out bench/results/scaling.json]

On CPU workers, loopback, ranks oversubscribing this machine's cores.  The
moment is the driver's "Client status:" line, printed once every planned worker
has registered; the total is the whole mpirun, through exit.  Medians.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from launch import launcher_command  # noqa: E402


def one_run(ranks: int, logs: Path, job: Path) -> tuple[float, float]:
    """(seconds to all registered, seconds to exit) of one launcher run."""
    command = launcher_command(
        ["--interface", "lo", "--gpus-per-node", "0", "--log-dir", str(logs), str(job)], ranks
    )
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    ready = None
    for line in process.stdout:
        if ready is None and line.startswith("Client status:"):
            ready = time.perf_counter() - start
    if process.wait(timeout=300) != 0 or ready is None:
        raise RuntimeError(f"{ranks} ranks: the run failed")
    return ready, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[3, 4, 6, 8, 12, 16])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp, "job.py")
        job.write_text("from distributed import get_client\nget_client()\n")
        for ranks in args.ranks:
            runs = [one_run(ranks, Path(tmp, "logs"), job) for _ in range(args.repeat)]
            ready = statistics.median(r for r, _ in runs)
            total = statistics.median(t for _, t in runs)
            rows.append({"ranks": ranks, "workers": ranks - 2, "registered": ready,
                         "total": total, "runs": runs})
            print(f"{ranks:3d} ranks ({ranks - 2:2d} workers): all registered after "
                  f"{ready:.2f} s, exit after {total:.2f} s", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "machine": f"{platform.node()}, {os.cpu_count()} cores, "
                       f"Python {platform.python_version()}",
            "rows": rows,
        }, indent=2))


if __name__ == "__main__":
    main()
