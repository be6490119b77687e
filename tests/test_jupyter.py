"""JupyterLab mode: no script, JupyterLab on the cluster until 'stop'.

Every JupyterLab here listens on 127.0.0.1; each run is bounded and reaped,
kernels included (they carry the run's token in their environment too).
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from launch import ROOT, SCRIPTS, TOKEN_VARIABLE, Lab, Session, notebook_sums

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("jupyterlab") is None, reason="no JupyterLab"),
]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def options(tmp: Path) -> list[str]:
    return ["--interface", "lo", "--gpus-per-node", "0", "--log-dir", str(tmp / "logs")]


def get(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30):
            return 200
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One JupyterLab on a 3-rank cluster for the tests that only look; port 7787
    is held meanwhile, so that JupyterLab has to take another."""
    tmp = tmp_path_factory.mktemp("lab")
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            blocker.bind(("127.0.0.1", 7787))
            blocker.listen()
        except OSError:
            pass  # taken already: as good
        # Its own $TMPDIR: conftest's, per test, comes after a module's fixture.
        with Session(options(tmp), np=3, cwd=ROOT, env={"TMPDIR": str(tmp)}) as session:
            yield Lab(session), session, tmp
            session.send("stop\n")
            session.finish(timeout=60)  # ended by 'stop', which cleans up, not killed


def test_jupyterlab_takes_a_free_port_and_says_which(lab):
    found, _, _ = lab
    assert found.port != 7787
    assert get(f"{found.base}/api/status", found.token) == 200


def test_jupyterlab_wants_the_token(lab):
    found, _, _ = lab
    assert get(f"{found.base}/api/status", "wrong-token") == 403
    assert get(f"{found.base}/api/status") == 403


def test_banner_has_both_tunnels_and_the_proxied_dashboard(lab):
    """JupyterLab's port, and the dashboard's private socket, each named as
    it is served (127.0.0.1, the socket's path): never localhost."""
    found, session, _ = lab
    jupyter, dashboard = found.port, found.dashboard_port
    forwards = re.search(r"ssh -o ExitOnForwardFailure=yes (-L .*) \S+$", session.output, re.M)[1]
    lab_forward, dashboard_forward = forwards.split(" -L ")
    assert lab_forward == f"-L 127.0.0.1:{jupyter}:127.0.0.1:{jupyter}"
    near, target = dashboard_forward.removeprefix("127.0.0.1:").split(":", 1)
    assert int(near) == dashboard and target.endswith("/dashboard.sock")
    assert stat.S_ISSOCK(os.stat(target).st_mode)
    assert stat.S_IMODE(os.stat(os.path.dirname(target)).st_mode) == 0o700
    assert f"http://127.0.0.1:{found.port}/proxy/{dashboard}/status" in session.output
    assert "localhost" not in session.output


def test_jupyterlab_log_is_private(lab):
    _, _, tmp = lab
    log = tmp / "logs" / "jupyterlab.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "ServerApp" in log.read_text()


async def execute(base: str, token: str, code: str, timeout: float = 120) -> str:
    """Run ``code`` in a new kernel of the running server, over its REST API and
    websocket; return what it printed.  Raises on an error in the kernel."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.websocket import websocket_connect

    auth = {"Authorization": f"token {token}"}
    http = AsyncHTTPClient()
    kernel = json.loads(
        (await http.fetch(f"{base}/api/kernels", method="POST", body="{}", headers=auth)).body
    )
    ws_url = base.replace("http", "ws") + f"/api/kernels/{kernel['id']}/channels"
    ws = await websocket_connect(HTTPRequest(ws_url, headers=auth))
    msg_id = uuid.uuid4().hex
    await ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False},
    }))
    printed = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = json.loads(await asyncio.wait_for(ws.read_message(), timeout))
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["header"]["msg_type"], message["content"]
            if kind == "error":
                raise AssertionError("\n".join(content["traceback"]))
            if kind == "stream":
                printed.append(content["text"])
            if kind == "status" and content["execution_state"] == "idle":
                return "".join(printed)
        raise AssertionError(f"no answer from the kernel in {timeout} s")
    finally:
        ws.close()
        await http.fetch(f"{base}/api/kernels/{kernel['id']}", method="DELETE", headers=auth)


def test_kernel_of_jupyterlab_reaches_the_cluster_with_plain_client(lab):
    found, _, _ = lab
    code = (
        "from distributed import Client\n"
        "client = Client()\n"
        "print(client.scheduler.address, len(client.scheduler_info(n_workers=-1)['workers']),"
        " client.dashboard_link)\n"
    )
    printed = asyncio.run(execute(found.base, found.token, code))
    assert printed.split() == [found.scheduler, "1", f"/proxy/{found.dashboard_port}/status"]


def test_kernels_do_not_inherit_the_token(lab):
    """A kernel or terminal runs whatever the user's notebooks run: it gets no
    token to pass on (JupyterLab has it from a user-only config file)."""
    found, _, _ = lab
    code = (
        "import os\n"
        f"print(sorted(k for k, v in os.environ.items() if {found.token!r} in v) or 'none')\n"
    )
    assert asyncio.run(execute(found.base, found.token, code)).strip() == "none"


def run_notebook(lab, monkeypatch, *first_cells: str) -> str:
    """The notebook in a kernel of this machine with what JupyterLab's own
    kernels get, ``first_cells`` before its own; its printed text."""
    import nbformat
    from nbclient import NotebookClient

    found, _, tmp = lab
    # What JupyterLab's own kernels get, in a private folder the driver's log names.
    driver_log = (found.log_dir / "rank1-driver.log").read_text()
    credentials = Path(re.search(r"JupyterLab's kernels: (\S+)", driver_log)[1])
    for name, file in [("CA_FILE", "ca.pem"), ("CLIENT__CERT", "client-cert.pem"),
                       ("CLIENT__KEY", "client-key.pem")]:
        monkeypatch.setenv(f"DASK_DISTRIBUTED__COMM__TLS__{name}", str(credentials / file))
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", found.scheduler)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(ROOT / "jupyterlab_cupy_test.ipynb", as_version=4)
    notebook.cells[:0] = [nbformat.v4.new_code_cell(code) for code in first_cells]
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()  # raises CellExecutionError on an error cell
    return "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )


def test_notebook_runs_against_the_cluster(lab, monkeypatch):
    printed = run_notebook(lab, monkeypatch)
    assert notebook_sums(printed).keys() == {"without gpus"}, printed


def test_the_notebook_fails_on_a_wrong_sum(lab, monkeypatch):
    from nbclient.exceptions import CellExecutionError

    wrong = "import cupy_test\ncupy_test.expected_sum = lambda size: (0.0, 1.0)"
    with pytest.raises(CellExecutionError, match="numpy: the sum is off"):
        run_notebook(lab, monkeypatch, wrong)


def check_lab(found: Lab, *options: str) -> str:
    """tests/scripts/check_lab.py on this node: the proxied dashboard, the
    sidebar's plot list, and what ``options`` add."""
    done = subprocess.run(
        # "--": a token may start with "-"
        [sys.executable, str(SCRIPTS / "check_lab.py"), *options, "--", found.base, found.token,
         str(found.proxied_port)],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_proxied_dashboard_answers_and_only_for_this_node(lab):
    found, _, _ = lab
    printed = check_lab(found, "--refused", f"{socket.gethostname()}:{found.dashboard_port}")
    assert "the sidebar's plot list: ok" in printed


def test_jupyterlabs_proxy_reaches_the_dashboard_and_no_other_port(lab):
    """Another user's page on a port of this node, opened through JupyterLab's
    proxy, would run with JupyterLab's origin: the proxy refuses every port
    but the dashboard's, in each of its URL forms."""
    found, _, _ = lab
    with socket.socket() as other:  # a server someone else could run here
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        for path in (f"proxy/{port}/", f"proxy/absolute/{port}/", f"proxy/127.0.0.1:{port}/",
                     f"proxy/localhost:{port}/"):
            assert get(f"{found.base}/{path}", found.token) == 403, path
    assert get(f"{found.base}/proxy/{found.proxied_port}/status", found.token) == 200


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium")
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="no playwright")
def test_a_browser_opens_jupyterlab_and_the_proxied_dashboard(lab, tmp_path):
    found, _, _ = lab
    check_lab(found, "--browser", str(tmp_path))
    shots = os.environ.get("START_DASKMPI_SCREENSHOTS")
    if shots:  # to look at them
        for name in ("jupyterlab.png", "dashboard.png"):
            shutil.copy(tmp_path / name, Path(shots) / name)


@pytest.mark.reliability("clean run")
@pytest.mark.timeout(180)
@pytest.mark.parametrize("np", [3, None], ids=["mpirun", "local"])
def test_stop_on_stdin_ends_everything(tmp_path, record, np):
    with Session(options(tmp_path), np=np, cwd=ROOT) as session:
        Lab(session)
        session.send("hello\n")
        session.wait_for("Type 'stop' to stop Dask.\n")
        session.send("stop\n")
        stopped = time.monotonic()
        run = session.finish(timeout=30)
    record(run, f"JupyterLab, 'stop' ({'mpirun' if np else 'local'})")
    assert run.rc == 0, run
    assert time.monotonic() - stopped < 10, run
    assert run.leftovers == [] and "Traceback" not in run.output, run
    assert run.stdout.rstrip().endswith("Successfully exited")


@pytest.mark.reliability("fault")
@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])  # one id on every Python
def test_signal_to_mpirun_ends_everything(tmp_path, record, signum, status):
    with Session(options(tmp_path), np=3, cwd=ROOT) as session:
        Lab(session)
        session.process.send_signal(signum)
        signaled = time.monotonic()
        run = session.finish(timeout=30)
    record(run, f"JupyterLab, {signal.Signals(signum).name} to mpirun")
    assert run.rc == status, run
    assert time.monotonic() - signaled < 10, run
    assert run.leftovers == [] and "Traceback" not in run.output, run


@pytest.mark.reliability("fault")
@pytest.mark.timeout(180)
def test_the_walltime_stops_jupyterlab_a_margin_before_it(tmp_path, record):
    walltime = ["--walltime", "100", "--walltime-margin", "60"]  # stops 40 s in
    with Session([*walltime, *options(tmp_path)], np=3, cwd=ROOT) as session:
        Lab(session)
        run = session.finish(timeout=60)
    record(run, "JupyterLab, --walltime near")
    assert run.rc == 143 and run.leftovers == [], run
    assert re.search(r"^Interrupted \(the job's walltime ends at \S+ \(--walltime\), in 60 s "
                     r"\(--walltime-margin\)\): stopping Dask$", run.stdout, re.M), run
    assert "Traceback" not in run.output, run


@pytest.mark.reliability("fault")
@pytest.mark.timeout(180)
def test_a_hard_kill_of_the_whole_launcher_leaves_nothing_running(tmp_path, record):
    """SIGKILL to mpirun's whole process group, which no process can catch:
    JupyterLab, started in a session of its own, ends with its rank all the
    same (and its kernels with it), within 10 s."""
    with Session(options(tmp_path), np=3, cwd=ROOT) as session:
        Lab(session)
        left = session.kill_all_hard()
        run = session.finish(timeout=30)
    record(run, "JupyterLab, SIGKILL to mpirun's process group")
    assert left == [], left


@pytest.mark.timeout(180)
def test_stdin_at_eof_keeps_it_running_until_sigterm(tmp_path):
    with Session(options(tmp_path), np=3, cwd=ROOT) as session:
        session.close_stdin()  # a batch job: < /dev/null
        found = Lab(session)
        time.sleep(3)
        assert session.process.poll() is None
        assert get(f"{found.base}/api/status", found.token) == 200
        session.process.send_signal(signal.SIGTERM)
        run = session.finish(timeout=30)
    assert run.rc == 143 and run.leftovers == [], run


@pytest.mark.timeout(180)
def test_shut_down_from_inside_jupyterlab_ends_the_job(tmp_path):
    with Session(options(tmp_path), np=3, cwd=ROOT) as session:
        found = Lab(session)
        shutdown = urllib.request.Request(
            f"{found.base}/api/shutdown", method="POST",
            headers={"Authorization": f"token {found.token}"},
        )
        urllib.request.urlopen(shutdown, timeout=30).close()  # File > Shut Down
        asked = time.monotonic()
        run = session.finish(timeout=30)
    assert run.rc == 0 and run.leftovers == [], run
    assert time.monotonic() - asked < 10, run


@contextlib.contextmanager
def in_a_terminal(token: str) -> Iterator[int]:
    """An interactive bash on a terminal of its own (a pty), as a user's shell,
    carrying the run's ``token``; yields the terminal's master end.  Closing
    it hangs the terminal up, as closing its window does."""
    import pty

    pid, master = pty.fork()
    if pid == 0:  # the child: bash, with job control, on the pty
        os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"],
                   {**os.environ, TOKEN_VARIABLE: token, "PS1": "$ "})
    try:
        yield master
    finally:
        with contextlib.suppress(OSError):
            os.close(master)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def wait_for_text(path: Path, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = path.read_text() if path.exists() else ""
        if text in found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in {path}: {found}")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["mpirun under timeout", "local, with &"])
def test_a_job_in_the_background_of_its_terminal_says_so_and_ends_with_it(tmp_path, how):
    """Run where its terminal's typing cannot reach it (a background process
    group: timeout without --foreground, or &): one line at the start says
    so, and how to end it; closing the terminal ends it, as a shell's job."""
    from launch import STARTED, mpirun, reap, run_processes

    if how.startswith("mpirun") and mpirun() is None:
        pytest.skip("no mpirun")
    token = uuid.uuid4().hex
    STARTED.append(token)
    out = tmp_path / "out.txt"
    launcher = f"{sys.executable} {ROOT / 'start_daskmpi.py'} {' '.join(options(tmp_path))}"
    command = (f"timeout 200 {mpirun()} -np 3 {launcher} > {out} 2>&1" if how.startswith("mpirun")
               else f"{launcher} > {out} 2>&1 &")
    with in_a_terminal(token) as terminal:
        os.write(terminal, f"cd {tmp_path} && {command}\n".encode())
        said = wait_for_text(out, "JupyterLab started.")
        said = wait_for_text(out, "stop Dask with File > Shut Down", timeout=30)
        assert run_processes(token), said
    hung_up = time.monotonic()
    deadline = hung_up + 30
    while run_processes(token) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = reap(token, grace=0)
    assert left == [] and time.monotonic() - hung_up < 30, (left, out.read_text())
    (line,) = [line for line in said.splitlines() if "File > Shut Down" in line]
    assert re.fullmatch(
        r"start_daskmpi: warning: the job's launcher \(pid (\d+)\) runs in the background of "
        r"its terminal \(started with &, or by timeout without --foreground\): 'stop' typed "
        r"there does not reach it; stop Dask with File > Shut Down in JupyterLab, or kill "
        r"-TERM \1; it stops when its terminal closes", line), line
    assert "Type 'stop'" not in said


@pytest.mark.parametrize("terminal, said", [
    (("/dev/pts/3", "/dev/pts/3", True), None),  # typed in its foreground: heard
    ((None, None, False), None),  # a pipe, as the tests give it: heard
    (("/dev/pts/3", "/dev/pts/3", False),
     "the job's launcher (pid 42) runs in the background of its terminal (started with &, or by "
     "timeout without --foreground): 'stop' typed there does not reach it; stop Dask with File > "
     "Shut Down in JupyterLab, or kill -TERM 42; it stops when its terminal closes"),
    (("/dev/null", None, False),
     "the job's input is /dev/null (a batch job): 'stop' cannot reach it; stop Dask with File > "
     "Shut Down in JupyterLab, or kill -TERM 42"),
])
def test_where_stop_cannot_be_heard_one_line_says_how_to_end_the_job(terminal, said):
    from start_daskmpi.driver.terminal import Terminal

    source, tty, foreground = terminal
    assert Terminal(42, source, tty, foreground).unheard() == said
