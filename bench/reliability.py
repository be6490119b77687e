"""The reliability table: what the fault, bad-input and clean-run tests saw.

    python bench/reliability.py [--out bench/results/reliability.json]

Runs those tests with pytest (their own bounds and checks apply), collects what
each run showed (exit status, seconds, Python tracebacks in its output,
processes left behind) and prints a Markdown table and its totals.  The figures
are the tests', measured on this machine, not promises.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = [
    "tests/test_faults.py",
    "tests/test_mpi.py::test_script_runs_on_every_worker_and_exits_0",
    "tests/test_mpi.py::test_without_mpirun_a_local_cluster_runs_the_script",
    "tests/test_jupyter.py::test_stop_on_stdin_ends_everything",
    "tests/test_jupyter.py::test_signal_to_mpirun_ends_everything",
    "tests/test_jupyter.py::test_a_hard_kill_of_the_whole_launcher_leaves_nothing_running",
    "tests/test_nodes.py::test_a_node_cut_off_mid_run_ends_the_job_within_a_bound",
    "tests/test_nodes.py::test_a_node_whose_processes_all_die_ends_the_job_by_the_launcher",
    "tests/test_nodes.py::test_a_driver_killed_under_a_launcher_that_keeps_the_others_ends_the_job",
    "tests/test_nodes.py::test_a_batch_job_that_loses_a_node_fails",
]


def collect() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        notes = Path(tmp, "reliability.jsonl")
        env = {**os.environ, "START_DASKMPI_RELIABILITY": str(notes)}
        subprocess.run([sys.executable, "-m", "pytest", "-q", *TESTS], cwd=ROOT, env=env)
        return [json.loads(line) for line in notes.read_text().splitlines()]


def table(rows: list[dict]) -> str:
    lines = [
        "| kind | case | test | exit status | seconds | tracebacks | leftovers |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["kind"], r["case"])):
        lines.append(
            f"| {r['kind']} | {r['case']} | {r['outcome']} | {r['rc']} | {r['seconds']} "
            f"| {r['tracebacks']} | {r['leftovers']} |"
        )
    return "\n".join(lines)


def totals(rows: list[dict]) -> str:
    by_kind = collections.defaultdict(list)
    for r in rows:
        by_kind[r["kind"]].append(r)
    return "\n".join(
        f"- {kind}: {sum(r['outcome'] == 'passed' for r in group)} of {len(group)} as required; "
        f"{sum(r['tracebacks'] for r in group)} traceback(s), "
        f"{sum(r['leftovers'] for r in group)} process(es) left behind"
        for kind, group in sorted(by_kind.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = collect()
    print(table(rows))
    print()
    print(totals(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
