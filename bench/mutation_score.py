"""The mutation score of the pure modules, per module, from mutmut's results.

    mutmut run && python bench/mutation_score.py

mutmut (configured in pyproject.toml: the modules, the unit tests that may
kill a mutant) changes one thing in the code at a time, a mutant, and runs the
tests that reach it: a mutant that no test fails survived.  Prints a Markdown
table: per module the mutants killed (a test failed, or the tests hung past
mutmut's bound: timed out), survived, reached by no test, and the share
detected; then the survivors by name (``mutmut show NAME`` shows each).
"""
from __future__ import annotations

import collections
import subprocess
import sys

COUNTED = ("killed", "survived", "no tests", "timeout", "suspicious", "segfault")


def results() -> dict[str, str]:
    """Each mutant's name and what became of it."""
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    found = {}
    for line in done.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            found[name] = status
    return found


def module_of(mutant: str) -> str:
    return mutant.split(".")[1]


def score_table(found: dict[str, str]) -> str:
    by_module: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, status in found.items():
        by_module[module_of(name)][status] += 1
    lines = ["| module | killed | timed out | survived | reached by no test | detected |",
             "|---|---:|---:|---:|---:|---:|"]
    total: collections.Counter = collections.Counter()
    for module, counts in sorted(by_module.items()):
        total.update(counts)
        lines.append(row(module, counts))
    lines.append(row("**all**", total))
    return "\n".join(lines)


def row(name: str, counts: collections.Counter) -> str:
    mutants = sum(counts[s] for s in COUNTED)
    detected = counts["killed"] + counts["timeout"]
    share = f"{100 * detected / mutants:.1f} %" if mutants else "-"
    return (f"| {name} | {counts['killed']} | {counts['timeout']} | {counts['survived']} "
            f"| {counts['no tests']} | {share} |")


def main() -> int:
    found = results()
    unfinished = [name for name, status in found.items() if status not in COUNTED]
    if unfinished:
        print(f"{len(unfinished)} mutants not run yet: mutmut run first", file=sys.stderr)
        return 1
    print(score_table(found))
    survivors = sorted(n for n, s in found.items() if s in ("survived", "no tests"))
    if survivors:
        print("\nNot killed:\n" + "\n".join(f"- {n} ({found[n]})" for n in survivors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
