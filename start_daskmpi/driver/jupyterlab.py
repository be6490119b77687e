"""With no script: JupyterLab on the driver's node, its notebooks' Client() and
Dask sidebar pointed at this cluster, until 'stop' is typed or it is shut down
from inside."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from distributed import Client

from start_daskmpi.driver import lab_proxy_guard
from start_daskmpi.driver.dashboard_relay import near_end
from start_daskmpi.driver.script import HungUp
from start_daskmpi.driver.terminal import HANGUP
from start_daskmpi.errors import LaunchError, warn
from start_daskmpi.plan.banners import LOOPBACK, DashboardPlace, jupyter_banner
from start_daskmpi.plan.config import Config
from start_daskmpi.plan.node import short_hostname
from start_daskmpi.plan.ports import DEFAULT_JUPYTER_PORT, Endpoint, choose_port, port_is_free
from start_daskmpi.security.private import subfolder_for_block, write_private
from start_daskmpi.servers.info import SchedulerInfo
from start_daskmpi.servers.logs import open_private
from start_daskmpi.servers.scheduler import PORT_RACE_ATTEMPTS

CONTROL_TOPIC = "start_daskmpi-control"  # scheduler event topic for "stop", typed where stdin is
JUPYTER_START_TIMEOUT = 120.0
JUPYTER_STOP_TIMEOUT = 10.0


def lab_settings(dashboard_port: int, folder: Path) -> Path:
    """JupyterLab's app settings folder for this run: the installed one's, plus a
    default for dask-labextension's dashboard URL, through JupyterLab's proxy."""
    from jupyterlab.commands import get_app_dir

    installed = Path(get_app_dir()) / "settings"
    if installed.is_dir():
        shutil.copytree(installed, folder, dirs_exist_ok=True)
    overrides = folder / "overrides.d"
    overrides.mkdir(parents=True, exist_ok=True)
    default = {"dask-labextension:plugin": {"defaultURL": f"proxy/{dashboard_port}"}}
    (overrides / "start_daskmpi.json").write_text(json.dumps(default))
    return folder


def lab_config(token: str, dashboard: Endpoint | None, folder: Path) -> Path:
    """JupyterLab's config for this job, in a user-only file: the token (not an
    argument, which ps shows to all, nor a variable, which every kernel and
    terminal would inherit), and a proxy that reaches ``dashboard`` (on this
    node) alone."""
    settings: dict[str, Any] = {
        "IdentityProvider": {"token": token},
        "ServerProxy": {"host_allowlist": []},  # its /proxy/<host>:<port>/ routes
    }
    if dashboard is not None:
        settings[lab_proxy_guard.SECTION] = {
            "label": dashboard.local_port, "socket": dashboard.socket,
            "host": dashboard.host, "port": dashboard.port,
        }
        settings["ServerApp"] = {"jpserver_extensions": {lab_proxy_guard.__name__: True}}
    path = folder / "jupyter_config.json"
    write_private(path, json.dumps(settings))
    return path


# Run by the JupyterLab process before it becomes JupyterLab: SIGTERM to it
# when its parent (this thread) dies, even by SIGKILL, which nothing can
# catch; execve keeps that.  Not preexec_fn: this process has threads.
DIE_WITH_PARENT = """
import ctypes, os, signal, sys
if sys.platform == "linux":
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[1]):  # it died already
        sys.exit(1)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def dies_with_this_process() -> list[str]:
    """The start of a Python command whose process ends when this one does."""
    return [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid())]


def start_jupyterlab(port: int, config: Path, dashboard_port: int | None, log: Path) -> Any:
    env = dict(os.environ)
    env.pop("JUPYTER_TOKEN", None)  # a token of the user's own would win over ours
    # The guard extension, from a checkout as from an install.
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    options = [f"--config={config}"]
    if dashboard_port is not None:
        # Notebooks' Client() and the Dask sidebar find the dashboard through
        # JupyterLab's proxy, which the JupyterLab tunnel alone reaches, at
        # this node's port for it (the relay's, where the scheduler is elsewhere).
        env["DASK_DISTRIBUTED__DASHBOARD__LINK"] = f"/proxy/{dashboard_port}/status"
        settings = lab_settings(dashboard_port, log.parent / "jupyterlab-settings")
        # A fresh workspace: a saved one keeps the Dask sidebar on the last job's URL.
        workspaces = log.parent / "jupyterlab-workspaces"
        options += [
            f"--LabApp.app_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}"
        ]
    command = [
        *dies_with_this_process(), "-m", "jupyterlab", "--no-browser", f"--ServerApp.ip={LOOPBACK}",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={os.getcwd()}", *options,
        # In containers one is often root; jupyter_server refuses that unless told.
        *(["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []),
    ]
    with open_private(log) as output:  # it holds the token
        # A session of its own: a Ctrl-C at the terminal comes to us, and we stop
        # JupyterLab in order, kernels first.
        return subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


def start_serving_jupyterlab(
    requested: int | None,
    is_free: Callable[[int], bool],
    start: Callable[[int], Any],
    serving: Callable[[Any, int], None],
    log: Path,
) -> tuple[Any, int]:
    """JupyterLab serving, and its port: --jupyter-port, else the default or
    the next free one.  Another launcher on this node may take that port
    between our choice and JupyterLab's bind (it says so in its log): then the
    next free one, as the scheduler does."""
    lost: set[int] = set()
    for _ in range(PORT_RACE_ATTEMPTS):
        port = choose_port(
            requested, DEFAULT_JUPYTER_PORT, lambda p: p not in lost and is_free(p),
            "--jupyter-port",
        )
        lab = start(port)
        try:
            serving(lab, port)
            return lab, port
        except LaunchError:
            stop_jupyterlab(lab)
            if requested is not None or f"port {port} is not available" not in log.read_text():
                raise
            lost.add(port)
    raise LaunchError(f"JupyterLab found no free port: every port it tried was taken; see {log}")


def wait_until_serving(lab: Any, port: int, token: str, log: Path, timeout: float) -> None:
    status = urllib.request.Request(
        f"http://{LOOPBACK}:{port}/api/status", headers={"Authorization": f"token {token}"}
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.poll() is not None:
            raise LaunchError(f"JupyterLab exited with status {lab.returncode}: see {log}")
        try:
            with urllib.request.urlopen(status, timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    raise LaunchError(f"JupyterLab did not answer within {timeout:g} s: see {log}")


def stop_jupyterlab(lab: Any) -> None:
    """SIGTERM, on which jupyter_server shuts its kernels down; SIGKILL if it hangs."""
    if lab.poll() is None:
        lab.terminate()
        try:
            lab.wait(JUPYTER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()


@contextlib.contextmanager
def dashboard_on_this_node(
    info: SchedulerInfo, ssl_context: Any, folder: Path
) -> Iterator[Endpoint | None]:
    """The dashboard as this node reaches it, where JupyterLab's proxy looks:
    the scheduler's own where it runs on this node, else the near end of the
    dashboard relay (dashboard_relay.py), a socket in ``folder``; None
    without a dashboard."""
    if info.dashboard is None or info.dashboard_relay is None:
        yield info.dashboard
        return
    with near_end(folder, info.dashboard_relay, ssl_context) as here:
        yield here


def serve_jupyterlab(
    config: Config,
    client: Client,
    info: SchedulerInfo,
    routes: tuple[list[str], list[str]],
    log_dir: Path,
    private: Path,
) -> int:
    """JupyterLab on this node until 'stop', or until it is shut down from
    inside; ``routes``: the SSH routes to this node and to the scheduler's;
    its config and the relay's socket in ``private``, the driver's folder
    (the socket in it, not below: a socket's path is short, security/private.py)."""
    lab_route, dashboard_route = routes
    print(f"Starting JupyterLab on {short_hostname()}...", flush=True)
    words: list[str] = []  # what stopped it: 'stop' typed, or the terminal's hangup
    stop = threading.Event()

    def told(word: str) -> None:
        words.append(word)
        stop.set()

    client.subscribe_topic(CONTROL_TOPIC, lambda event: told(event[1]))
    for _, word in client.get_events(CONTROL_TOPIC):  # while the workers were starting
        told(word)
    unheard = info.unheard  # the scheduler's rank, which reads the terminal, says
    relay_tls = client.security.get_connection_args("client")["ssl_context"]
    with subfolder_for_block(private, "jupyterlab") as folder, \
            dashboard_on_this_node(info, relay_tls, private) as here:
        token = secrets.token_urlsafe(32)
        settings = lab_config(token, here, folder)  # once: a restart reuses it
        log = log_dir / "jupyterlab.log"
        proxied = here.local_port if here else None
        taken = {info.dashboard.port if info.dashboard else None, here.port if here else None}
        lab, port = start_serving_jupyterlab(
            config.network.jupyter_port,
            lambda p: p not in taken and port_is_free(LOOPBACK, p),
            lambda port: start_jupyterlab(port, settings, proxied, log),
            lambda lab, port: wait_until_serving(lab, port, token, log, JUPYTER_START_TIMEOUT),
            log,
        )
        try:
            dashboard = None
            if info.dashboard is not None and proxied is not None:
                dashboard = DashboardPlace(dashboard_route, info.dashboard, proxied)
            print()
            print(jupyter_banner(lab_route, port, token, log, dashboard))
            print()
            if unheard:
                print("JupyterLab started.", flush=True)
                warn(unheard)
            else:
                print("JupyterLab started. Type 'stop' to stop Dask:", flush=True)
            while not stop.wait(0.5) and lab.poll() is None:
                pass
            if HANGUP in words:
                raise HungUp("the job's terminal closed")
        finally:
            stop_jupyterlab(lab)
    print("Stopping Dask")
    return 0
