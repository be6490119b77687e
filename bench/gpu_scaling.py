"""Strong scaling of cupy_test on the GPUs of one node: efficiency t(1) / (k t(k)).

    python bench/gpu_scaling.py [--gpus 1 2 4] [--size 500000] [--repeat 3]
        [--script LABEL=PATH ...] [--variant LABEL=OPTIONS ...]
        [--out bench/results/gpu_scaling.json]

For each GPU count k (one worker a GPU, ``mpirun -np k+2``) and each version of
cupy_test given (default: this checkout's; name an older copy to compare side
by side), the blog's job with ``--skip-cpu``: its steady-state median and its
first call, as cupy_test prints them, and where the workers' time went, from
the scheduler's task stream (tasks, seconds computing and receiving data, per
worker).  The runs are interleaved, so every figure of a row comes from the
same minutes of the same machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from gpu import parse, save  # noqa: E402

from launch import launcher_command  # noqa: E402

JOB = Path(__file__).resolve().parent / "task_stream_job.py"


def one_run(
    script: Path, gpus: int, args: argparse.Namespace, logs: Path, options: list[str]
) -> dict:
    command = launcher_command(
        ["--interface", "lo", "--log-dir", str(logs), "--gpus-per-node", str(gpus), *options,
         str(JOB), str(script), "--size", str(args.size), "--skip-cpu",
         "--repeat", str(args.repeat)],
        gpus + 2,
    )
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    figures = parse(done.stdout).get("with gpus", {})
    figures["rc"], figures["wall"] = done.returncode, time.perf_counter() - start
    if stream := re.search(r"^TASK_STREAM (.*)$", done.stdout, re.M):
        figures["workers"] = json.loads(stream[1])
    if done.returncode:
        figures["stderr"] = done.stderr[-2000:]
    return figures


def efficiency(runs: dict[int, dict]) -> dict[int, float]:
    """t(1) / (k t(k)) of the steady state, for each k measured beside k = 1."""
    if 1 not in runs or "seconds" not in runs[1]:
        return {}
    return {k: runs[1]["seconds"] / (k * run["seconds"])
            for k, run in runs.items() if "seconds" in run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--size", type=int, default=500000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--script", action="append", metavar="LABEL=PATH",
                        help="a version of cupy_test to run (default: this checkout's)")
    parser.add_argument("--variant", action="append", metavar="LABEL=OPTIONS",
                        help="launcher options to compare, e.g. 'threads=--nthreads 2' "
                        "(default: none)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    scripts = dict(s.split("=", 1) for s in args.script or [f"now={ROOT / 'cupy_test.py'}"])
    variants = dict(v.split("=", 1) for v in args.variant or ["="])
    labels = {(s, v): " ".join(filter(None, [s, v])) for s in scripts for v in variants}
    results: dict = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "size": args.size, "repeat": args.repeat,
        "options": {label: variants[v] for (_, v), label in labels.items()},
        "runs": {label: {} for label in labels.values()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for gpus in args.gpus:
            for (name, variant), label in labels.items():
                script, options = scripts[name], shlex.split(variants[variant])
                run = one_run(Path(script).resolve(), gpus, args, Path(tmp, "logs"), options)
                results["runs"][label][gpus] = run
                results.setdefault("efficiency", {})[label] = efficiency(results["runs"][label])
                shown = {key: run.get(key) for key in ("seconds", "first", "rc")}
                print(f"{label} {gpus} GPU(s): {shown}", flush=True)
                save(results, args.out)
    print(json.dumps(results["efficiency"]))


if __name__ == "__main__":
    main()
