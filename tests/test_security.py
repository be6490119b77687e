"""The red-team suite: what another user of the machine tries against a job,
each attempt run as that user (uid ``nobody``, through setpriv, as root), and
each failing.  README's threat model says what these prove.

Needs root and setpriv (CI has both); skipped elsewhere with the reason.  Every
file the other user makes is in a shared folder this module makes and removes.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from other_user import AS_ANOTHER_USER, as_other_user

from launch import LAUNCHER, NEEDS_MPIRUN, SCRIPTS, Session, launch, our_lines, run_processes


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
ports = {int(a.rsplit(":", 1)[1]) for a in ports} | set(info["services"].values())
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
    from start_daskmpi.places import make_log_dir

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
    from start_daskmpi.logs import open_private

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

    from start_daskmpi.security import job_authority

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

PROXY_ATTEMPT = """
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=10)
    print("PROXIED")
except urllib.error.HTTPError as e:
    print("REFUSED", e.code)
"""


@AS_ANOTHER_USER
@NEEDS_MPIRUN
@pytest.mark.timeout(120)
def test_the_dashboard_relays_to_no_other_host_or_port(tmp_path):
    """distributed's dashboard has a /proxy/ route (where jupyter-server-proxy is
    installed) that relays to any host and port, as the job: off."""
    pytest.importorskip("jupyter_server_proxy")  # without it, there is no such route
    script = tmp_path / "sleeps.py"
    script.write_text(SLEEPS)
    with Session([*own_options(tmp_path), str(script)], np=3, cwd=tmp_path) as session:
        session.wait_for("READY")
        dashboard = int(session.wait_for(r"http://localhost:(\d+)/status")[1])
        scheduler = int(session.wait_for(r"Scheduler address: \S+:(\d+)")[1])
        url = f"http://127.0.0.1:{dashboard}/proxy/{scheduler}/127.0.0.1/"
        tried = as_other_user(PROXY_ATTEMPT, url)
    assert tried.stdout.split() == ["REFUSED", "404"], tried


def test_certificates_last_until_the_jobs_end_where_the_batch_system_says_it():
    import datetime

    from start_daskmpi.security import CLOCK_SKEW, DEFAULT_LIFETIME, certificate_end

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
