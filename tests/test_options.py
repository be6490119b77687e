"""Command line: what is accepted, what is refused, and how."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.options import build_parser, parse_args


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


def test_the_options_page_lists_every_option_and_no_other():
    """Each option of the usage line is in the first column of a table of
    docs/options.md, and that column names no option there is not."""
    page = (Path(__file__).parent.parent / "docs" / "options.md").read_text()
    first_cells = re.findall(r"^\| ([^|]*) \|", page, re.M)
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


def test_the_edges_of_what_is_accepted():
    """Each bound, on both sides: what is just in, and what is just out."""
    for text, seconds in (("60", 60), ("90s", 90), ("2m", 120), ("0.5", 0.5),
                          ("30 days", 30 * 24 * 3600)):
        assert parse_args(["--startup-timeout", text, "j.py"]).startup_timeout == seconds
    assert parse_args(["--scheduler-port", "65535", "j.py"]).scheduler_port == 65535
    assert parse_args(["--scheduler-port", "0", "j.py"]).scheduler_port == 0
    assert parse_args(["--nthreads", "1", "j.py"]).nthreads == 1
    assert parse_args(["--plan", "--nodes", "100000"]).nodes == 100000
    for argv, said in (
        (["--scheduler-port", "65536"], "expected a port number, 0-65535, got '65536'"),
        (["--scheduler-port", "-1"], "expected a port number, 0-65535, got '-1'"),
        (["--nthreads", "0"], "expected a positive integer, got '0'"),
        (["--nthreads", "x"], "expected a positive integer, got 'x'"),
        (["--gpus-per-node", "-1"], "expected 0 or more, got '-1'"),
        (["--rmm-pool-size", "0"], "expected bytes such as 70GB or a fraction of the GPU "
                                   "such as 0.9, got '0'"),
        (["--memory-limit", "1.5"], "expected bytes such as 80GB, a fraction such as 0.5, "
                                    "auto or 0, got '1.5'"),
    ):
        with pytest.raises(LaunchError) as raised:
            parse_args([*argv, "j.py"])
        assert str(raised.value).endswith(f"{said} (see --help)"), raised.value
    for size in ("1", "0.25", "1.0", "80GB", "auto", "0"):
        assert parse_args(["--memory-limit", size, "j.py"]).memory_limit == size


def test_what_counts_as_a_fraction_bytes_or_a_host():
    from start_daskmpi.plan.values import is_bytes, is_fraction, is_host

    assert is_fraction("1") and is_fraction("0.01") and not is_fraction("0")
    assert not is_fraction("1.01") and not is_fraction("x")
    assert is_bytes("1") and is_bytes("2 kB") and not is_bytes("0") and not is_bytes("2.5")
    assert is_host("a" * 63 + ".org") and not is_host("a" * 64 + ".org")
    assert is_host("10.0.0.1") and is_host("x1000c0s0b0n0-hsn0")
    assert not is_host("-x.org") and not is_host("a..b") and not is_host("ünï")


def test_what_each_option_becomes():
    args = parse_args(["--status-file", "done", "--protocol", "tls", "job.py"])
    assert args.status_file == Path("done") and args.protocol == "tls"
    with pytest.raises(LaunchError, match="--jupyter-port: expected a port number"):
        parse_args(["--jupyter-port", "70000"])
    with pytest.raises(LaunchError) as planless:
        parse_args(["--nodes", "2", "job.py"])
    assert str(planless.value) == \
        "-np, --nodes and --hostfile describe a job for --plan: add --plan, or drop them"


@pytest.mark.parametrize("option", [
    "--log-dir", "--local-directory", "--scheduler-file", "--status-file", "--hostfile",
])
def test_a_path_with_a_nul_is_one_line(option):
    """The fuzz found it: os.makedirs('\\0') raised ValueError, a traceback."""
    with pytest.raises(LaunchError, match="a path cannot hold a NUL character"):
        parse_args([option, "logs\0x"])


@pytest.mark.parametrize("argv0, shown", [
    ("/home/u/start_daskmpi/start_daskmpi.py", "start_daskmpi.py"),
    ("/home/u/.venv/bin/start-daskmpi", "start-daskmpi"),
    ("/home/u/start_daskmpi/start_daskmpi/__main__.py", "python -m start_daskmpi"),
    ("-c", "start_daskmpi.py"),  # initialize() in a script run some other way
])
def test_help_names_the_command_as_it_was_called(argv0, shown):
    from start_daskmpi.plan.options import program_name

    assert program_name(argv0) == shown


def test_the_installed_command_says_its_own_name():
    import shutil
    import subprocess
    import sys

    command = Path(sys.executable).parent / "start-daskmpi"
    if not command.exists():
        command = shutil.which("start-daskmpi")
    if command is None:
        pytest.skip("start-daskmpi is not installed (pip install -e .)")
    done = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: start-daskmpi "), done
    done = subprocess.run([sys.executable, "-m", "start_daskmpi", "--help"], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert done.stdout.startswith("usage: python -m start_daskmpi "), done
