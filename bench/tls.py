"""What TLS costs a transfer-heavy job: TLS (the default) vs --no-tls.

    python bench/tls.py [--ranks 4] [--size 6000] [--repeat 5] [--out bench/results/tls.json]

One launcher run per variant, the two interleaved --rounds times, on loopback.
In each run the script, REPEAT times, persists a new SIZE x SIZE float64 array
in row blocks, then times its rechunk into column blocks: every worker sends
its share of every block to every other (a transpose's traffic), so the time
is the comms'.  Prints the medians and the ratio TLS / plain TCP.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from launch import launcher_command  # noqa: E402

JOB = """
import json, sys, time
import dask.array as da
from distributed import get_client, wait

size, blocks, repeat = (int(a) for a in sys.argv[1:4])
client = get_client()
seconds = []
for seed in range(repeat):  # a new array each time: nothing of the last one is reused
    x = da.random.default_rng(seed).random((size, size), chunks=(size // blocks, size))
    x = x.persist()
    wait(x)
    start = time.perf_counter()
    y = x.rechunk((size, size // blocks)).persist()
    wait(y)
    seconds.append(time.perf_counter() - start)
    del x, y
print("TRANSFER " + json.dumps({"seconds": seconds}))
"""


def run_once(command: list[str]) -> list[float]:
    done = subprocess.run(command, check=True, timeout=600, capture_output=True, text=True)
    (line,) = [s for s in done.stdout.splitlines() if s.startswith("TRANSFER ")]
    return json.loads(line.removeprefix("TRANSFER "))["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--size", type=int, default=6000)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp, "transfer.py")
        job.write_text(JOB)
        options = ["--interface", "lo", "--gpus-per-node", "0", "--log-dir", str(Path(tmp, "logs"))]
        job_args = [str(job), str(args.size), str(args.blocks), str(args.repeat)]
        variants = {
            "tls": launcher_command([*options, *job_args], args.ranks),
            "tcp": launcher_command([*options, "--no-tls", *job_args], args.ranks),
        }
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, command in variants.items():
                seconds[name] += run_once(command)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    gigabytes = args.size**2 * 8 / 1e9
    ratio = medians["tls"] / medians["tcp"]
    print(f"{args.ranks - 2} workers, {gigabytes:.2f} GB rechunked rows -> columns: "
          f"TLS {medians['tls']:.3f} s, TCP {medians['tcp']:.3f} s, ratio TLS / TCP {ratio:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "machine": f"{platform.node()}, {os.cpu_count()} cores, "
                       f"Python {platform.python_version()}",
            "workers": args.ranks - 2, "size": args.size, "blocks": args.blocks,
            "seconds": seconds, "medians": medians, "ratio": ratio,
        }, indent=2))


if __name__ == "__main__":
    main()
