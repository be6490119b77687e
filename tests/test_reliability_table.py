"""bench/reliability.py's table: no test of the catalogue can go missing from
it, whatever became of the test, and BENCHMARKS.md holds what it wrote."""
from __future__ import annotations

import json
import sys

from launch import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import reliability  # noqa: E402

pytest_plugins = "pytester"

CATALOGUE = """
import pytest

class Run:
    rc, seconds, output, leftovers = 3, 1.25, "Traceback (most recent call last)", []

@pytest.fixture
def broken():
    raise RuntimeError("a fixture that fails")

@pytest.mark.reliability("fault")
def test_recorded(record):
    record(Run(), "a recorded run")

@pytest.mark.reliability("fault")
def test_fails_before_its_record(record):
    assert False
    record(Run(), "never")

@pytest.mark.reliability("bad input")
@pytest.mark.skipif(True, reason="no such launcher here")
def test_skipped(record):
    record(Run(), "never")

@pytest.mark.reliability("bad input")
def test_errs_in_setup(broken, record):
    record(Run(), "never")

def test_outside_the_catalogue(record):
    record(Run(), "not in the table")
"""


def test_every_catalogue_test_is_a_row_whatever_became_of_it(pytester, monkeypatch, tmp_path):
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'tests'}:{ROOT}")  # launch, start_daskmpi
    pytester.makeini('[pytest]\nmarkers =\n    reliability(kind): the catalogue\n')
    pytester.makepyfile(test_catalogue=CATALOGUE)
    notes = tmp_path / "reports.jsonl"
    monkeypatch.setenv("START_DASKMPI_RELIABILITY", str(notes))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(
        passed=2, failed=1, skipped=1, errors=1)
    reports = [json.loads(line) for line in notes.read_text().splitlines()]
    catalogue = [f"test_catalogue.py::{name}" for name in (
        "test_recorded", "test_fails_before_its_record", "test_skipped", "test_errs_in_setup",
        "test_never_reported")]
    rows = {row["test"].split("::")[1]: row for row in reliability.rows_of(catalogue, reports)}
    assert {name: (row["kind"], row["outcome"]) for name, row in rows.items()} == {
        "test_recorded": ("fault", "passed"),
        "test_fails_before_its_record": ("fault", "failed"),
        "test_skipped": ("bad input", "skipped"),
        "test_errs_in_setup": ("bad input", "error in setup"),
        "test_never_reported": ("?", "not run"),
    }
    assert rows["test_skipped"]["reason"] == "Skipped: no such launcher here"
    recorded = rows["test_recorded"]
    assert (recorded["case"], recorded["rc"], recorded["seconds"], recorded["tracebacks"],
            recorded["leftovers"]) == ("a recorded run", 3, 1.2, 1, 0)
    table = reliability.table(list(rows.values()))
    assert all(f"`test_catalogue.py::{name}`" in table for name in rows)


def test_benchmarks_holds_the_table_of_the_catalogues_results():
    """The committed results cover today's catalogue, and BENCHMARKS.md's
    table is theirs, as written (run bench/reliability.py after changing either)."""
    assert reliability.check(reliability.catalogue()) == []


def test_a_table_edited_by_hand_or_a_test_left_out_is_found(monkeypatch, tmp_path):
    results = json.loads(reliability.RESULTS.read_text())
    benchmarks = tmp_path / "BENCHMARKS.md"
    edited = reliability.section(results).replace("| passed |", "| failed |", 1)
    benchmarks.write_text(f"# Benchmarks\n\n{edited}\n")
    monkeypatch.setattr(reliability, "BENCHMARKS", benchmarks)
    tests = [row["test"] for row in results["rows"]]
    assert reliability.check(tests) == [
        "BENCHMARKS.md's reliability table is not the results': "
        "python bench/reliability.py writes it"]
    added = "tests/test_faults.py::test_a_new_fault"
    assert reliability.check([*tests, added])[0] == (
        f"tests of the catalogue missing from the results: ['{added}']")


def test_the_table_and_its_totals_count_every_verdict():
    rows = [
        {"test": "t.py::a", "kind": "fault", "outcome": "passed", "reason": None, "case": "x",
         "rc": 0, "seconds": 1.0, "tracebacks": 2, "leftovers": 0},
        {"test": "t.py::b", "kind": "fault", "outcome": "failed", "reason": None},
        {"test": "t.py::c", "kind": "fault", "outcome": "skipped", "reason": "Skipped: why"},
    ]
    assert reliability.totals(rows, 1).splitlines() == [
        "pytest's exit status: 1",
        "- fault: 3 tests: 1 failed, 1 passed, 1 skipped; 2 traceback(s), "
        "0 process(es) left behind",
    ]
    assert "| fault |  | `t.py::b` | failed |  |  |  |  |" in reliability.table(rows)
    assert "| skipped (Skipped: why) |" in reliability.table(rows)

