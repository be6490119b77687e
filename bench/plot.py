"""One PNG of the benchmarks: startup scaling, and GPU vs CPU vs roofline.

    python bench/plot.py      # reads bench/results/{scaling,gpu}.json, writes benchmarks.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu import BYTES_PER_ELEMENT  # noqa: E402


def scaling_panel(axes, scaling: dict) -> None:
    rows = scaling["rows"]
    workers = [r["workers"] for r in rows]
    axes.plot(workers, [r["registered"] for r in rows], "o-", label="all workers registered")
    axes.plot(workers, [r["total"] for r in rows], "s--", label="whole job, through exit")
    axes.set_xlabel("worker ranks (CPU, 2 cores oversubscribed)")
    axes.set_ylabel("seconds from mpirun")
    axes.set_title("Startup scaling")
    axes.set_ylim(bottom=0)
    axes.legend()


def gpu_panel(axes, gpu: dict) -> None:
    sizes = sorted(int(s) for s in gpu["gpu"])
    elements = [s * s for s in sizes]
    axes.loglog(elements, [gpu["gpu"][str(s)]["with gpus"]["seconds"] for s in sizes], "o-",
                label="H100, steady state")
    axes.loglog(elements, [gpu["gpu"][str(s)]["with gpus"]["first"] for s in sizes], "^:",
                label="H100, first call")
    roofline = [n * BYTES_PER_ELEMENT / gpu["bandwidth"] for n in elements]
    rate = f"{BYTES_PER_ELEMENT} B/element at {gpu['bandwidth'] / 1e12:g} TB/s"
    axes.loglog(elements, roofline, "k--", label=f"memory roofline: {rate}")
    cpu = sorted(int(s) for s in gpu["cpu"])
    axes.loglog([s * s for s in cpu], [gpu["cpu"][str(s)]["without gpus"]["seconds"] for s in cpu],
                "s-", label="16 CPU cores, steady state")
    axes.axhline(10, color="grey", linewidth=0.8)
    axes.annotate("target for 500000²: 10 s", (elements[0], 10), va="bottom", color="grey")
    axes.set_xlabel("elements of x (size²)")
    axes.set_ylabel("seconds")
    axes.set_title("cupy_test: sum of (x + 1)[::2, ::2]")
    axes.legend(fontsize="small")


def main() -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    scaling_panel(left, json.loads((RESULTS / "scaling.json").read_text()))
    gpu_panel(right, json.loads((RESULTS / "gpu.json").read_text()))
    figure.tight_layout()
    figure.savefig(RESULTS / "benchmarks.png", dpi=110)
    print(RESULTS / "benchmarks.png")


if __name__ == "__main__":
    main()
