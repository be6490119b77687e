"""Where cupy_test's GPU time goes: each CuPy kernel of one chunk, timed alone.

    python bench/gpu_breakdown.py [--chunk 20000] [--out bench/results/gpu_breakdown.json]

One chunk of the blog's operation, step by step as dask runs it (one kernel a
step, whole chunks in and out), each timed with CUDA events over --repeat runs
after a warm-up, with the bytes it moves and the bandwidth that makes.  Their
sum, against cupy_test's seconds per chunk, leaves what Dask adds per task.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import cupy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MEAN, SD = 10.0, 1.0


def without_cub(step):
    from cupy._core import _accelerator

    saved = _accelerator.get_reduction_accelerators()
    _accelerator.set_reduction_accelerators([])
    try:
        return step()
    finally:
        _accelerator.set_reduction_accelerators(saved)


def timed(step, repeat: int) -> float:
    step()  # warm-up: kernel compilation, memory pool
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(repeat):
        start.record()
        step()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    n = args.chunk
    rng = cupy.random.default_rng()
    x = rng.standard_normal((n, n))
    y = SD * x
    z = MEAN + y
    w = z + 1
    e = 8 * n * n  # bytes of one whole chunk
    steps = {
        "draw (standard_normal)": (lambda: rng.standard_normal((n, n)), e),
        "SD * x": (lambda: SD * x, 2 * e),
        "MEAN + .": (lambda: MEAN + y, 2 * e),
        ". + 1": (lambda: z + 1, 2 * e),
        # A strided view, no copy; the sum, as dask calls it per chunk (dtype
        # given), reads every other row, in whole sectors.
        "[::2, ::2], summed": (
            lambda: cupy.sum(w[::2, ::2], axis=(0, 1), keepdims=True, dtype=w.dtype), e / 2
        ),
        # The same without dtype, and with axis=None, as a user might write it.
        "[::2, ::2], summed without dtype (axis=None)": (lambda: w[::2, ::2].sum(), e / 2),
        "[::2, ::2], summed without dtype (axis=None), CUB off": (
            lambda: without_cub(lambda: w[::2, ::2].sum()), e / 2
        ),
    }
    rows = {}
    for name, (step, moved) in steps.items():
        seconds = timed(step, args.repeat)
        rows[name] = {"seconds": seconds, "bytes": moved, "GB/s": moved / seconds / 1e9}
        print(f"{name:50s} {seconds * 1e3:8.2f} ms {moved / 1e9:6.2f} GB "
              f"{moved / seconds / 1e9:8.0f} GB/s", flush=True)
    total = sum(r["seconds"] for name, r in rows.items() if "without dtype" not in name)
    print(f"{'all the steps above':50s} {total * 1e3:8.2f} ms")
    # The same chunk through dask itself, in this process.
    import cupy_test

    def through_dask():
        cupy_test.blog_sum(n, n, "cupy").compute(scheduler="sync")

    rows["one chunk through dask (sync scheduler)"] = {"seconds": timed(through_dask, args.repeat)}
    print(f"{'one chunk through dask (sync scheduler)':50s} "
          f"{rows['one chunk through dask (sync scheduler)']['seconds'] * 1e3:8.2f} ms")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"chunk": n, "steps": rows, "total": total}, indent=2))


if __name__ == "__main__":
    main()
