import json
import os
import shutil
import tempfile
from pathlib import Path

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
    tests of its catalogue (marked ``reliability``) produce."""

    def note(run, case: str) -> None:
        request.node.user_properties.append(("measured", {
            "case": case,
            "rc": run.rc,
            "seconds": round(run.seconds, 1),
            "tracebacks": run.output.count("Traceback (most recent call last)"),
            "leftovers": len(run.leftovers),
        }))

    return note


def pytest_collection_modifyitems(items):
    for item in items:
        marker = item.get_closest_marker("reliability")
        if marker is not None:
            item.user_properties.append(("kind", marker.args[0]))


def pytest_runtest_logreport(report):
    """Every phase of a catalogue test that decides its outcome, whether or not
    the test got as far as record(): a skip or error in its setup, its call,
    an error in its teardown."""
    path = os.environ.get(RELIABILITY_VARIABLE)
    properties = dict(report.user_properties)
    if not path or "kind" not in properties:
        return
    if report.when != "call" and report.outcome == "passed":
        return
    reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else None
    with open(path, "a") as f:
        f.write(json.dumps({
            "test": report.nodeid,
            "kind": properties["kind"],
            "when": report.when,
            "outcome": report.outcome,
            "reason": reason,
            "measured": [value for name, value in report.user_properties if name == "measured"],
        }) + "\n")


@pytest.fixture
def shared(tmp_path_factory):
    """A folder every user may write in, as /tmp is (sticky); removed after."""
    folder = Path(tempfile.mkdtemp(prefix="start_daskmpi-shared-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
