"""The reliability table: what the fault, bad-input and clean-run tests saw.

    python bench/reliability.py          # run the catalogue, write its results and table
    python bench/reliability.py --check  # BENCHMARKS.md's table: the results', of this catalogue

The catalogue is every test marked ``reliability``.  Running it, pytest's own
reports give each test's outcome (passed, failed, an error, skipped and why),
whether or not it got as far as its record() of what the run showed (exit
status, seconds, Python tracebacks in its output, processes left behind); a
test pytest never reported on is "not run".  The results go to
bench/results/reliability.json, the totals and the table into BENCHMARKS.md
between its two reliability markers.  The figures are the tests', measured on
this machine, not promises.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "reliability.json"
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN = "<!-- reliability: written by bench/reliability.py -->"
END = "<!-- end of reliability -->"
PHASE_ORDER = {"setup": 0, "call": 1, "teardown": 2}


def catalogue() -> list[str]:
    """The node ids of the tests marked reliability, as pytest collects them."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "reliability",
         "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    tests = [line for line in done.stdout.splitlines() if "::" in line]
    if done.returncode != 0 or not tests:
        raise SystemExit(f"pytest could not collect the catalogue:\n{done.stdout}{done.stderr}")
    return tests


def outcome(phases: list[dict]) -> tuple[str, str | None]:
    """A test's verdict from its reported phases: an error in setup or
    teardown, a skip (and why), else its call's outcome."""
    for phase in sorted(phases, key=lambda p: PHASE_ORDER[p["when"]]):
        if phase["outcome"] == "skipped":
            return "skipped", phase["reason"]
        if phase["outcome"] == "failed":
            return ("failed" if phase["when"] == "call" else f"error in {phase['when']}"), None
    return "passed", None


def rows_of(tests: list[str], reports: list[dict]) -> list[dict]:
    """One row per run a test recorded, or one for the test alone where it
    recorded none (it failed, erred or was skipped first); every catalogue
    test has one."""
    by_test = collections.defaultdict(list)
    for report in reports:
        by_test[report["test"]].append(report)
    rows = []
    for test in tests:
        phases = by_test.get(test, [])
        verdict, reason = outcome(phases) if phases else ("not run", None)
        kind = phases[0]["kind"] if phases else "?"
        measured = [m for p in phases for m in p["measured"]] or [{}]
        for figures in measured:
            rows.append({"test": test, "kind": kind, "outcome": verdict, "reason": reason,
                         **figures})
    return rows


def run_catalogue(tests: list[str]) -> tuple[list[dict], int]:
    with tempfile.TemporaryDirectory() as tmp:
        notes = Path(tmp, "reports.jsonl")
        notes.touch()
        env = {**os.environ, "START_DASKMPI_RELIABILITY": str(notes)}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
            cwd=ROOT, env=env,
        )
        reports = [json.loads(line) for line in notes.read_text().splitlines()]
    return rows_of(tests, reports), done.returncode


def short(test: str) -> str:
    return test.removeprefix("tests/")


def cell(row: dict, key: str) -> str:
    return "" if row.get(key) is None else str(row[key])


def table(rows: list[dict]) -> str:
    lines = [
        "| kind | case | test | outcome | exit status | seconds | tracebacks | leftovers |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["kind"], cell(r, "case"), r["test"])):
        verdict = r["outcome"] + (f" ({r['reason']})" if r["reason"] else "")
        lines.append(
            f"| {r['kind']} | {cell(r, 'case')} | `{short(r['test'])}` | {verdict} "
            f"| {cell(r, 'rc')} | {cell(r, 'seconds')} | {cell(r, 'tracebacks')} "
            f"| {cell(r, 'leftovers')} |"
        )
    return "\n".join(lines)


def totals(rows: list[dict], status: int) -> str:
    by_kind = collections.defaultdict(list)
    for r in rows:
        by_kind[r["kind"]].append(r)
    lines = [f"pytest's exit status: {status}"]
    for kind, group in sorted(by_kind.items()):
        tests = {r["test"]: r["outcome"] for r in group}
        counts = collections.Counter(tests.values())
        verdicts = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
        lines.append(
            f"- {kind}: {len(tests)} tests: {verdicts}; "
            f"{sum(r.get('tracebacks') or 0 for r in group)} traceback(s), "
            f"{sum(r.get('leftovers') or 0 for r in group)} process(es) left behind"
        )
    return "\n".join(lines)


def section(results: dict) -> str:
    rows = results["rows"]
    return f"{BEGIN}\n{totals(rows, results['status'])}\n\n{table(rows)}\n{END}"


def written_section(text: str) -> str | None:
    found = re.search(f"{re.escape(BEGIN)}.*?{re.escape(END)}", text, re.S)
    return found[0] if found else None


def check(tests: list[str]) -> list[str]:
    """What keeps BENCHMARKS.md from being the results of today's catalogue."""
    if not RESULTS.exists():
        return [f"no {RESULTS.relative_to(ROOT)}: run python bench/reliability.py"]
    results = json.loads(RESULTS.read_text())
    problems = []
    recorded = {r["test"] for r in results["rows"]}
    if missing := sorted(set(tests) - recorded):
        problems.append(f"tests of the catalogue missing from the results: {missing}")
    if gone := sorted(recorded - set(tests)):
        problems.append(f"results of tests no longer in the catalogue: {gone}")
    if written_section(BENCHMARKS.read_text()) != section(results):
        problems.append("BENCHMARKS.md's reliability table is not the results': "
                        "python bench/reliability.py writes it")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="check BENCHMARKS.md against the results, running nothing")
    args = parser.parse_args()
    tests = catalogue()
    if args.check:
        problems = check(tests)
        for problem in problems:
            print(f"reliability: {problem}", file=sys.stderr)
        return 1 if problems else 0
    rows, status = run_catalogue(tests)
    results = {"status": status, "rows": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    text = BENCHMARKS.read_text()
    old = written_section(text)
    if old is None:
        print(f"BENCHMARKS.md has no {BEGIN} ... {END}: add them", file=sys.stderr)
        return 1
    BENCHMARKS.write_text(text.replace(old, section(results)))
    print(section(results))
    return status


if __name__ == "__main__":
    sys.exit(main())
