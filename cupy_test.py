"""GPU vs CPU dask.array on the launcher's cluster.

The example of the Dask blog post "GPU Dask Arrays, first steps": the sum of
``(x + 1)[::2, ::2]`` for a normal random array ``x`` (mean 10, sd 1), once with
CuPy chunks on the GPU workers and once with NumPy chunks.

    mpirun -np 10 python start_daskmpi.py cupy_test.py                 # quick
    mpirun -np 10 python start_daskmpi.py cupy_test.py --size 500000   # the blog's 2 TB

The first call of each part pays for CUDA's initialisation and CuPy's kernel
compilation (or NumPy's first touch of memory); it is reported apart from the
steady state, the median of ``--repeat`` calls after it.  Each sum is checked
against its expectation; a wrong one makes the exit status 1.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import math
import os
import statistics
import sys
import time

import dask.array as da
import numpy as np
from distributed import get_client, progress, wait

BLOG = "https://blog.dask.org/2019/01/03/dask-array-gpus-first-steps"
MEAN, SD = 10.0, 1.0
PROGRESS_AFTER = 3.0  # seconds: a call still running then gets a progress bar


def expected_sum(size: int) -> tuple[float, float]:
    """Mean and standard deviation of the sum over ``(x + 1)[::2, ::2]``."""
    count = math.ceil(size / 2) ** 2
    return count * (MEAN + 1), math.sqrt(count) * SD


def tolerance(size: int) -> float:
    """How far a correct sum may fall from its mean: six standard deviations, which
    a correct run exceeds about once in 10^9.  Float64 rounding in the (pairwise)
    sums is orders of magnitude smaller."""
    return 6 * expected_sum(size)[1]


def random_chunk(backend: str, seed: int, block_info: dict | None = None):
    """One chunk of ``x``, drawn by ``backend``'s Generator where the task runs: a
    GPU worker's own device for CuPy.  Each chunk has a stream of its own."""
    where = block_info[None]
    index = int(np.ravel_multi_index(where["chunk-location"], where["num-chunks"]))
    rng = importlib.import_module(backend).random.default_rng(seed + index)
    # CuPy's Generator has standard_normal but no normal.
    return MEAN + SD * rng.standard_normal(where["chunk-shape"])


def on_host(total) -> np.ndarray:
    """A sum, as a NumPy number: a CuPy one would make a CUDA context wherever
    it is unpickled, the client's process included."""
    return np.asarray(float(total))


def normal_array(size: int, chunks: int, backend: str) -> da.Array:
    """``x``, with chunks of ``backend`` ("cupy" or "numpy"), made on the workers
    only: dask's own random functions (da.random with the cupy backend) build a
    Generator and a chunk of metadata in the client's process, which would then
    hold a CUDA context, and cuRAND state, on a GPU that a worker owns."""
    seed = int(np.random.SeedSequence().generate_state(1)[0])
    return da.map_blocks(
        random_chunk, backend, seed, chunks=da.core.normalize_chunks(chunks, (size, size)),
        dtype=float, meta=np.empty((0, 0)),
    )


def blog_sum(size: int, chunks: int, backend: str) -> da.Array:
    """The lazy sum of ``(x + 1)[::2, ::2]``, with chunks of ``backend``; a NumPy
    number once computed."""
    total = (normal_array(size, chunks, backend) + 1)[::2, ::2].sum()
    return total.map_blocks(on_host, dtype=float, meta=np.empty(()))


def restriction(part: list[str], everyone: list[str]) -> list[str] | None:
    """``part``'s workers as a restriction of the tasks, or None where they are the
    whole cluster: the scheduler holds back and places next to their siblings
    only unrestricted tasks (its queue of root tasks); restricted ones all go out
    at once, by estimates, and their partial sums cross between workers more."""
    return None if set(part) == set(everyone) else part


def compute(client, array: da.Array, workers: list[str] | None) -> float:
    """Compute ``array`` on ``workers`` (None: any); a bar shows progress once it
    takes a while."""
    future = client.compute(array, workers=workers)
    try:
        wait(future, timeout=PROGRESS_AFTER)
    except asyncio.TimeoutError:  # distributed's; the builtin TimeoutError since Python 3.11
        progress(future, notebook=False)
        print()
    return float(future.result())


def timed_calls(
    client, args, backend: str, workers: list[str] | None
) -> tuple[float, list[float], float]:
    """The first call's seconds, the steady calls' seconds, and the last sum."""
    seconds = []
    for _ in range(1 + args.repeat):
        array = blog_sum(args.size, args.chunks, backend)
        start = time.perf_counter()
        total = compute(client, array, workers)
        seconds.append(time.perf_counter() - start)
    return seconds[0], seconds[1:], total


def gpu_workers(client) -> tuple[list[str], str | None]:
    """The GPU workers' addresses, and why the GPU part cannot run (None if it can)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    gpus = [address for address, w in workers.items() if w["resources"].get("GPU")]
    if not gpus:
        return gpus, "the cluster has no GPU workers (no GPU on its nodes, or --gpus-per-node 0)"
    if importlib.util.find_spec("cupy") is None:
        return gpus, "CuPy is not installed (pip install 'start-daskmpi[gpu]')"
    return gpus, None


def check(total: float, size: int) -> bool:
    mean, _ = expected_sum(size)
    ok = abs(total - mean) <= tolerance(size)
    print(f"    sum = {total:.9g}, expected {mean:.9g} +- {tolerance(size):.3g}: "
          f"{'ok' if ok else 'WRONG'}")
    return ok


def run_part(client, args, backend: str, workers: list[str] | None) -> bool:
    first, steady, total = timed_calls(client, args, backend, workers)
    median = statistics.median(steady) if steady else first
    print(f"elapsed time: {median:.3f} s")
    if steady:
        print(f"    first call {first:.3f} s; steady state median of {len(steady)}: "
              f"{', '.join(f'{s:.3f}' for s in steady)} s")
    gigabytes = args.size**2 * 8 / 1e9
    print(f"    {gigabytes:,.1f} GB of random numbers, {gigabytes / median:,.1f} GB/s")
    return check(total, args.size)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=positive, default=10000,
                        help="side of the square array (default 10000; the blog's: 500000)")
    parser.add_argument("--chunks", type=positive,
                        help="side of a square chunk (default: size / 4, at most 20000)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="steady-state calls after the first (default 2)")
    parser.add_argument("--skip-cpu", action="store_true",
                        help="run the GPU part only (the CPU part of a big size takes long)")
    args = parser.parse_args(argv)
    args.chunks = args.chunks or min(20000, max(1, args.size // 4))
    return args


# What each MPI launcher tells a process of its rank.
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")
HOW_TO_RUN = ("cupy_test.py runs on the launcher's cluster: mpirun -np 4 python "
              "start_daskmpi.py cupy_test.py (or python start_daskmpi.py cupy_test.py)")


def no_cluster() -> int:
    """Run on its own (the launcher forgotten): one line, from the first rank
    alone where mpirun started several, and status 2."""
    rank = next((os.environ[v] for v in RANK_VARIABLES if v in os.environ), "0")
    if rank == "0":
        print(f"cupy_test.py: error: no Dask cluster here. {HOW_TO_RUN}", file=sys.stderr,
              flush=True)
    else:  # mpirun, seeing a rank end non-zero, ends the others: after the line
        time.sleep(1.0)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        client = get_client()
    except ValueError:  # distributed's "No global client found"
        return no_cluster()
    everyone = list(client.scheduler_info(n_workers=-1)["workers"])
    print(f"Operation on dask.array (from {BLOG}):")
    print(f"    sum of (x + 1)[::2, ::2], x: {args.size} x {args.size} normal(10, 1), "
          f"chunks {args.chunks} x {args.chunks}")
    ok = True
    gpus, reason = gpu_workers(client)
    print("with gpus")
    if reason:
        print(f"    skipped: {reason}")
    else:
        ok &= run_part(client, args, "cupy", restriction(gpus, everyone))
    print("without gpus")
    if args.skip_cpu:
        print("    skipped: --skip-cpu")
    else:
        ok &= run_part(client, args, "numpy", None)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
