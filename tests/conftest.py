import pytest

from launch import STARTED, reap


@pytest.fixture(autouse=True)
def reap_runs_left_by_a_failed_test():
    """A test stopped by its timeout never reaches its own reaping: reap here the
    runs it started (not those of longer-lived fixtures, started before it)."""
    before = len(STARTED)
    yield
    for token in STARTED[before:]:
        reap(token, grace=0)
    del STARTED[before:]
