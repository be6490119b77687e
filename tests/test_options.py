"""Command line: what is accepted, what is refused, and how."""
from __future__ import annotations

import re
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


def words_of(help_text: str) -> str:
    """--help's words, as every Python from 3.10 on lays them out (3.10 adds
    "(default: True)" to a --x/--no-x pair; the line width is the terminal's)."""
    return " ".join(help_text.replace(" (default: True)", "").split())


def test_help_is_the_reviewed_text():
    """The usage text is written for people: a change to it is a change to
    tests/golden/help.txt, reviewed beside the code (regenerate it with
    ``COLUMNS=100 python start_daskmpi.py --help > tests/golden/help.txt``)."""
    golden = (Path(__file__).parent / "golden" / "help.txt").read_text()
    assert words_of(build_parser().format_help()) == words_of(golden)


def test_readme_lists_every_option_and_no_other():
    """Each option of the usage line is in the first column of a table of
    README's Options section, and that column names no option there is not."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("\n## Options", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| ([^|]*) \|", section, re.M)
    listed = {option for cell in first_cells for option in OPTION.findall(cell)}
    offered = set(OPTION.findall(build_parser().format_usage())) - {"-h"}
    assert listed == offered


OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")  # metavars are upper case


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--rmm-pool-size", "2.5"], "--rmm-pool-size: expected bytes such as 70GB or a fraction"),
        (["--rmm-pool-size", "auto"], "--rmm-pool-size: expected bytes such as 70GB"),
        (["--device-memory-limit", "-1"], "--device-memory-limit: expected bytes such as 60GB"),
        (["--device-memory-limit", "1.5"], "a fraction of the GPU such as 0.8, auto or 0"),
        (["--memory-limit", "inf"], "--memory-limit: expected bytes"),
        (["--startup-timeout", ""], "--startup-timeout: expected a duration"),
        (["--startup-timeout", "nan"], "--startup-timeout: expected a duration"),
        (["--startup-timeout", "1e999"], "(at most 30 days)"),
        (["--startup-timeout", "31 days"], "(at most 30 days)"),
        (["--dashboard-address", "²"], "expected [HOST]:PORT with a port 0-65535"),
        (["--dashboard-address", "a b:8787"], "HOST an address or a name of this node"),
        (["--dashboard-address", "::1:8787"], "an IPv6 address goes in brackets"),
        (["--plan", "--nodes", "100001"], "--nodes: expected a node count, 1-100000"),
        (["--plan", "-np", "1000001"], "-np/--ranks: expected a rank count, 1-1000000"),
    ],
)
def test_values_dask_and_dask_cuda_would_misread_are_refused(argv, words):
    with pytest.raises(LaunchError) as raised:
        parse_args([*argv, "job.py"])
    assert words in str(raised.value)


@pytest.mark.parametrize("option", ["--rmm-pool-size", "--device-memory-limit"])
@pytest.mark.parametrize("value", ["70GB", "0.9", "1", "512MiB", "80000000000"])
def test_gpu_memory_sizes_dask_cuda_takes(option, value):
    args = parse_args([option, value, "job.py"])
    assert vars(args)[option[2:].replace("-", "_")] == value


@pytest.mark.parametrize("value", ["8787", ":8787", "0.0.0.0:8787", "[::1]:8787",
                                   "node-1.example.org:8787", "localhost:0"])
def test_dashboard_addresses_dask_takes(value):
    assert parse_args(["--dashboard-address", value, "job.py"]).dashboard_address == value


def test_a_message_with_the_users_odd_text_stays_one_line():
    message = str(LaunchError("script not found: job\n.py\0"))
    assert message == "script not found: job\\n.py\\x00"
