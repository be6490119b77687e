import json
import os

import pytest

from launch import STARTED, reap

RELIABILITY_VARIABLE = "START_DASKMPI_RELIABILITY"  # file for what each fault test saw


@pytest.fixture(autouse=True)
def reap_runs_left_by_a_failed_test():
    """A test stopped by its timeout never reaches its own reaping: reap here the
    runs it started (not those of longer-lived fixtures, started before it)."""
    before = len(STARTED)
    yield
    for token in STARTED[before:]:
        reap(token, grace=0)
    del STARTED[before:]


@pytest.fixture(autouse=True)
def runs_keep_their_files_in_the_tests_folder(tmp_path, monkeypatch):
    """The private folders a run makes in $TMPDIR (the client's credentials,
    JupyterLab's config, workers' scratch) go into the test's folder: a run
    killed on purpose cannot remove its own, and pytest removes these."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


@pytest.fixture
def loopback(tmp_path):
    """Options that keep a run on loopback, its files in the test's folder, and
    its workers on the CPU, as on CI, even on a machine with GPUs."""
    return [
        "--interface", "lo",
        "--log-dir", str(tmp_path / "logs"),
        "--local-directory", str(tmp_path / "scratch"),
        "--gpus-per-node", "0",
    ]


@pytest.fixture
def record(request):
    """Note what a run showed, for bench/reliability.py's table: the figures the
    tests produce.  Written with the test's outcome by the hook below."""

    def note(run, kind: str, case: str) -> None:
        request.node.user_properties.append(("reliability", {
            "kind": kind,
            "case": case,
            "rc": run.rc,
            "seconds": round(run.seconds, 1),
            "tracebacks": run.output.count("Traceback (most recent call last)"),
            "leftovers": len(run.leftovers),
        }))

    return note


def pytest_runtest_logreport(report):
    path = os.environ.get(RELIABILITY_VARIABLE)
    if not path or report.when != "call":
        return
    with open(path, "a") as f:
        for name, value in report.user_properties:
            if name == "reliability":
                f.write(json.dumps({**value, "test": report.nodeid, "outcome": report.outcome}))
                f.write("\n")
