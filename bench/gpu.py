"""cupy_test on a GPU node: GPU vs CPU by size, beside the memory-bandwidth
roofline; chunk sizes; an RMM pool or not; the launcher vs a hand-built
LocalCUDACluster.  For a node with one or more NVIDIA GPUs, CuPy and dask-cuda.

    python bench/gpu.py --out bench/results/gpu.json      # then: python bench/plot.py

Every figure is cupy_test's own: the steady-state median of its calls after the
first, which it reports apart (CUDA's start, kernel compilation).  The CPU runs
use one CPU worker with every core of the node (--gpus-per-node 0).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from launch import launcher_command  # noqa: E402

# Bytes each element of x costs the operation as written, one CuPy kernel per
# step, each reading and writing whole chunks: draw (write 8), SD * x (16),
# MEAN + (16), + 1 (16), then the sum of the strided view [::2, ::2], which
# reads every other row in whole sectors (4).
BYTES_PER_ELEMENT = 8 + 16 + 16 + 16 + 4
CPU_CHUNKS = 5000  # 200 MB NumPy chunks: one per core fits the node's memory


def parse(output: str) -> dict:
    """cupy_test's figures, per part ('with gpus', 'without gpus')."""
    parts, part = {}, None
    for line in output.splitlines():
        if line in ("with gpus", "without gpus"):
            part = line
        elif part and (m := re.match(r"elapsed time: ([\d.]+) s", line)):
            parts[part] = {"seconds": float(m[1])}
        elif part and (m := re.search(r"first call ([\d.]+) s; steady state median of \d+: (.*) s",
                                      line)):
            parts[part].update(first=float(m[1]), steady=[float(s) for s in m[2].split(", ")])
        elif part and "sum = " in line:
            parts[part]["ok"] = line.rstrip().endswith(": ok")
    return parts


def save(results: dict, out: Path | None) -> None:
    """After every step: a run cut short by its time limit keeps what it measured."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))


def launcher_run(options: list[str], test_args: list[str], logs: Path) -> dict:
    ranks = gpu_count() + 2 if "--gpus-per-node" not in options else 3
    command = launcher_command(
        ["--interface", "lo", "--log-dir", str(logs), *options, str(ROOT / "cupy_test.py"),
         *test_args],
        ranks,
    )
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    figures = parse(done.stdout)
    figures["rc"], figures["wall"] = done.returncode, time.perf_counter() - start
    if done.returncode:
        figures["stderr"] = done.stderr[-2000:]
    print(" ".join(options + test_args), "->", json.dumps(figures), flush=True)
    return figures


def local_cuda_cluster_run(test_args: list[str]) -> dict:
    """The same cupy_test on LocalCUDACluster, as a dask-cuda user builds it."""
    from dask_cuda import LocalCUDACluster
    from distributed import Client

    import cupy_test

    # The GPU resource is how cupy_test finds GPU workers; the launcher's have it.
    with LocalCUDACluster(threads_per_worker=1, resources={"GPU": 1}) as cluster:
        with Client(cluster):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                rc = cupy_test.main([*test_args, "--skip-cpu"])
    figures = {**parse(out.getvalue()), "rc": rc}
    print("LocalCUDACluster", " ".join(test_args), "->", json.dumps(figures), flush=True)
    return figures


def gpu_count() -> int:
    from start_daskmpi.plan.gpus import count_gpus

    return count_gpus()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 100000, 500000])
    parser.add_argument("--cpu-sizes", type=int, nargs="+", default=[20000, 100000])
    parser.add_argument("--chunks", type=int, nargs="+", default=[10000, 20000, 25000],
                        help="chunk sides tried at the middle size")
    parser.add_argument("--best-chunks", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--bandwidth", type=float, default=3.0e12,
                        help="device memory bandwidth, bytes/s (H100 SXM: ~3 TB/s measured)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {gpu_count()} GPU(s)",
        "bandwidth": args.bandwidth,  # the roofline's: see BYTES_PER_ELEMENT and plot.py
        "gpu": {}, "cpu": {}, "chunks": {}, "rmm": {}, "local_cuda_cluster": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp, "logs")
        repeat = ["--repeat", str(args.repeat)]
        for size in args.sizes:
            chunks = min(args.best_chunks, size // 2)
            results["gpu"][size] = launcher_run(
                [], ["--size", str(size), "--chunks", str(chunks), *repeat, "--skip-cpu"], logs
            )
            save(results, args.out)
        for size in args.cpu_sizes:
            results["cpu"][size] = launcher_run(
                ["--gpus-per-node", "0"],
                ["--size", str(size), "--chunks", str(CPU_CHUNKS), "--repeat", "1"], logs,
            )
            save(results, args.out)
        middle = sorted(args.sizes)[len(args.sizes) // 2]
        for chunks in args.chunks:
            results["chunks"][chunks] = launcher_run(
                [], ["--size", str(middle), "--chunks", str(chunks), *repeat, "--skip-cpu"], logs
            )
            save(results, args.out)
        same = ["--size", str(middle), "--chunks", str(args.best_chunks), *repeat]
        for name, options in {"none": [], "pool": ["--rmm-pool-size", "60GB"]}.items():
            results["rmm"][name] = launcher_run(options, [*same, "--skip-cpu"], logs)
            save(results, args.out)
        results["local_cuda_cluster"] = {
            "launcher": launcher_run([], [*same, "--skip-cpu"], logs),
            "LocalCUDACluster": local_cuda_cluster_run(same),
        }
        save(results, args.out)


if __name__ == "__main__":
    main()
