"""Ports, folders, tunnels and launchers: the side-effect-free parts."""
from __future__ import annotations

import asyncio
import datetime
import logging
import os
import re
import socket
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from distributed import Security

from start_daskmpi.errors import LaunchError
from start_daskmpi.lifecycle.checks import check_local_directory, check_script
from start_daskmpi.mpi.world import launcher_world, mpi_world
from start_daskmpi.plan.banners import (
    ROUTE_HINT,
    DashboardPlace,
    Forward,
    connection_banner,
    jupyter_banner,
    nested_ssh_command,
    ssh_command,
)
from start_daskmpi.plan.config import from_argv
from start_daskmpi.plan.folders import default_local_directory, default_log_dir
from start_daskmpi.plan.network import check_interface
from start_daskmpi.plan.options import parse_args
from start_daskmpi.plan.ports import (
    Endpoint,
    choose_port,
    dashboard_address,
    parse_host_port,
    port_is_free,
)
from start_daskmpi.plan.sites import route_is_a_guess, site_of, ssh_route
from start_daskmpi.security.private import make_log_dir
from start_daskmpi.servers import scheduler as servers
from start_daskmpi.servers.logs import DASK_LOGGER_ROOTS, OneLineFormatter, dask_loggers
from start_daskmpi.servers.scheduler import start_scheduler


def test_explicit_free_port_is_kept():
    assert choose_port(9000, 8786, lambda p: True, "--scheduler-port") == 9000


def test_explicit_taken_port_is_an_error():
    with pytest.raises(LaunchError, match="port 9000 of --scheduler-port is already in use"):
        choose_port(9000, 8786, lambda p: p != 9000, "--scheduler-port")


def test_port_zero_means_any():
    assert choose_port(0, 8786, lambda p: False, "--scheduler-port") == 0


def test_taken_default_port_gives_way_to_the_next_free_one():
    taken = {8786, 8787, 8788}
    assert choose_port(None, 8786, lambda p: p not in taken, "--scheduler-port") == 8789


def test_no_free_port_nearby_means_any():
    assert choose_port(None, 8786, lambda p: False, "--scheduler-port") == 0


def test_port_is_free_sees_a_real_listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        host_free = lambda p: port_is_free("127.0.0.1", p)  # noqa: E731
        chosen = choose_port(None, port, host_free, "--scheduler-port")
        assert chosen != port and (chosen == 0 or host_free(chosen))
    assert port_is_free("127.0.0.1", port)


def test_a_dashboard_address_asked_for_keeps_its_host_and_port_or_is_refused():
    taken = {8787}
    free = lambda host, port: port not in taken  # noqa: E731
    assert dashboard_address(":9999", free) == ":9999"
    assert dashboard_address("127.0.0.1:0", free) == "127.0.0.1:0"
    with pytest.raises(LaunchError, match="--dashboard-address"):
        dashboard_address("0.0.0.0:8787", free)


E = "ssh -o ExitOnForwardFailure=yes"  # every tunnel's start
L = "-L 127.0.0.1:8787:127.0.0.1:8787"
DASHBOARD = [Forward.to_port(8787)]
SOCKET = "/tmp/start_daskmpi-x1/dashboard.sock"


def test_thetagpu_route_is_the_seed_chain_as_jump_hosts():
    route = ssh_route(None, "thetagpu11", "thetagpu11.alcf.anl.gov", "ada")
    assert ssh_command(route, DASHBOARD) == (
        f"{E} -J ada@theta.alcf.anl.gov,thetagpusn1 {L} thetagpu11"
    )
    # The seed's nested form, kept for an ssh without -J:
    assert nested_ssh_command(route, DASHBOARD) == (
        f"ssh -t -o ExitOnForwardFailure=yes {L} ada@theta.alcf.anl.gov "
        f"ssh -t -o ExitOnForwardFailure=yes {L} thetagpusn1 "
        f"ssh -t -o ExitOnForwardFailure=yes {L} thetagpu11"
    )


@pytest.mark.parametrize(
    "host, fqdn, site, tunnel",
    [
        ("thetagpu11", "thetagpu11.mcp.alcf.anl.gov", "ThetaGPU",
         f"{E} -J ada@theta.alcf.anl.gov,thetagpusn1 {L} thetagpu11"),
        ("x3005c0s7b0n0", "x3005c0s7b0n0.hsn.cm.polaris.alcf.anl.gov", "Polaris",
         f"{E} -J ada@polaris.alcf.anl.gov {L} x3005c0s7b0n0"),
        ("x4102c5s2b0n0", "x4102c5s2b0n0.hostmgmt2102.cm.aurora.alcf.anl.gov", "Aurora",
         f"{E} -J ada@aurora.alcf.anl.gov {L} x4102c5s2b0n0"),
        ("nid001234", "nid001234.chn.perlmutter.nersc.gov", "Perlmutter",
         f"{E} -J ada@perlmutter.nersc.gov {L} nid001234"),
        ("frontier01234", "frontier01234.frontier.olcf.ornl.gov", "Frontier",
         f"{E} -J ada@frontier.olcf.ornl.gov {L} frontier01234"),
        ("node7", "node7.cluster.example.org", None,
         f"{E} {L} ada@node7.cluster.example.org"),
    ],
)
def test_each_site_profile_gives_its_tunnel(host, fqdn, site, tunnel):
    found = site_of(host, fqdn)
    assert (found.name if found else None) == site
    assert ssh_command(ssh_route(None, host, fqdn, "ada"), DASHBOARD) == tunnel


@pytest.mark.parametrize(
    "host, fqdn, environ, site",
    [
        # HPE Cray EX names nodes alike everywhere: a short name alone is no site.
        ("nid001234", "nid001234", {}, None),
        ("nid001234", "nid001234.lumi.csc.fi", {}, None),
        ("nid001234", "nid001234", {"NERSC_HOST": "perlmutter"}, "Perlmutter"),
        ("x3005c0s7b0n0", "x3005c0s7b0n0", {}, None),
        ("x3005c0s7b0n0", "x3005c0s7b0n0",
         {"PBS_O_HOST": "polaris-login-02.hsn.cm.polaris.alcf.anl.gov"}, "Polaris"),
        ("x4102c5s2b0n0", "x4102c5s2b0n0", {"PBS_O_HOST": "aurora-uan-0009"}, "Aurora"),
        # The domain says it whatever the node is called.
        ("n1", "n1.chn.perlmutter.nersc.gov", {}, "Perlmutter"),
    ],
)
def test_sites_are_told_apart_by_domain_or_by_their_own_variable(host, fqdn, environ, site):
    found = site_of(host, fqdn, environ)
    assert (found.name if found else None) == site


def test_a_route_with_no_site_and_no_hops_is_a_guess_the_banner_says_so():
    assert route_is_a_guess(None, "node7", "node7.cluster.example.org")
    assert not route_is_a_guess("me@login", "node7", "node7.cluster.example.org")
    assert not route_is_a_guess(None, "thetagpu11", "thetagpu11.mcp.alcf.anl.gov")
    assert "--ssh-hops you@LOGIN" in ROUTE_HINT


def test_generic_route_goes_straight_to_the_node():
    route = ssh_route(None, "node7", "node7.cluster.example.org", "ada")
    assert ssh_command(route, [*DASHBOARD, Forward.to_port(7787)]) == (
        f"{E} {L} -L 127.0.0.1:7787:127.0.0.1:7787 ada@node7.cluster.example.org"
    )


def test_a_fully_qualified_name_of_localhost_gives_way_to_the_hostname():
    assert ssh_route(None, "node7", "localhost", "ada") == ["ada@node7"]
    assert ssh_route(None, "node7", "localhost.localdomain", "ada") == ["ada@node7"]


def test_given_hops_end_at_the_node():
    route = ssh_route("me@login.site.org, gateway", "x1001c0s0b0n0", "x", "ada")
    assert route == ["me@login.site.org", "gateway", "x1001c0s0b0n0"]
    assert ssh_command(route, [Forward.to_port(8790)]) == (
        f"{E} -J me@login.site.org,gateway -L 127.0.0.1:8790:127.0.0.1:8790 x1001c0s0b0n0"
    )


def test_the_dashboards_socket_is_forwarded_to_its_path_on_the_node():
    route = ["u@login", "thetagpu11"]
    text = connection_banner(Endpoint(socket=SOCKET), route)
    first, fallback = text.splitlines()[1:3]
    assert first == f"    {E} -J u@login -L 127.0.0.1:8787:{SOCKET} thetagpu11"
    # Nested, each login node forwards its loopback port; the last ssh, the socket.
    assert fallback == (
        "    (with an ssh older than OpenSSH 7.3, which lacks -J: "
        "ssh -t -o ExitOnForwardFailure=yes -L 127.0.0.1:8787:127.0.0.1:8787 u@login "
        f"ssh -t -o ExitOnForwardFailure=yes -L 127.0.0.1:8787:{SOCKET} thetagpu11; but that "
        "listens on each login node's 127.0.0.1, where the other users of that node reach it "
        "too)"
    )
    assert "http://127.0.0.1:8787/status" in text and "localhost" not in text


def test_banner_shows_the_port_actually_used_and_the_nested_form_with_its_risk():
    text = connection_banner(Endpoint(port=8790), ["u@login", "thetagpu11"])
    first, fallback = text.splitlines()[1:3]
    assert first == f"    {E} -J u@login -L 127.0.0.1:8790:127.0.0.1:8790 thetagpu11"
    assert fallback.startswith("    (with an ssh older than OpenSSH 7.3, which lacks -J: ssh -t ")
    assert fallback.endswith("but that listens on each login node's 127.0.0.1, where the "
                             "other users of that node reach it too)")
    assert "http://127.0.0.1:8790/status" in text
    assert "dashboard is off" in connection_banner(None, ["n"])
    assert "older than" not in connection_banner(Endpoint(port=8790), ["u@node7"])


LOG = Path("/logs/jupyterlab.log")
LAB = "-L 127.0.0.1:7787:127.0.0.1:7787"


def test_jupyterlab_beside_the_scheduler_gets_one_tunnel_for_both():
    route = ["u@login", "thetagpu11"]
    text = jupyter_banner(route, 7787, "TOKEN", LOG,
                          DashboardPlace(route, Endpoint(socket=SOCKET), 8787))
    both = f"{LAB} -L 127.0.0.1:8787:{SOCKET}"
    assert f"    {E} -J u@login {both} thetagpu11\n" in text
    assert "http://127.0.0.1:7787/lab?token=TOKEN" in text
    assert "http://127.0.0.1:8787/status      " \
        "(also inside JupyterLab: http://127.0.0.1:7787/proxy/8787/status)" in text
    assert "localhost" not in text


def test_jupyterlab_on_another_node_gets_a_tunnel_of_its_own():
    text = jupyter_banner(["u@login", "thetagpu12"], 7787, "TOKEN", LOG,
                          DashboardPlace(["u@login", "thetagpu11"], Endpoint(port=8787), 8788))
    lab, dashboard = text.split("To connect to the Dask dashboard")
    assert f"    {E} -J u@login {LAB} thetagpu12\n" in lab
    assert "8787" not in lab.split("To open JupyterLab")[0]
    assert f"    {E} -J u@login {L} thetagpu11\n" in dashboard
    # Inside JupyterLab, the dashboard is at its port on JupyterLab's node.
    assert "(also inside JupyterLab: http://127.0.0.1:7787/proxy/8788/status)" in text


def test_jupyterlab_without_a_dashboard_tunnels_only_itself():
    text = jupyter_banner(["n1"], 7787, "TOKEN", LOG, None)
    assert f"    {E} {LAB} n1\n" in text and "/status" not in text


NOW = datetime.datetime(2026, 11, 24, 21, 5, 9)


@pytest.mark.parametrize(
    "environ, name",
    [
        ({"COBALT_JOBID": "12345"}, "12345"),
        ({"PBS_JOBID": "678.polaris-pbs-01"}, "678.polaris-pbs-01"),
        ({"SLURM_JOB_ID": "99"}, "99"),
        ({}, "20261124-210509"),
    ],
)
def test_default_log_dir(environ, name):
    assert default_log_dir(environ, Path("/home/ada"), NOW) == Path("/home/ada/dask_logs") / name


def test_make_log_dir_is_private_and_never_reuses_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    first, second = make_log_dir(None), make_log_dir(None)
    assert first == tmp_path / "dask_logs" / "42" and second == tmp_path / "dask_logs" / "42.1"
    assert stat.S_IMODE(first.stat().st_mode) == 0o700


def test_make_log_dir_refuses_an_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LaunchError, match="cannot create --log-dir"):
        make_log_dir(blocker / "logs")


def test_local_directory_prefers_tmpdir_then_site_then_node_scratch():
    writable = {"/local/scratch", "/tmp", "/mnt/bb/ada"}.__contains__
    everything = lambda path: True  # noqa: E731
    assert default_local_directory({"TMPDIR": "/job/tmp"}, None, everything) == "/job/tmp"
    assert default_local_directory({}, None, writable) == "/local/scratch"
    assert default_local_directory({}, None, lambda p: p == "/tmp") == "/tmp"
    frontier = site_of("frontier01234", "frontier01234.frontier.olcf.ornl.gov")
    assert default_local_directory({"USER": "ada"}, frontier, writable) == "/mnt/bb/ada"


@pytest.mark.parametrize(
    "environ, world",
    [
        ({"OMPI_COMM_WORLD_SIZE": "10", "OMPI_COMM_WORLD_RANK": "3"}, (10, 3)),
        ({"PMI_SIZE": "4", "PMI_RANK": "0"}, (4, 0)),
        ({"SLURM_STEP_NUM_TASKS": "18", "SLURM_PROCID": "17"}, (18, 17)),
        ({"PMI_SIZE": "4"}, None),
        ({}, None),
    ],
)
def test_launcher_world(environ, world):
    assert launcher_world(environ) == world


def test_no_launcher_means_local_mode_without_touching_mpi():
    assert mpi_world({}) is None


def test_check_script(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("print('hi')\n")
    check_script(str(good))
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    with pytest.raises(LaunchError, match=r"bad.py:1: .*fix the script's syntax"):
        check_script(str(bad))
    with pytest.raises(LaunchError, match="script not found"):
        check_script(str(tmp_path / "missing.py"))
    with pytest.raises(LaunchError, match="not a file"):
        check_script(str(tmp_path))
    binary = tmp_path / "data.py"
    binary.write_bytes(b"\x00\xff\xfe")
    with pytest.raises(LaunchError, match="not a Python script"):
        check_script(str(binary))


def test_check_interface():
    check_interface("lo")
    check_interface(None)
    with pytest.raises(LaunchError, match="no network interface 'ib9'.*it has: .*lo"):
        check_interface("ib9")


# Root writes past any mode: a folder read-only to root is a read-only mount,
# made in a mount namespace of the check's own (nothing outside sees it).
READ_ONLY_FOR_ROOT = (
    'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$2" -c "$3" "$1"'
)
CHECK = """
import sys
from start_daskmpi.lifecycle.checks import check_local_directory
from start_daskmpi.errors import LaunchError
try:
    check_local_directory(sys.argv[1])
except LaunchError as e:
    print(e)
"""


def test_check_local_directory(tmp_path):
    check_local_directory(str(tmp_path / "new"))
    assert (tmp_path / "new").is_dir()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:
        with pytest.raises(LaunchError, match="not writable"):
            check_local_directory(str(locked))
        return
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_FOR_ROOT,
         "sh", str(locked), sys.executable, CHECK],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.stdout.strip() == (
        f"--local-directory {locked} is not writable: choose another folder"
    ), done


def test_terminal_log_lines_name_the_file_instead_of_a_traceback(tmp_path):
    formatter = OneLineFormatter("%(levelname)s - %(message)s", tmp_path / "rank2.log")
    try:
        raise OSError("queue closed")
    except OSError:
        record = logging.LogRecord(
            "distributed.nanny", logging.ERROR, __file__, 1, "Worker process died", None,
            sys.exc_info(),
        )
    assert formatter.format(record) == (
        f"ERROR - Worker process died (traceback in {tmp_path / 'rank2.log'})"
    )
    assert record.exc_info is not None  # the file's handler still gets the traceback


def test_a_warning_of_several_lines_is_one_line_on_the_terminal(tmp_path):
    formatter = OneLineFormatter("%(name)s - %(message)s", tmp_path / "rank0.log")
    record = logging.LogRecord(
        "py.warnings", logging.WARNING, __file__, 1,
        "node.py:196: UserWarning: Port 8787 is in use.\nPerhaps ...\n  warnings.warn(\n",
        None, None,
    )
    assert formatter.format(record) == (
        "py.warnings - node.py:196: UserWarning: Port 8787 is in use. Perhaps ... warnings.warn("
    )


def test_loggers_made_by_another_thread_meanwhile_do_not_break_the_log_setup(monkeypatch):
    """The scheduler's rank imports on another thread while it sets up its logs;
    a logger created in the middle of the lookup once ended a CI job."""

    class GrowsWhileRead(dict):
        def items(self):
            for entry in super().items():
                self[f"imported.meanwhile.{len(self)}"] = logging.PlaceHolder(None)
                yield entry

    known = GrowsWhileRead(logging.Logger.manager.loggerDict)
    monkeypatch.setattr(logging.Logger.manager, "loggerDict", known)
    names = {logger.name for logger in dask_loggers()}
    assert "distributed" in names and "distributed.scheduler" in names
    assert not any(name.split(".")[0] not in DASK_LOGGER_ROOTS for name in names)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("explicit", [False, True])
def test_a_port_taken_between_choice_and_bind(monkeypatch, explicit, tmp_path):
    """Another launcher on the node took the port we chose: a default one gives
    way to the next free port; an explicit one is an error."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        chosen = []

        def racing(*args):
            options = sd_scheduler_options(*args)
            chosen.append(port if not chosen else options["port"])
            return {**options, "port": chosen[-1]}

        sd_scheduler_options = servers.scheduler_options
        monkeypatch.setattr(servers, "scheduler_options", racing)
        argv = ["--interface", "lo", "--no-tls", "--dashboard-address", "127.0.0.1:0"]
        config = from_argv([*argv, *(["--scheduler-port", str(port)] if explicit else [])])

        async def start() -> int:
            scheduler, _ = await start_scheduler(config, Security(), tmp_path, "lo")
            async with scheduler:
                return scheduler.port

        if explicit:
            with pytest.raises(LaunchError, match="in use"):
                asyncio.run(start())
        else:
            assert asyncio.run(start()) != port and chosen[0] == port and len(chosen) == 2


@pytest.mark.timeout(60)
def test_a_dashboard_port_asked_for_and_taken_between_choice_and_bind(monkeypatch, tmp_path):
    """The dashboard's port was taken after we chose it: distributed would
    serve on another, silently; the job stops, as the user asked for that port."""
    pytest.importorskip("bokeh")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(servers, "port_is_free", lambda host, p: True)  # the race
        config = from_argv(["--interface", "lo", "--no-tls",
                            "--dashboard-address", f"127.0.0.1:{port}"])

        async def start() -> None:
            scheduler, _ = await start_scheduler(config, Security(), tmp_path, "lo")
            await scheduler.close()

        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            with pytest.raises(LaunchError, match=f"port {port} of --dashboard-address is"):
                asyncio.run(start())
        assert not [w for w in warned if "already in use" in str(w.message)]


@pytest.mark.timeout(60)
def test_the_dashboard_is_served_on_a_private_socket_and_no_port(tmp_path):
    """Without --dashboard-address, every HTTP route of the scheduler (the
    dashboard, its JSON, metrics) answers on a socket in the process's private
    folder, user-only, and on no TCP port: on loopback, every user of the node
    could read the workers, task keys, errors and logs there."""
    import psutil
    from tornado.httpclient import AsyncHTTPClient
    from tornado.netutil import Resolver

    pytest.importorskip("bokeh")
    config = from_argv(["--interface", "lo", "--no-tls"])

    class ToTheSocket(Resolver):
        async def resolve(self, host, port, family=0):
            return [(socket.AF_UNIX, str(tmp_path / "dashboard.sock"))]

    async def served() -> tuple[Endpoint, set, int, bytes]:
        scheduler, dashboard = await start_scheduler(config, Security(), tmp_path, "lo")
        async with scheduler:
            ports = {c.laddr.port for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.pid == os.getpid()}
            client = AsyncHTTPClient(force_instance=True, resolver=ToTheSocket())
            answer = await client.fetch("http://localhost/individual-plots.json")
            client.close()
            return dashboard, ports, scheduler.port, answer.body

    dashboard, ports, scheduler_port, body = asyncio.run(served())
    assert dashboard == Endpoint(socket=str(tmp_path / "dashboard.sock"))
    assert ports == {scheduler_port}  # the scheduler's own, and no HTTP server's
    assert b"Task Stream" in body
    # Its scratch is there too, first on its sys.path: nothing another user can reach.
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["dask-scratch-space"]


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8787", ("127.0.0.1", 8787)),
    (":8787", ("", 8787)),
    ("8787", ("127.0.0.1", 8787)),  # the dask CLI's bare port, on the default host
    ("[::1]:8787", ("::1", 8787)),
])
def test_host_and_port(text, expected):
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["host:", "host:http", "::1:8787", "h:70000", ""])
def test_bad_host_and_port(text):
    with pytest.raises(ValueError):
        parse_host_port(text)


def test_dashboard_address_option_is_checked_at_parse():
    assert parse_args(["--dashboard-address", "8787"]).dashboard_address == "8787"
    with pytest.raises(LaunchError, match="--dashboard-address: expected \\[HOST\\]:PORT"):
        parse_args(["--dashboard-address", "localhost:http"])


def test_no_nanny_with_several_gpus_locally_is_an_error(monkeypatch):
    from start_daskmpi.modes import local
    from start_daskmpi.plan.layout import Node

    two_gpus = Node("here", ("0", "1"), 8, 2**34)
    def roles(argv):
        return local.local_roles(from_argv(argv), [0], [two_gpus], [{}])

    assert len(roles([]).workers) == 2
    with pytest.raises(LaunchError, match="--no-nanny runs every worker in this one process"):
        roles(["--no-nanny"])


def test_a_node_asks_dns_once_and_its_ranks_take_its_scratch(monkeypatch):
    """The node's first rank finds the node (its site by DNS, its scratch);
    the others take its scratch from it, asking DNS nothing."""
    import socket

    from start_daskmpi.lifecycle.cluster import scratch_of
    from start_daskmpi.plan import node as node_module

    asked = []
    frontier = "n7.frontier.olcf.ornl.gov"
    monkeypatch.setattr(socket, "getfqdn", lambda *a: asked.append(1) or frontier)
    monkeypatch.setattr(node_module, "default_local_directory",
                        lambda environ, site: f"/scratch of {site.name}")
    found = node_module.this_node(0)
    assert found.scratch == "/scratch of Frontier" and len(asked) == 1
    assert scratch_of(from_argv(["job.py"]), found) == "/scratch of Frontier"
    assert scratch_of(from_argv(["--local-directory", "/mine", "job.py"]), found) == "/mine"
    assert len(asked) == 1


@pytest.mark.timeout(180)
def test_jupyterlab_whose_port_was_taken_meanwhile_starts_on_the_next(tmp_path):
    """Between our choice of a free port and JupyterLab's bind, another
    launcher took it: JupyterLab says so in its log, and starts again on the
    next free port (a real JupyterLab, twice, with the job's one config)."""
    pytest.importorskip("jupyterlab")
    from start_daskmpi.driver.jupyterlab import (
        JUPYTER_START_TIMEOUT,
        lab_config,
        start_jupyterlab,
        start_serving_jupyterlab,
        stop_jupyterlab,
        wait_until_serving,
    )
    from start_daskmpi.plan.ports import DEFAULT_JUPYTER_PORT, port_is_free

    log, token = tmp_path / "jupyterlab.log", "t" * 43
    config = lab_config(token, None, tmp_path)
    with socket.socket() as other_launcher:
        try:
            other_launcher.bind(("127.0.0.1", DEFAULT_JUPYTER_PORT))
            other_launcher.listen()
        except OSError:
            pass  # another test's: as good
        lab, port = start_serving_jupyterlab(
            None,
            lambda p: p == DEFAULT_JUPYTER_PORT or port_is_free("127.0.0.1", p),  # the race
            lambda p: start_jupyterlab(p, config, None, log),
            lambda lab, p: wait_until_serving(lab, p, token, log, JUPYTER_START_TIMEOUT),
            log,
        )
        try:
            assert port != DEFAULT_JUPYTER_PORT and lab.poll() is None
            assert f"port {DEFAULT_JUPYTER_PORT} is not available" in log.read_text()
        finally:
            stop_jupyterlab(lab)


def test_jupyterlab_that_fails_otherwise_or_on_an_asked_port_is_an_error(tmp_path):
    from start_daskmpi.driver.jupyterlab import start_serving_jupyterlab

    log = tmp_path / "jupyterlab.log"
    log.write_text("[C ServerApp] ERROR: ... because port 7787 is not available.\n")
    started = []

    class Exited:
        def poll(self):
            return 1

    def start(port):
        started.append(port)
        return Exited()

    with pytest.raises(LaunchError, match="exited with status 1"):
        start_serving_jupyterlab(7787, lambda p: True, start, serving_never(log), log)
    log.write_text("some other failure\n")
    with pytest.raises(LaunchError, match="exited with status 1"):
        start_serving_jupyterlab(None, lambda p: True, start, serving_never(log), log)
    assert started == [7787, 7787]


def serving_never(log):
    def serving(lab, port):
        raise LaunchError("JupyterLab exited with status 1")

    return serving


def test_workers_spill_into_a_private_folder_of_the_scratch_removed_after(tmp_path):
    from start_daskmpi.plan.folders import local_directory
    from start_daskmpi.security.private import private_scratch

    given = tmp_path / "scratch"
    given.mkdir()
    assert local_directory(str(given)) == str(given)
    assert local_directory(None) == str(tmp_path)  # $TMPDIR first (conftest points it here)
    with private_scratch(str(given)) as folder:
        assert folder.parent == given and folder.name.startswith("start_daskmpi-")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        (folder / "spilled").write_text("x")
    assert list(given.iterdir()) == []


# What the user reads and types, whole: each banner as printed.
CONNECT = "execute the following command in a shell on your local machine:"
NESTED = ("    (with an ssh older than OpenSSH 7.3, which lacks -J: {inner}; but that listens on "
          "each login node's 127.0.0.1, where the other users of that node reach it too)")


def nested(*hops: tuple[str, str]) -> str:
    """The nested form: (forwards, host) for each hop."""
    return NESTED.format(inner=" ".join(
        f"ssh -t -o ExitOnForwardFailure=yes {forwards} {host}" for forwards, host in hops))


def test_the_banners_whole():
    dash, lab = f"-L 127.0.0.1:8787:{SOCKET}", LAB
    hop = "-L 127.0.0.1:8787:127.0.0.1:8787"
    assert connection_banner(Endpoint(socket=SOCKET), ["u@login", "thetagpu11"]).splitlines() \
            == [
        f"To connect to the Dask dashboard, {CONNECT}",
        f"    {E} -J u@login {dash} thetagpu11",
        nested((hop, "u@login"), (dash, "thetagpu11")),
        "To open the Dask dashboard, go to:",
        "    http://127.0.0.1:8787/status",
    ]
    assert connection_banner(None, ["n"]) == \
        "The Dask dashboard is off (--no-dashboard, or bokeh is not installed)."
    opening_lab = [
        "", f"To open JupyterLab, go to (see log file {LOG}):",
        "    http://127.0.0.1:7787/lab?token=TOKEN",
    ]
    assert jupyter_banner(["u@login", "thetagpu12"], 7787, "TOKEN", LOG, DashboardPlace(
            ["u@login", "thetagpu11"], Endpoint(socket=SOCKET), 8787)).splitlines() == [
        f"To connect to JupyterLab, {CONNECT}",
        f"    {E} -J u@login {lab} thetagpu12",
        nested((lab, "u@login"), (lab, "thetagpu12")),
        "",
        f"To connect to the Dask dashboard, {CONNECT}",
        f"    {E} -J u@login {dash} thetagpu11",
        nested((hop, "u@login"), (dash, "thetagpu11")),
        *opening_lab,
        "",
        "To open the Dask dashboard, go to:",
        "    http://127.0.0.1:8787/status      "
        "(also inside JupyterLab: http://127.0.0.1:7787/proxy/8787/status)",
    ]
    assert jupyter_banner(["n1"], 7787, "TOKEN", LOG, DashboardPlace(
            ["n1"], Endpoint(socket=SOCKET), 8787)).splitlines() == [
        f"To connect to JupyterLab and the Dask dashboard, {CONNECT}",
        f"    {E} {lab} {dash} n1",
        *opening_lab,
        "",
        "To open the Dask dashboard, go to:",
        "    http://127.0.0.1:8787/status      "
        "(also inside JupyterLab: http://127.0.0.1:7787/proxy/8787/status)",
    ]
    assert jupyter_banner(["n1"], 7787, "TOKEN", LOG, None).splitlines() == [
        f"To connect to JupyterLab, {CONNECT}", f"    {E} {lab} n1", *opening_lab,
    ]


def test_ports_at_the_edges_and_on_ipv6():
    from start_daskmpi.plan.ports import join_host_port

    assert parse_host_port(":65535") == ("", 65535)
    for text in (":65536", "[::1:8787"):
        with pytest.raises(ValueError):
            parse_host_port(text)
    assert join_host_port("::1", 8787) == "[::1]:8787" and join_host_port("h", 1) == "h:1"
    assert choose_port(None, 65535, lambda p: p != 65535, "--x") == 0  # none left: any
    asked = []
    assert dashboard_address("[::1]:8787", lambda h, p: asked.append((h, p)) or True) \
        == "[::1]:8787"
    assert asked == [("::1", 8787)]
    with pytest.raises(LaunchError) as taken:
        dashboard_address("10.0.0.1:9000", lambda h, p: False)
    assert str(taken.value) == ("port 9000 of --dashboard-address is already in use on this "
                                "node: choose another, or leave --dashboard-address out to "
                                "take a free one")
    try:
        held = socket.socket(socket.AF_INET6)
        held.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with held:
        held.listen()
        port = held.getsockname()[1]
        assert not port_is_free("::1", port)
    assert port_is_free("::1", port)  # an IPv6 host is bound as IPv6


def test_the_scratch_candidates_in_order():
    from start_daskmpi.plan.folders import NODE_SCRATCH
    from start_daskmpi.plan.sites import SITES

    tried = []
    frontier = next(site for site in SITES if site.name == "Frontier")
    assert default_local_directory({}, frontier, lambda p: tried.append(p) and False) == "/tmp"
    assert tried == ["/mnt/bb/", "/tmp", *NODE_SCRATCH, "/tmp"]  # no $TMPDIR, no $USER
    assert default_log_dir({"PBS_JOBID": "12/3.pbs"}, Path("/h"), NOW) == \
        Path("/h/dask_logs/12_3.pbs")


def test_a_private_folder_is_made_whole_and_others_shut_out(tmp_path):
    from start_daskmpi.security.private import private_dir

    old = os.umask(0)  # the modes are the code's, not the umask's
    try:
        made = private_dir(tmp_path / "a" / "b", "--log-dir")
    finally:
        os.umask(old)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    open_to_group = tmp_path / "g"
    open_to_group.mkdir(mode=0o740)
    open_to_group.chmod(0o740)
    with pytest.raises(LaunchError) as open_to_others:
        private_dir(open_to_group, "--log-dir")
    assert str(open_to_others.value) == (f"--log-dir {open_to_group} is open to others (mode "
                                         "740): chmod 700 it, or give another folder")
    with pytest.raises(LaunchError) as no_home:
        make_log_dir(Path("~no_such_user_here/logs"))
    assert str(no_home.value) == \
        "--log-dir ~no_such_user_here/logs: no such user's home: give a path"


def test_a_node_without_a_full_name_is_reached_by_its_hostname():
    from start_daskmpi.plan.sites import default_ssh_hops

    assert default_ssh_hops("node7", "", "ada") == ["ada@node7"]


def test_the_default_scratch_is_the_sites_where_the_batch_system_gives_none(
    tmp_path, monkeypatch
):
    from start_daskmpi.plan import folders as places
    from start_daskmpi.plan.sites import Site

    site_scratch = tmp_path / "bb"
    site_scratch.mkdir()
    monkeypatch.delenv("TMPDIR")
    monkeypatch.setattr(places, "this_site", lambda: Site(
        "Here", None, "^n$", None, ("{user}@login",), (str(site_scratch),)))
    assert places.local_directory(None) == str(site_scratch)


def test_log_folders_of_one_job_are_numbered_up_to_a_bound(tmp_path, monkeypatch):
    for name in ("PBS_JOBID", "SLURM_JOB_ID", "COBALT_JOBID", "LSB_JOBID", "FLUX_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("HOME", str(tmp_path))
    base = tmp_path / "dask_logs" / "77"
    assert make_log_dir(None) == base and make_log_dir(None) == base.with_name("77.1")
    for attempt in range(2, 1000):
        base.with_name(f"77.{attempt}").mkdir()
    with pytest.raises(LaunchError) as full:
        make_log_dir(None)
    assert str(full.value) == (f"too many log folders named {base}.*: clean them up or use "
                               "--log-dir")
    monkeypatch.delenv("SLURM_JOB_ID")
    stamped = make_log_dir(None)  # no job: the time
    assert stamped.parent == base.parent and re.fullmatch(r"\d{8}-\d{6}", stamped.name)
    monkeypatch.setenv("HOME", str(tmp_path / "stamped-file"))
    (tmp_path / "stamped-file").write_text("")
    with pytest.raises(LaunchError) as cannot:
        make_log_dir(None)
    assert re.fullmatch(r"cannot create the log folder \S+/stamped-file/dask_logs/\S+: "
                        r"Not a directory; use --log-dir", str(cannot.value)), cannot.value


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to give a folder to another user")
def test_a_folder_of_someone_else_is_refused(tmp_path):
    from start_daskmpi.security.private import private_dir

    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)  # nobody's; removed with tmp_path
    with pytest.raises(LaunchError) as raised:
        private_dir(theirs, "--log-dir")
    assert str(raised.value) == \
        f"--log-dir {theirs} belongs to another user: give a folder of your own"


def test_failed_handshakes_are_one_line_then_a_count_an_interval(monkeypatch):
    import logging

    from start_daskmpi.servers import logs

    now = [100.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    shown = []

    class Terminal(logging.Handler):
        def emit(self, record):
            shown.append(record.getMessage())

    terminal = Terminal()
    counted = logs.CountedOnTerminal(terminal, "/logs/rank0.log", interval=60)
    terminal.addFilter(counted)
    failure = logging.makeLogRecord({"name": "distributed.comm.tcp", "levelno": 30,
                                     "msg": "Listener on %r: TLS handshake failed with %r",
                                     "args": ("tls://a", "tls://b")})
    other = logging.makeLogRecord({"name": "distributed.core", "levelno": 30, "msg": "else"})
    for seconds in (0, 1, 2, 30, 61, 62):
        now[0] = 100.0 + seconds
        terminal.handle(failure)
    terminal.handle(other)
    counted.say_the_rest()
    counted.say_the_rest()  # nothing left to say
    assert shown == [
        "a connection without the job's certificate was refused (TLS handshake failed); any "
        "more are counted here, at most once every 60 s; each is in /logs/rank0.log",
        "4 more connection(s) without the job's certificate were refused (TLS handshake "
        "failed); each is in /logs/rank0.log",
        "else",
        "1 more connection(s) without the job's certificate were refused (TLS handshake "
        "failed); each is in /logs/rank0.log",
    ]
