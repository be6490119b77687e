"""How many workers the script waits for (no MPI)."""
from __future__ import annotations

import pytest

from start_daskmpi.driver.registration import min_workers
from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.options import parse_args


@pytest.mark.parametrize("option, planned, need", [
    (None, 16, 16),  # every worker, by default
    (14, 16, 14),
    (16, 16, 16),
    (0.9, 16, 15),  # a fraction rounds up: 14.4 workers are 15
    (0.5, 1, 1),
])
def test_min_workers_as_a_count(option, planned, need):
    assert min_workers(option, planned) == need


def test_more_than_the_plan_is_one_line():
    with pytest.raises(LaunchError, match="--min-workers 20, but the job plans 16 worker"):
        min_workers(20, 16)


@pytest.mark.parametrize("text, value", [("14", 14), ("0.9", 0.9), ("1", 1)])
def test_the_option_takes_a_count_or_a_fraction(text, value):
    assert parse_args(["--min-workers", text]).min_workers == value


@pytest.mark.parametrize("text", ["0", "1.5", "-1", "most", "nan", "inf"])
def test_what_is_neither_is_refused(text):
    with pytest.raises(LaunchError, match="expected a number of workers"):
        parse_args(["--min-workers", text])
