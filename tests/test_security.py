"""The red-team suite: what another user of the machine tries against a job,
each attempt run as that user (uid ``nobody``, through setpriv, as root), and
each failing.  docs/security.md's threat model says what these prove.

Needs root and setpriv (CI has both); skipped elsewhere with the reason.  Every
file the other user makes is in a shared folder this module makes and removes.
"""
from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from other_user import AS_ANOTHER_USER, as_other_user, first_line, other_user_running

from launch import (
    LAUNCHER,
    NEEDS_MPIRUN,
    PACKAGE_PATH,
    SCRIPTS,
    Session,
    launch,
    our_lines,
    run_processes,
)


def own_options(tmp_path: Path) -> list[str]:
    """A run's options without --interface: the servers choose where to listen."""
    return ["--log-dir", str(tmp_path / "logs"), "--local-directory", str(tmp_path / "scratch"),
            "--gpus-per-node", "0"]


SLEEPS = "import time\nprint('READY', flush=True)\ntime.sleep(300)\n"


DASK_PORTS = """
from distributed import get_client
client = get_client()
info = client.scheduler_info(n_workers=-1)
ports = {client.scheduler.address, *info["workers"]}
ports |= {w["nanny"] for w in info["workers"].values() if w.get("nanny")}
# The scheduler's HTTP server is on a socket: its service has no port.
ports = {int(a.rsplit(":", 1)[1]) for a in ports} | set(info["services"].values()) - {None}
ports |= {p for w in info["workers"].values() for p in w["services"].values()}
print("PORTS", *sorted(ports), flush=True)
"""


def listening(token: str, ports: set[int]) -> dict[int, set[str]]:
    """Where the run's processes listen on ``ports``: port -> host addresses.
    (MPI's own transports listen too, on ports of their choosing: not these.)"""
    pids = {p.pid for p in run_processes(token)}
    found: dict[int, set[str]] = {}
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids and c.laddr.port in ports:
            found.setdefault(c.laddr.port, set()).add(c.laddr.ip)
    return found


# --- servers on the network ------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("ranks", [3, None], ids=["mpirun", "local"])
@pytest.mark.parametrize("tls", ["--tls", "--no-tls"])
def test_a_one_node_job_listens_on_loopback_only(tmp_path, ranks, tls):
    """No Dask server of a one-node job listens where another host reaches it:
    not the scheduler, workers, nannies or dashboards, with TLS or without."""
    script = tmp_path / "ports.py"
    script.write_text(DASK_PORTS + SLEEPS)
    with Session([*own_options(tmp_path), tls, str(script)], np=ranks, cwd=tmp_path) as session:
        session.wait_for("READY")
        ports = {int(p) for p in session.wait_for(r"PORTS ([\d ]+)")[1].split()}
        where = listening(session.token, ports)
        address = session.wait_for(r"Scheduler address: (\S+)")[1]
    assert len(ports) >= 4 and set(where) == ports, (ports, where)  # every one seen
    assert all(hosts <= {"127.0.0.1", "::1"} for hosts in where.values()), where
    assert "://127.0.0.1:" in address
    warning = [line for line in our_lines("".join(session.stderr)) if "--no-tls" in line]
    assert len(warning) == (tls == "--no-tls"), session.output


# --- the log folder --------------------------------------------------------

ATTACK_LOG_DIR = """
import os, sys
folder = sys.argv[1]
os.makedirs(os.path.join(folder, "credentials"))
os.chmod(folder, 0o777)
os.chmod(os.path.join(folder, "credentials"), 0o777)
key = os.path.join(folder, "credentials", "client-key.pem")
open(key, "w").close()
os.chmod(key, 0o666)
os.symlink(sys.argv[2], os.path.join(folder, "rank0-scheduler.log"))
"""


@AS_ANOTHER_USER
@NEEDS_MPIRUN
@pytest.mark.timeout(120)
def test_a_log_folder_another_user_made_is_refused(tmp_path, shared):
    """The attack: another user makes the folder the job will log to, with a
    world-writable credentials/ and a rank log that is a link to one of the
    victim's files.  The job refuses the folder, in one line, and touches
    nothing in it."""
    victim = tmp_path / "victims_file"
    victim.write_text("mine\n")
    victim.chmod(0o600)
    trap = shared / "logs"
    made = as_other_user(ATTACK_LOG_DIR, str(trap), str(victim))
    assert made.returncode == 0, made.stderr
    run = launch(["--log-dir", str(trap), "--interface", "lo", "--gpus-per-node", "0",
                  str(SCRIPTS / "report_cluster.py")], np=3, cwd=tmp_path)
    assert run.rc == 2 and run.leftovers == [], run
    assert our_lines(run.stderr) == [
        f"start_daskmpi: error: --log-dir {trap} belongs to another user: give a folder "
        "of your own"
    ], run
    assert victim.read_text() == "mine\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert (trap / "credentials" / "client-key.pem").stat().st_size == 0


@pytest.mark.parametrize("how, said", [
    ("open", "is open to others (mode 755): chmod 700 it, or give another folder"),
    ("link", "is not a folder (a link?): give a folder of your own"),
])
def test_a_log_folder_of_ones_own_that_others_can_enter_is_refused(tmp_path, how, said):
    from start_daskmpi.errors import LaunchError
    from start_daskmpi.security.private import make_log_dir

    folder = tmp_path / "logs"
    if how == "open":
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)
    else:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LaunchError) as raised:
        make_log_dir(folder)
    assert str(raised.value) == f"--log-dir {folder} {said}"


def test_logs_are_private_from_their_creation_and_never_follow_a_link(tmp_path):
    from start_daskmpi.servers.logs import open_private

    with open_private(tmp_path / "rank0.log") as log:
        assert stat.S_IMODE(os.fstat(log.fileno()).st_mode) == 0o600
    (tmp_path / "link.log").symlink_to(tmp_path / "target")
    with pytest.raises(OSError):
        open_private(tmp_path / "link.log")
    assert not (tmp_path / "target").exists()


# --- the job's keys --------------------------------------------------------

READ_FILES = """
import sys
for path in sys.argv[1:]:
    try:
        open(path).read()
        print("READ", path)
    except OSError as e:
        print("REFUSED", path, type(e).__name__)
"""


@AS_ANOTHER_USER
@NEEDS_MPIRUN
@pytest.mark.timeout(120)
def test_the_clients_key_is_private_on_its_node_and_gone_after_the_job(tmp_path):
    """While the job runs, the other user cannot read the client's key or
    certificate; after it, they are gone, and the log folder holds no key."""
    script = tmp_path / "where.py"
    script.write_text(
        "import os, time\n"
        "print('KEY', os.environ['DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY'], flush=True)\n"
        + SLEEPS
    )
    # /tmp, which every user may enter: the folder's own mode must stop them.
    with Session([*own_options(tmp_path), str(script)], np=3, cwd=tmp_path,
                 env={"TMPDIR": "/tmp"}) as session:
        key = Path(session.wait_for(r"KEY (\S+)")[1])
        session.wait_for("READY")
        tried = as_other_user(READ_FILES, str(key), str(key.parent / "client-cert.pem"))
        assert not key.is_relative_to(Path.home()) and key.read_text().startswith("-----BEGIN")
        session.process.terminate()  # SIGTERM: the job ends, its key with it
        run = session.finish(timeout=30)
    # 143 (Open MPI 4's mpirun says 1): the status is not the point here.
    assert run.rc not in (0, None) and run.leftovers == [], run
    assert tried.stdout.count("REFUSED") == 2 and "READ" not in tried.stdout, tried
    assert not key.parent.exists()
    logs = tmp_path / "logs"
    assert not any("PRIVATE KEY" in p.read_text() for p in logs.iterdir() if p.is_file())


def test_every_process_has_a_key_of_its_own_signed_by_the_jobs_authority():
    from cryptography import x509

    from start_daskmpi.security.tls import job_authority

    authority = job_authority()
    first, second = authority.credentials("scheduler"), authority.credentials("client")
    assert first.key != second.key and first.ca == second.ca
    ca = x509.load_pem_x509_certificate(first.ca.encode())
    for credentials in (first, second):
        certificate = x509.load_pem_x509_certificate(credentials.certificate.encode())
        certificate.verify_directly_issued_by(ca)
        assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert "PRIVATE" not in first.ca  # the authority's key is nowhere in what is handed out


# --- worker scratch --------------------------------------------------------

SCRATCH_TRAP = """
import os, sys
trap = os.path.join(sys.argv[1], "dask-scratch-space")
os.makedirs(trap)
os.chmod(trap, 0o777)
"""

LOCAL_DIRECTORY = (
    "from distributed import get_client\n"
    "print('SCRATCH', *get_client().run(lambda dask_worker: dask_worker.local_directory)"
    ".values(), flush=True)\n"
)


@AS_ANOTHER_USER
@NEEDS_MPIRUN
@pytest.mark.timeout(120)
def test_workers_spill_into_a_folder_of_their_own_not_one_another_user_made(tmp_path, shared):
    made = as_other_user(SCRATCH_TRAP, str(shared))
    assert made.returncode == 0, made.stderr
    script = tmp_path / "scratch.py"
    script.write_text(LOCAL_DIRECTORY)
    run = launch(["--interface", "lo", "--gpus-per-node", "0", "--log-dir", str(tmp_path / "l"),
                  "--local-directory", str(shared), str(script)], np=4, cwd=tmp_path)
    assert run.rc == 0 and run.leftovers == [], run
    folders = [Path(p) for p in re.search(r"^SCRATCH (.*)$", run.stdout, re.M)[1].split()]
    trap = shared / "dask-scratch-space"
    assert len(folders) == 2 and not any(f.is_relative_to(trap) for f in folders), folders
    for folder in folders:
        private = next(p for p in folder.parents if p.parent == shared)
        assert private.name.startswith("start_daskmpi-"), folder
    assert list(trap.iterdir()) == []  # nothing of the job's in the other user's folder
    assert sorted(p.name for p in shared.iterdir()) == ["dask-scratch-space"]  # ours removed


# --- open proxies ----------------------------------------------------------

@NEEDS_MPIRUN
@pytest.mark.timeout(120)
def test_the_dashboard_relays_to_no_other_host_or_port(tmp_path):
    """distributed's dashboard has a /proxy/ route (where jupyter-server-proxy is
    installed) that relays to any host and port, as the job: off, for the user
    too."""
    pytest.importorskip("jupyter_server_proxy")  # without it, there is no such route
    script = tmp_path / "sleeps.py"
    script.write_text(SLEEPS)
    with Session([*own_options(tmp_path), str(script)], np=3, cwd=tmp_path) as session:
        session.wait_for("READY")
        dashboard = session.wait_for(r"-L 127\.0\.0\.1:8787:(\S+\.sock) ")[1]
        scheduler = int(session.wait_for(r"Scheduler address: \S+:(\d+)")[1])
        answer = through_socket(dashboard, f"/proxy/{scheduler}/127.0.0.1/")
    assert answer.split(b"\r\n")[0] == b"HTTP/1.1 404 Not Found", answer[:200]


def test_certificates_last_until_the_jobs_end_where_the_batch_system_says_it():
    import datetime

    from start_daskmpi.security.tls import CLOCK_SKEW, DEFAULT_LIFETIME, certificate_end

    now = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.timezone.utc)
    end = now + datetime.timedelta(hours=2)
    assert certificate_end({"SLURM_JOB_END_TIME": str(int(end.timestamp()))}, now) == \
        end + CLOCK_SKEW
    assert certificate_end({"COBALT_ENDTIME": str(int(end.timestamp()))}, now) == \
        end + CLOCK_SKEW
    past = str(int((now - datetime.timedelta(hours=1)).timestamp()))
    assert certificate_end({"SLURM_JOB_END_TIME": past}, now) == now + DEFAULT_LIFETIME
    assert certificate_end({}, now) == now + DEFAULT_LIFETIME


# --- from another host -----------------------------------------------------

CONNECT_ALL = """
import socket, sys
host, ports = sys.argv[1], sys.argv[2:]
for port in ports:
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        print("CONNECTED", port)
    except OSError as e:
        print("REFUSED", port, type(e).__name__)
"""


@pytest.mark.timeout(150)
@pytest.mark.parametrize("tls", ["--tls", "--no-tls"])
def test_another_host_reaches_no_server_of_a_one_node_job(tmp_path, tls):
    """A job on one node of two simulated ones: from the other node, every
    Dask server port of the job's node is closed, with TLS or without (where
    --no-tls would let anyone who reaches them run code as the user)."""
    from simcluster import SimCluster, skip_reason

    if skip_reason() or not (Path(sys.executable).parent / "mpiexec").exists():
        pytest.skip(skip_reason() or "no MPICH mpiexec beside this Python")
    script = tmp_path / "ports.py"
    script.write_text(DASK_PORTS + SLEEPS)
    with SimCluster(2) as cluster:
        job_node, other = cluster.nodes
        mpiexec = [str(Path(sys.executable).parent / "mpiexec"), "-launcher", "ssh",
                   "-launcher-exec", str(cluster.ssh), "-iface", cluster.bridge,
                   "-hosts", f"{job_node.address}:3", "-n", "3", sys.executable,
                   str(LAUNCHER)]
        with Session([*own_options(tmp_path), tls, str(script)], launcher=mpiexec,
                     env=SimCluster.MPICH_ENVIRONMENT, cwd=tmp_path) as session:
            session.wait_for("READY")
            ports = session.wait_for(r"PORTS ([\d ]+)")[1].split()
            tried = subprocess.run(
                ["ip", "netns", "exec", other.namespace, sys.executable, "-c", CONNECT_ALL,
                 job_node.address, *ports],
                capture_output=True, text=True, timeout=60,
            )
    answers = tried.stdout.split("\n")
    assert len(ports) >= 4 and tried.stdout.count("REFUSED") == len(ports), tried.stdout
    assert all("ConnectionRefusedError" in a for a in answers if a), answers


# --- a second client ---------------------------------------------------------

SECOND_CLIENT = """
from distributed import Client
with Client(timeout=10) as client:
    print("WORKERS", len(client.scheduler_info(n_workers=-1)["workers"]))
"""

OTHER_CLIENT = """
import sys
try:
    open(sys.argv[1]).read()
    print("READ the client settings")
except OSError as e:
    print("REFUSED", type(e).__name__)
from distributed import Client
try:
    Client(sys.argv[2], timeout=5)
    print("CONNECTED")
except Exception as e:
    print("REFUSED", type(e).__name__)
"""


@AS_ANOTHER_USER
@NEEDS_MPIRUN
@pytest.mark.timeout(120)
def test_a_second_client_of_the_users_own_gets_in_with_the_printed_line(tmp_path):
    """The line the job prints gets another shell of the user's into the
    cluster; another user, reading the same line, gets nothing."""
    script = tmp_path / "sleeps.py"
    script.write_text(SLEEPS)
    with Session([*own_options(tmp_path), str(script)], np=3, cwd=tmp_path,
                 env={"TMPDIR": "/tmp"}) as session:  # which every user may enter
        session.wait_for("READY")
        settings = session.wait_for(
            r"Another client of yours, from a shell on \S+: \. (\S+), then Client\(\)")[1]
        address = session.wait_for(r"Scheduler address: (\S+)")[1]
        shell = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
        own = subprocess.run(["bash", "-c", f'. {settings} && exec "$0" -c "$1"',
                              sys.executable, SECOND_CLIENT],
                             env=shell, capture_output=True, text=True, timeout=60)
        other = as_other_user(OTHER_CLIENT, settings, address)
        session.process.terminate()  # an end the job cleans up after
        run = session.finish(timeout=30)
    assert run.leftovers == [] and not Path(settings).exists(), run
    assert own.stdout.split() == ["WORKERS", "1"], own.stderr
    assert "READ" not in other.stdout and "CONNECTED" not in other.stdout, other
    assert other.stdout.count("REFUSED") == 2, other


CONNECTS = """
import sys
from start_daskmpi import connect
client = eval(sys.argv[1].split("; ", 1)[1].removeprefix("client = "),
              {"connect": connect})  # the printed line, as a user pastes it
with client:
    print("WORKERS", len(client.scheduler_info(n_workers=-1)["workers"]))
"""


@NEEDS_MPIRUN
@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheduler_file", [False, True], ids=["client.env", "scheduler file"])
def test_connect_with_the_printed_line_gets_another_python_of_the_users_in(
    tmp_path, scheduler_file
):
    """From another shell, distributed's Client(scheduler_file=...) fails on a
    TLS cluster (no credentials: "TLS expects a ssl_context argument"); the
    printed line, connect(PATH), gets in, with nothing sourced first."""
    script = tmp_path / "sleeps.py"
    script.write_text(SLEEPS)
    file = ["--scheduler-file", str(tmp_path / "scheduler.json")] if scheduler_file else []
    with Session([*own_options(tmp_path), *file, str(script)], np=3, cwd=tmp_path) as session:
        session.wait_for("READY")
        line = session.wait_for(r"or, in Python: (from start_daskmpi import connect; "
                                r"client = connect\('[^']+'\))")[1]
        shell = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
        own = subprocess.run([sys.executable, "-c", CONNECTS, line], env={
            **shell, "PYTHONPATH": PACKAGE_PATH}, capture_output=True, text=True, timeout=60)
        session.process.terminate()
        session.finish(timeout=30)
    assert own.stdout.split() == ["WORKERS", "1"], own
    assert line.endswith("scheduler.json')" if scheduler_file else "client.env')"), line


# --- the scheduler's scratch, first on its sys.path -----------------------------

SWAP_SCHEDULER_SCRATCH = """
import os, sys, time
shared = sys.argv[1]
base = os.path.join(shared, "dask-scratch-space")
os.makedirs(base, exist_ok=True)
os.chmod(base, 0o777)
evil = "import os\\nopen(os.path.join(%r, 'pwned'), 'w').write(str(os.geteuid()))\\n" % shared
print("WATCHING", flush=True)
deadline = time.time() + 110
while time.time() < deadline:
    for name in os.listdir(base):
        if name.startswith("scheduler-") and not name.endswith(".dirlock") and \\
                not os.path.exists(os.path.join(base, name, "evilmod.py")):
            try:
                os.rename(os.path.join(base, name), os.path.join(base, ".was-" + name))
                os.mkdir(os.path.join(base, name))
                with open(os.path.join(base, name, "evilmod.py"), "w") as f:
                    f.write(evil)
                print("SWAPPED", name, flush=True)
            except OSError as e:
                print("COULD NOT SWAP", name, e, flush=True)
    time.sleep(0.005)
"""

IMPORTS_ON_THE_SCHEDULER = """
import importlib, json, sys
from distributed import get_client
from start_daskmpi.security.ownership import interpreter_writers, path_entry_problem, the_user
client = get_client()
try:  # as a graph that names a module does: the scheduler imports it
    client.run_on_scheduler(lambda: importlib.import_module("evilmod") and None)
    print("IMPORTED evilmod")
except ModuleNotFoundError:
    print("NO evilmod")
paths = {"scheduler": client.run_on_scheduler(lambda: list(sys.path)),
         **client.run(lambda: list(sys.path))}
trusted = the_user() | interpreter_writers()  # looked at while every one of them runs
problems = {f"{who} {entry}": path_entry_problem(entry, trusted)
            for who, entries in paths.items() for entry in entries}
print("PATHS", json.dumps(paths))
print("PROBLEMS", json.dumps({k: v for k, v in problems.items() if v}))
"""


@AS_ANOTHER_USER
@NEEDS_MPIRUN
@pytest.mark.timeout(150)
@pytest.mark.parametrize("ranks", [3, None], ids=["mpirun", "local"])
def test_no_code_of_another_user_runs_through_the_schedulers_scratch(tmp_path, shared, ranks):
    """The attack: another user makes the node's shared dask-scratch-space
    (0777) and swaps their own folder for the scheduler's the moment it
    appears; distributed puts that folder first on the scheduler's sys.path,
    and the first graph that names one of their modules runs it as you.
    Every Dask process has its scratch in a private folder of the job's, and
    nothing on any process's sys.path is a folder another user can change."""
    script = tmp_path / "imports.py"
    script.write_text(IMPORTS_ON_THE_SCHEDULER)
    with other_user_running(SWAP_SCHEDULER_SCRATCH, str(shared)) as attacker:
        assert first_line(attacker) == "WATCHING"
        run = launch([*own_options(tmp_path), str(script)], np=ranks, cwd=tmp_path,
                     env={"TMPDIR": str(shared)}, timeout=120)
    tried = attacker.stdout.read()
    assert run.rc == 0 and run.leftovers == [], run
    assert "NO evilmod" in run.stdout and not (shared / "pwned").exists(), (run, tried)
    assert "SWAPPED" not in tried, tried
    paths = json.loads(re.search(r"^PATHS (.*)$", run.stdout, re.M)[1])
    assert json.loads(re.search(r"^PROBLEMS (.*)$", run.stdout, re.M)[1]) == {}, paths
    assert len(paths) == 2 if ranks else len(paths) >= 2  # the scheduler and its workers
    # Where distributed put the scheduler's scratch on its path: in a private folder.
    scratch = [entry for entry in paths["scheduler"] if "dask-scratch-space/scheduler-" in entry]
    assert len(scratch) == 1 and "/start_daskmpi-" in scratch[0], paths


def test_a_folder_others_can_change_on_sys_path_stops_the_job_in_one_line(tmp_path):
    """A folder on PYTHONPATH that every user can write (or that is another
    user's): what a task imports could be theirs.  Said before anything starts."""
    open_to_all = tmp_path / "everyones"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    run = launch([*own_options(tmp_path), str(SCRIPTS / "report_cluster.py")], cwd=tmp_path,
                 env={"PYTHONPATH": os.pathsep.join([str(open_to_all), PACKAGE_PATH])})
    assert run.rc == 2 and run.leftovers == [], run
    assert our_lines(run.stderr) == [
        f"start_daskmpi: error: {open_to_all} on Python's import path (sys.path, on "
        f"{socket.gethostname().split('.')[0]}) can be changed by every user (mode 777): "
        "another user could put a module there that your job would import; remove it from "
        "PYTHONPATH, or run from a folder of your own"
    ], run


@pytest.mark.parametrize("how, said", [
    ("open", "can be changed by every user (mode 777)"),
    ("sticky", "can be changed by every user (mode 1777)"),  # /tmp: anyone may add a module
    ("missing", "does not exist, and {parent} can be changed by every user (mode 777)"),
    ("below", "is in {parent}, which can be changed by every user (mode 777)"),
    ("own", None),
    ("below sticky", None),  # a folder of one's own in /tmp: no one else can replace it
])
def test_which_import_folders_another_user_could_change(tmp_path, how, said):
    from start_daskmpi.security.ownership import path_entry_problem, the_user

    parent = tmp_path / "p"
    parent.mkdir()
    entry = parent / "entry"
    if how in ("open", "sticky"):
        entry.mkdir()
        entry.chmod(0o1777 if how == "sticky" else 0o777)
    elif how == "missing":
        parent.chmod(0o777)
    elif how == "below":
        entry.mkdir()
        parent.chmod(0o777)
    elif how == "own":
        entry.mkdir(mode=0o755)
    else:
        entry.mkdir(mode=0o755)
        parent.chmod(0o1777)
    expected = said.format(parent=parent) if said else None
    assert path_entry_problem(str(entry), the_user()) == expected


def test_whoever_can_change_the_interpreter_is_trusted_with_its_folders():
    """A site's software stack, owned by its staff: they can change the Python
    itself, so trusting its site-packages adds no one."""
    from start_daskmpi.security.ownership import (
        Trusted,
        interpreter_writers,
        path_entry_problem,
        user_name,
        writers_problem,
    )

    prefix = os.stat(os.path.realpath(sys.base_prefix))
    assert prefix.st_uid in interpreter_writers().uids
    staff = Trusted(frozenset({4321}), frozenset())
    found = os.stat_result((0o40755, 0, 0, 0, 4321, 0, 0, 0, 0, 0))
    assert writers_problem(found, staff, entries_too=True) is None
    root_only = Trusted(frozenset({0}), frozenset())
    assert writers_problem(found, root_only, entries_too=True) == f"belongs to {user_name(4321)}"
    assert path_entry_problem(sys.base_prefix, interpreter_writers()) is None


# --- --join and the scheduler file ---------------------------------------------

IMPOSTOR_SCHEDULER_FILE = """
import json, os, socket, sys, time
folder = sys.argv[1]
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
port = listener.getsockname()[1]
os.makedirs(os.path.join(folder, "theirs"))
variables = {}
for variable, name in (("CA_FILE", "ca.pem"), ("CLIENT__CERT", "client-cert.pem"),
                       ("CLIENT__KEY", "client-key.pem")):
    path = os.path.join(folder, "theirs", name)
    open(path, "w").write("-----BEGIN CERTIFICATE-----\\n-----END CERTIFICATE-----\\n")
    variables["DASK_DISTRIBUTED__COMM__TLS__" + variable] = path
env = os.path.join(folder, "theirs", "client.env")
open(env, "w").write("".join(f"export {k}={v}\\n" for k, v in variables.items()))
with open(os.path.join(folder, "scheduler.json"), "w") as f:
    json.dump({"address": f"tls://127.0.0.1:{port}", "start_daskmpi": {"client_env": env}}, f)
os.chmod(os.path.join(folder, "scheduler.json"), 0o644)
print("READY", flush=True)
listener.settimeout(0.2)
deadline = time.time() + 100
while time.time() < deadline:
    try:
        listener.accept()
        print("SOMEONE CONNECTED", flush=True)
    except socket.timeout:
        pass
"""


@AS_ANOTHER_USER
@NEEDS_MPIRUN
@pytest.mark.timeout(120)
def test_join_refuses_a_scheduler_file_another_user_wrote(tmp_path, shared):
    """The attack: another user writes a scheduler file naming their own
    scheduler, and a client.env of their own authority's certificates, where
    the victim will --join: the victim's workers would connect to them and run
    their code.  Refused in one line that names the owner, before any rank
    connects anywhere."""
    file = shared / "scheduler.json"
    with other_user_running(IMPOSTOR_SCHEDULER_FILE, str(shared)) as impostor:
        assert first_line(impostor) == "READY"
        run = launch([*own_options(tmp_path), "--interface", "lo", "--join", str(file)], np=2,
                     cwd=tmp_path, timeout=60)
    tried = impostor.stdout.read()
    assert run.rc == 2 and run.leftovers == [], run
    assert our_lines(run.stderr) == [
        f"start_daskmpi: error: --join {file} belongs to nobody: the job trusts only a file "
        "of yours that no one else can change"
    ], run
    assert "SOMEONE CONNECTED" not in tried, tried


PLANT_LINKS = """
import os, sys
folder, victim, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
for pid in range(first, first + 4000):
    os.symlink(victim, os.path.join(folder, f".scheduler.json.{pid}"))
os.symlink(victim, os.path.join(folder, "status"))
open(os.path.join(folder, "taken.json"), "w").write("{}")
print("PLANTED", flush=True)
"""

READS_ITS_SCHEDULER_FILE = """
import json, os, stat, sys
found = os.lstat(sys.argv[1])
print("SCHEDULER FILE", oct(stat.S_IMODE(found.st_mode)), found.st_uid,
      "address" in json.load(open(sys.argv[1])))
"""


@AS_ANOTHER_USER
@NEEDS_MPIRUN
@pytest.mark.timeout(150)
def test_files_the_job_writes_never_go_through_another_users_links(tmp_path, shared):
    """The attack: links planted, in a folder every user can write, where the
    job writes: at each name its scheduler file's temporary copy could take
    (one per pid), at --status-file, and a file of theirs at another
    --scheduler-file.  The victim's own file is never written through a
    link; paths that are another user's are refused in one line."""
    victim = tmp_path / "victims_file"
    victim.write_text("mine\n")
    victim.chmod(0o600)
    planted = as_other_user(PLANT_LINKS, str(shared), str(victim), str(os.getpid()))
    assert planted.stdout.strip() == "PLANTED", planted
    script = tmp_path / "reads.py"
    script.write_text(READS_ITS_SCHEDULER_FILE)
    file = shared / "scheduler.json"
    written = launch([*own_options(tmp_path), "--interface", "lo", "--scheduler-file", str(file),
                      str(script), str(file)], np=3, cwd=tmp_path)
    assert written.rc == 0 and written.leftovers == [], written
    assert f"SCHEDULER FILE 0o600 {os.geteuid()} True" in written.stdout, written
    assert not file.exists()  # removed at the end, as distributed did
    refused = {}
    for option, path in (("--scheduler-file", shared / "taken.json"),
                         ("--status-file", shared / "status")):
        refused[option] = launch([*own_options(tmp_path), "--interface", "lo", option, str(path),
                                  str(SCRIPTS / "report_cluster.py")], np=3, cwd=tmp_path)
        assert refused[option].rc == 2 and refused[option].leftovers == [], refused[option]
        assert our_lines(refused[option].stderr) == [
            f"start_daskmpi: error: {option} {path} belongs to nobody: give a path of your own"
        ], refused[option]
    assert victim.read_text() == "mine\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert (shared / "taken.json").read_text() == "{}"


# --- IPv6 loopback -------------------------------------------------------------

HOLDS_IPV6_PORTS = """
import socket, sys, threading
held = []
for port in map(int, sys.argv[1:]):
    sock = socket.socket(socket.AF_INET6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::1", port))
    sock.listen()
    held.append(sock)
print("HOLDING", flush=True)
def answer(sock):
    while True:
        conn, _ = sock.accept()
        print("DIALLED", sock.getsockname()[1], flush=True)
        conn.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nIMPOSTOR")
        conn.close()
for sock in held:
    threading.Thread(target=answer, args=(sock,), daemon=True).start()
threading.Event().wait(110)
"""


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@AS_ANOTHER_USER
@NEEDS_MPIRUN
@pytest.mark.timeout(180)
@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_impostor_on_ipv6_loopback_gets_neither_a_port_nor_a_connection(tmp_path):
    """Another user holds [::1] at the ports the job would take by default:
    the job takes ports free on both loopbacks, prints and dials 127.0.0.1
    only, and JupyterLab's proxy reaches the real dashboard."""
    pytest.importorskip("jupyterlab")
    from launch import Lab

    ports = [8786, 7787, 8787]
    with other_user_running(HOLDS_IPV6_PORTS, *map(str, ports)) as impostor:
        assert first_line(impostor) == "HOLDING"
        with Session([*own_options(tmp_path), "--interface", "lo"], np=3, cwd=tmp_path) \
                as session:
            lab = Lab(session)
            status, page = http_get(f"{lab.base}/proxy/{lab.proxied_port}/status", lab.token)
            session.send("stop\n")
            run = session.finish(timeout=60)
    dialled = impostor.stdout.read()
    assert run.rc == 0 and run.leftovers == [], run
    assert lab.port != 7787 and int(lab.scheduler.rsplit(":", 1)[1]) != 8786, run
    assert status == 200 and b"Dask" in page and b"IMPOSTOR" not in page
    assert "localhost" not in run.output, run
    assert "DIALLED" not in dialled, dialled


def http_get(url: str, token: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_a_port_is_free_only_where_both_loopbacks_have_it():
    from start_daskmpi.plan.ports import port_is_free

    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    with socket.socket(socket.AF_INET6) as held:
        held.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        held.bind(("::1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
    assert port_is_free("127.0.0.1", port)


# --- the dashboard, the user's alone --------------------------------------------

TRIES_EVERY_DOOR = """
import json, socket, ssl, sys
sock_path, ports = sys.argv[1], sys.argv[2:]
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(b"GET /status HTTP/1.0\\r\\n\\r\\n")
    print("SOCKET ANSWERED", s.recv(100))
except OSError as e:
    print("SOCKET REFUSED", type(e).__name__)
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
for port in ports:
    for path, wrap in (("/status", False), ("/metrics", False), ("/json/identity.json", False),
                       ("/status", True)):
            answer = b""
            try:
                raw = socket.create_connection(("127.0.0.1", int(port)), timeout=1)
                conn = context.wrap_socket(raw) if wrap else raw
                conn.sendall(f"GET {path} HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n".encode())
                while chunk := conn.recv(65536):
                    answer += chunk
            except (OSError, ssl.SSLError):
                pass
            if b"Dask" in answer or b"worker" in answer.lower() or b"dask_" in answer:
                print("READ", port, path, answer[:80])
print("DONE")
"""


@AS_ANOTHER_USER
@NEEDS_MPIRUN
@pytest.mark.timeout(120)
def test_another_user_reads_no_page_of_the_dashboard(tmp_path):
    """The dashboard (workers, task keys, errors, call stacks, logs) on a
    socket in the scheduler's private folder; every TCP port the job listens
    on answers another user nothing of it, over HTTP or TLS, scheduler's and
    workers' alike (a worker's metrics too)."""
    script = tmp_path / "sleeps.py"
    script.write_text(SLEEPS)
    with Session([*own_options(tmp_path), "--interface", "lo", str(script)], np=3,
                 cwd=tmp_path) as session:
        session.wait_for("READY")
        socket_path = session.wait_for(r"-L 127\.0\.0\.1:8787:(\S+\.sock) ")[1]
        ports = {c.laddr.port for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN
                 and c.pid in {p.pid for p in run_processes(session.token)}}
        tried = as_other_user(TRIES_EVERY_DOOR, socket_path, *map(str, sorted(ports)))
        own = through_socket(socket_path, "/status")
    assert tried.stdout.startswith("SOCKET REFUSED PermissionError"), tried
    assert "READ" not in tried.stdout and "DONE" in tried.stdout, tried
    assert len(ports) >= 4, ports  # the scheduler, the worker, its nanny, their HTTP
    assert b"Dask" in own  # while the user reads it through the same path


def through_socket(path: str, page: str) -> bytes:
    """What the HTTP server at the Unix socket ``path`` answers for ``page``."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(f"GET {page} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


# --- a flood of failed handshakes ------------------------------------------------

KNOCKS = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
for _ in range(count):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"not a TLS handshake\\r\\n")
        try:
            sock.recv(100)
        except OSError:
            pass
print("KNOCKED", count)
"""


@AS_ANOTHER_USER
@NEEDS_MPIRUN
@pytest.mark.timeout(120)
def test_failed_handshakes_are_counted_on_the_terminal_not_each_said(tmp_path):
    """Anyone on the node can connect to the scheduler's port: 40 failed TLS
    handshakes are one line on the user's terminal, then a count; each is
    in the scheduler's log."""
    script = tmp_path / "sleeps.py"
    script.write_text("import time\nprint('READY', flush=True)\ntime.sleep(6)\n")
    with Session([*own_options(tmp_path), "--interface", "lo", str(script)], np=3,
                 cwd=tmp_path) as session:
        session.wait_for("READY")
        port = session.wait_for(r"Scheduler address: \S+:(\d+)")[1]
        knocked = as_other_user(KNOCKS, port, "40")
        run = session.finish(timeout=60)
    assert knocked.stdout.strip() == "KNOCKED 40", knocked
    assert run.rc == 0 and run.leftovers == [], run
    said = [line for line in run.stderr.splitlines() if "job's certificate" in line]
    log = tmp_path / "logs" / "rank0-scheduler.log"
    assert len(said) == 2, run  # the first, at once; the other 39, counted at the end
    assert said[0].endswith(f"any more are counted here, at most once every 60 s; each is "
                            f"in {log}")
    assert "39 more connection(s) without the job's certificate were refused" in said[1]
    assert log.read_text().count("TLS handshake failed") == 40
