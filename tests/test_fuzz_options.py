"""Every option list a user can type gives a run or one line and status 2,
never a traceback: Hypothesis draws thousands of option lists, each value from
the forms a user would type (right, wrong, odd) or from any text, and puts
them through the parser, --plan, and the checks each rank makes before it
starts anything."""
from __future__ import annotations

import contextlib
import io
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from start_daskmpi import cli
from start_daskmpi.errors import LaunchError
from start_daskmpi.lifecycle.checks import preflight
from start_daskmpi.lifecycle.cluster import command_roles, roles_and_interfaces
from start_daskmpi.plan.config import from_args
from start_daskmpi.plan.folders import local_directory
from start_daskmpi.plan.gpus import VENDORS
from start_daskmpi.plan.layout import Node, block_placement
from start_daskmpi.plan.network import Address
from start_daskmpi.plan.options import parse_args
from start_daskmpi.security.private import make_log_dir

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1500"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Odd characters users paste: other digits, signs, spaces, NUL, a home prefix.
ODD = st.sampled_from(["", " ", "-", "+", "²", "٣", "\0", "~", "~nobody_here/x", "é", "\t1"])
any_text = st.text(max_size=12)
numbers = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["0", "1", "2", "8", "65535", "65536", "1e3", "0x10", "1_000", "3.5"]),
    ODD, any_text,
)
sizes = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["80GB", "0.5", "1", "auto", "default", "0", "-1", "5XB", "10 GB",
                     "1e400", "nan", "inf", "0.9", "70GiB", "1.5"]),
    ODD, any_text,
)
durations = st.one_of(
    st.sampled_from(["60", "90s", "2m", "1h", "0", "-5", "nan", "inf", "1e999", "soon", "5 years"]),
    numbers,
)
host_ports = st.one_of(
    st.builds(lambda h, p: f"{h}:{p}",
              st.sampled_from(["", "127.0.0.1", "0.0.0.0", "[::1]", "::1", "localhost", "a b",
                               "[]", "[::1", "x\0y", "node-1.example"]),
              numbers),
    numbers, any_text,
)
# Paths stay inside the test's folder (relative, and $HOME is moved there).
path_names = st.one_of(
    st.text(alphabet="abc/. ~-", min_size=1, max_size=12).filter(lambda p: ".." not in p),
    ODD,
)
VALUES = {
    "--nthreads": numbers, "--memory-limit": sizes, "--local-directory": path_names,
    "--gpus-per-node": numbers, "--rmm-pool-size": sizes, "--device-memory-limit": sizes,
    "--gpu-vendor": st.one_of(st.sampled_from(sorted(VENDORS)), any_text),
    "--interface": st.one_of(st.sampled_from(["lo", "eth0", "ib0", "hsn0"]), any_text),
    "--protocol": st.one_of(st.sampled_from(["tls", "tcp", "ucx", "inproc"]), any_text),
    "--scheduler-port": numbers, "--dashboard-address": host_ports, "--jupyter-port": numbers,
    "--ssh-hops": st.one_of(st.sampled_from(["a@b,c", "login", ",", "a,,b"]), any_text),
    "--scheduler-file": path_names, "--log-dir": path_names, "--status-file": path_names,
    "--join": path_names,
    "--startup-timeout": durations, "--nodes": numbers, "-np": numbers, "--ranks": numbers,
    "--hostfile": path_names, "--preload": path_names,
    "--pre-import": st.one_of(
        st.sampled_from(["", "dask.array,cupy", "__main__", "os.path", "a-b", ",", "no_such"]),
        any_text,
    ),
    "--min-workers": st.one_of(st.sampled_from(["0.9", "0.0", "1.0", "1e9", "-0.5"]), numbers),
    "--walltime": st.one_of(
        st.sampled_from(["01:30:00", "1:00:00:00", "00:00", "1:xx", "::", "99:99"]), durations
    ),
    "--walltime-margin": durations,
}
SWITCHES = ["--nanny", "--no-nanny", "--tls", "--no-tls", "--dashboard", "--no-dashboard",
            "--require-gpu", "-v", "--verbose", "--plan", "--launch-command"]


@st.composite
def option_lists(draw, planning: bool = False) -> list[str]:
    """Options in any order, some repeated, a stray token now and then, and
    perhaps a script with arguments of its own after them."""
    words = ["--plan"] if planning else []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["value", "value", "value", "switch", "stray"]))
        if kind == "value":
            option = draw(st.sampled_from(sorted(VALUES)))
            value = draw(VALUES[option])
            words += draw(st.sampled_from([[option, value], [f"{option}={value}"]]))
        elif kind == "switch":
            words.append(draw(st.sampled_from(SWITCHES)))
        else:
            words.append(draw(st.one_of(any_text, st.sampled_from(["--", "-", "--gpus", "-n"]))))
    if draw(st.booleans()):
        words += ["job.py", *draw(st.lists(any_text, max_size=3))]
    return words


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message.strip() and "Traceback" not in message


@pytest.fixture
def in_a_folder(tmp_path, monkeypatch):
    """Paths the fuzz names land in a folder of the test's, $HOME's included."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NODEFILE", raising=False)
    return tmp_path


@FUZZ
@given(argv=option_lists())
def test_the_parser_takes_an_option_list_or_says_why_in_one_line(argv):
    try:
        parse_args(argv)
    except LaunchError as e:
        assert one_line(str(e)), argv


@FUZZ
@given(argv=option_lists(planning=True))
def test_a_plan_is_printed_or_one_line_says_why(argv, in_a_folder, monkeypatch):
    """--plan runs the whole command (main) but MPI: status 0 and a plan, or 2
    and one line on stderr; nothing else, whatever the options."""
    monkeypatch.setattr(cli, "this_node", lambda gpus, vendor=None: node_with(4 if gpus is None
                                                                           else min(gpus, 64)))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        out.reconfigure = lambda **_: None
        status = cli.main(argv)
    assert (status, bool(out.getvalue())) in ((0, True), (2, False)), (argv, err.getvalue())
    assert status == 0 or one_line(err.getvalue()), (argv, err.getvalue())


def node_with(gpus: int, host: str = "node0") -> Node:
    return Node(host=host, gpus=tuple(str(i) for i in range(gpus)), cores=64, memory=2**38,
                addresses=(Address("lo", "127.0.0.1", 8),
                           Address("ib0", "10.0.0.1" if host == "node0" else "10.0.0.2", 24)))


@FUZZ
@given(argv=option_lists(), nodes=st.integers(1, 2), gpus=st.integers(0, 4))
def test_every_rank_starts_or_says_why_in_one_line(argv, nodes, gpus, in_a_folder):
    """What each rank decides from the options before it starts a server: the
    layout, its log folder, and its role's checks."""
    try:
        args = parse_args(argv)
    except LaunchError:
        return
    if args.plan or args.launch_command:
        return
    node_list = [node_with(gpus, f"node{i}") for i in range(nodes)]
    rank_nodes = block_placement(nodes * (gpus + 2), nodes)
    try:
        config = from_args(args)
        layout, interfaces, _ = roles_and_interfaces(
            config, rank_nodes, node_list, [{}] * len(rank_nodes), command_roles)
        make_log_dir(config.run.log_dir)
        scratch = config.workers.local_directory or local_directory(None)
        for role in layout.roles:
            preflight(role, config, interfaces[0], scratch)
    except LaunchError as e:
        assert one_line(str(e)), argv


def test_the_fuzz_reaches_every_option():
    """A fuzz that never drew an option would pass on a broken one."""
    from start_daskmpi.plan.options import build_parser

    named = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", build_parser().format_help()))
    assert named - {"-h", "--help"} == set(VALUES) | set(SWITCHES)
