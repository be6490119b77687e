"""Command line: what is accepted, what is refused, and how."""
from __future__ import annotations

from pathlib import Path

import pytest

from start_daskmpi.errors import LaunchError
from start_daskmpi.options import build_parser, parse_args


def test_defaults():
    args = parse_args(["job.py"])
    assert args.script == "job.py" and args.script_args == []
    assert args.nthreads is None and args.memory_limit == "auto"
    assert args.scheduler_port is None and args.dashboard_address is None
    assert args.gpus_per_node is None and args.startup_timeout == 120
    assert args.nanny and args.tls and not args.verbose
    assert not parse_args(["--no-nanny", "job.py"]).nanny


def test_everything_after_the_script_belongs_to_the_script():
    args = parse_args(["--nthreads", "2", "job.py", "--nthreads", "5", "-v", "x"])
    assert args.nthreads == 2 and not args.verbose
    assert args.script_args == ["--nthreads", "5", "-v", "x"]


def test_options_are_parsed_to_their_types():
    args = parse_args(
        "--memory-limit 80GB --local-directory /scratch --interface ib0 --protocol ucx "
        "--no-tls --scheduler-port 9000 --dashboard-address :9001 --scheduler-file s.json "
        "--log-dir logs --gpus-per-node 4 --startup-timeout 2m --ssh-hops a@b,c -v "
        "job.py".split()
    )
    assert args.memory_limit == "80GB" and args.local_directory == "/scratch"
    assert (args.interface, args.protocol) == ("ib0", "ucx")
    assert (args.scheduler_port, args.dashboard_address) == (9000, ":9001")
    assert args.log_dir == Path("logs") and args.gpus_per_node == 4
    assert args.startup_timeout == 120 and args.ssh_hops == "a@b,c" and args.verbose


@pytest.mark.parametrize("value", ["auto", "0", "0.5", "80GB", "512MiB", "1000000"])
def test_memory_limits_dask_takes(value):
    assert parse_args(["--memory-limit", value, "job.py"]).memory_limit == value


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--bogus", "job.py"], "unrecognized arguments: --bogus"),
        # No abbreviations: a typo is not quietly another option.
        (["--gpus-per-nod", "0", "job.py"], "unrecognized arguments: --gpus-per-nod"),
        (["--status", "s", "job.py"], "unrecognized arguments: --status"),
        (["--memory-limit", "8XB", "job.py"], "--memory-limit: expected bytes such as 80GB"),
        (["--memory-limit", "-1", "job.py"], "a fraction such as 0.5, auto or 0, got '-1'"),
        (["--nthreads", "0", "job.py"], "--nthreads: expected a positive integer, got '0'"),
        (["--nthreads", "two", "job.py"], "expected a positive integer, got 'two'"),
        (["--gpus-per-node", "-1", "job.py"], "--gpus-per-node: expected 0 or more, got '-1'"),
        (["--scheduler-port", "70000", "job.py"], "expected a port number, 0-65535"),
        (["--startup-timeout", "0", "job.py"], "expected a duration such as 60"),
        (["--startup-timeout", "soon", "job.py"], "expected a duration such as 60"),
        (["--protocol", "tcp", "job.py"], "--protocol tcp carries no TLS: add --no-tls"),
    ],
)
def test_bad_options_raise_one_line(argv, words):
    with pytest.raises(LaunchError) as raised:
        parse_args(argv)
    message = str(raised.value)
    assert words in message and "\n" not in message and message.endswith("(see --help)")


def test_help_names_every_option():
    text = build_parser().format_help()
    for option in (
        "--nthreads", "--memory-limit", "--local-directory", "--interface", "--protocol",
        "--scheduler-port", "--dashboard-address", "--scheduler-file", "--log-dir",
        "--gpus-per-node", "--startup-timeout", "--ssh-hops", "--verbose", "--no-nanny",
        "--no-tls", "--jupyter-port",
    ):
        assert option in text
