"""Several nodes for real: the launcher on a simulated cluster (tests/simcluster.py),
each node its own hostname and address, no default route, MPI's daemons
started through an ssh stand-in with sshd's clean environment.

Needs root and iproute2 (CI has both); skipped elsewhere with the reason.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launch import (
    LAUNCHER,
    ROOT,
    SCRIPTS,
    TOKEN_VARIABLE,
    Lab,
    Session,
    launch,
    our_lines,
    report,
    run_processes,
)
from simcluster import SimCluster, mpich_environment, openmpi_environment, skip_reason
from start_daskmpi.plan import launchers
from start_daskmpi.plan.launchers import carried_variables

MPIEXEC = Path(sys.executable).parent / "mpiexec"
# Open MPI's wheel and this project, in an environment apart from MPICH's (both
# wheels bring an mpirun): .ci/run makes it.
OPEN_MPI = ROOT / ".venv-openmpi"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SSH = "ssh -o ExitOnForwardFailure=yes"  # the printed tunnels' start
ROOT_ALLOWED = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}

pytestmark = [
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
    pytest.mark.skipif(not MPIEXEC.exists(), reason="no MPICH mpiexec beside this Python"),
]
NEEDS_OPEN_MPI = pytest.mark.skipif(
    not (OPEN_MPI / "bin" / "mpirun").exists(),
    reason=f"no Open MPI environment in {OPEN_MPI} (.ci/run makes one)",
)
BOTH_MPIS = pytest.mark.parametrize(
    "mpi", ["MPICH", pytest.param("Open MPI", marks=NEEDS_OPEN_MPI)]
)


def mpiexec(cluster: SimCluster, ranks, *options: str, nodes=None) -> list[str]:
    """mpiexec over the cluster's nodes (or ``nodes``), starting the launcher:
    ``ranks`` a list (in blocks) or an int (one per node in turn)."""
    return [str(MPIEXEC), *options, *cluster.mpich(ranks, nodes), sys.executable,
            str(LAUNCHER)]


def open_mpi_run(cluster: SimCluster, ranks, *options: str, nodes=None) -> list[str]:
    """The same with Open MPI's mpirun and the launch line's own options; it
    passes no variable to other nodes unless told: the ones the launch lines
    carry, and the tests' run token."""
    # TMPDIR too, which the launch lines leave to each node (conftest sets it).
    carried = carried_variables({**os.environ, **ROOT_ALLOWED, TOKEN_VARIABLE: ""}) + ["TMPDIR"]
    return [str(OPEN_MPI / "bin" / "mpirun"), *options,
            *cluster.openmpi(ranks, OPEN_MPI, nodes),
            *launchers.OPEN_MPI.unbound, *launchers.OPEN_MPI.bounded,
            *[word for name in carried for word in ("-x", name)],
            str(OPEN_MPI / "bin" / "python"), str(LAUNCHER)]


def launcher_on(cluster: SimCluster, ranks, mpi: str, *options: str, nodes=None):
    """The launch command on the cluster (or ``nodes`` of it) under ``mpi``, and
    the variables it needs."""
    if mpi == "MPICH":
        return mpiexec(cluster, ranks, *options, nodes=nodes), SimCluster.MPICH_ENVIRONMENT
    return open_mpi_run(cluster, ranks, *options, nodes=nodes), ROOT_ALLOWED


def run_on(cluster: SimCluster, ranks, args: list[str], tmp_path: Path, timeout: float = 90,
           mpi: str = "MPICH"):
    launcher, env = launcher_on(cluster, ranks, mpi)
    run = launch(["--log-dir", str(tmp_path / "logs"), *args], launcher=launcher,
                 timeout=timeout, cwd=tmp_path, env=env)
    print(run)
    return run


def session_on(cluster: SimCluster, ranks, script: Path | None, *options: str,
               mpi: str = "MPICH", cwd: Path) -> Session:
    """A run on the cluster that goes on while the test acts on it: ``script``,
    or JupyterLab where None; ``options``: the MPI launcher's."""
    launcher, env = launcher_on(cluster, ranks, mpi, *options)
    return Session(["--log-dir", str(cwd / "logs"), *([str(script)] if script else [])],
                   launcher=launcher, env=env, cwd=cwd)


SLEEPS = "import time\nprint('READY', flush=True)\ntime.sleep(300)\n"
LOSE_A_NODE = """
import time
import dask.array as da
from distributed import get_client

print("READY", flush=True)
time.sleep(4)  # the test cuts a node off meanwhile
x = da.ones((2000, 2000), chunks=500)
print("SUM", x.sum().compute(), flush=True)
raise SystemExit(3)  # the job's status, as the script's
"""


@contextlib.contextmanager
def ready_on_two_nodes(tmp_path: Path, source: str, mpi: str):
    """A script running on two nodes, three ranks and two, once it printed READY."""
    script = tmp_path / "job.py"
    script.write_text(source)
    with SimCluster(2) as cluster, session_on(cluster, [3, 2], script, mpi=mpi,
                                              cwd=tmp_path) as session:
        session.wait_for("READY")
        yield cluster, session


def last_log_lines(folder: Path, count: int = 12) -> str:
    """Each rank log's last lines: where a run that hung had got to."""
    return "\n".join(
        f"== {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-count:])
        for path in sorted(folder.glob("*.log"))
    )


def rank_process(token: str, rank: int) -> psutil.Process:
    """The process of one rank of the run (not its children, which inherit its
    environment): the child of MPICH's proxy or Open MPI's daemon."""
    for process in run_processes(token):
        with contextlib.suppress(psutil.Error):
            said = process.environ()
            parent = " ".join(process.parent().cmdline())
            if str(rank) in (said.get("PMI_RANK"), said.get("OMPI_COMM_WORLD_RANK")) and \
                    ("hydra_pmi_proxy" in parent or "prted" in parent):
                return process
    raise AssertionError(f"no process of rank {rank}")


@pytest.mark.timeout(150)
@pytest.mark.parametrize("nodes, ranks", [
    (2, [3, 2]),  # in blocks: the scheduler, the driver and a worker on the first node
    (3, [3, 1, 1]),
    (2, 5),  # one rank per node in turn: the driver on the second node
    (3, 5),
], ids=["2 nodes, blocks", "3 nodes, blocks", "2 nodes, in turn", "3 nodes, in turn"])
@BOTH_MPIS
def test_a_job_across_nodes_finds_a_network_they_share(tmp_path, nodes, ranks, mpi):
    """No --interface, and each node's name resolving to 127.0.1.1 on itself:
    the servers still advertise the bridge's addresses, never loopback."""
    with SimCluster(nodes, loopback_hostname=True) as cluster:
        run = run_on(cluster, ranks, [str(SCRIPTS / "report_cluster.py")], tmp_path, mpi=mpi)
        assert run.rc == 0 and run.leftovers == [] and "Traceback" not in run.output, run
        assert f"Network: {cluster.subnet} (eth0), which every node shares" in run.stdout
        assert f"Scheduler address: tls://{cluster.nodes[0].address}:" in run.stdout
        seen = report(run)
        hosts = {name.rsplit("-", 1)[0] for name in seen["workers"]}
        assert hosts == {node.name for node in cluster.nodes}
        assert len(seen["workers"]) == (sum(ranks) if isinstance(ranks, list) else ranks) - 2
        assert all(not address.startswith("tls://127.") for address in seen["devices"])
        assert seen["answer"] == 42


@pytest.mark.timeout(150)
@BOTH_MPIS
def test_each_node_pins_its_own_gpus(tmp_path, mpi):
    """Two GPUs simulated on each of two nodes, GPUs + 2 ranks on the first."""
    with SimCluster(2) as cluster:
        run = run_on(cluster, [4, 2], ["--gpus-per-node", "2",
                                       str(SCRIPTS / "report_cluster.py")], tmp_path, mpi=mpi)
        assert run.rc == 0 and run.leftovers == [], run
        seen = report(run)
        assert seen["workers"] == sorted(
            f"{node.name}-gpu{gpu}" for node in cluster.nodes for gpu in (0, 1)
        )
        assert sorted(seen["devices"].values()) == ["0", "0", "1", "1"]
        assert seen["resources"] == ["{'GPU': 1}"] * 4


@pytest.mark.timeout(300)
@pytest.mark.parametrize("ranks", [[3, 2], 5], ids=["beside the scheduler", "on another node"])
@BOTH_MPIS
def test_jupyterlab_and_its_tunnels_follow_the_driver(tmp_path, ranks, mpi):
    """JupyterLab runs where the driver does; its tunnel ends there, the
    dashboard's at the scheduler's node; inside JupyterLab the dashboard (proxy,
    sidebar, WebSockets) works either way, and is open to no one else."""
    with SimCluster(2) as cluster, session_on(cluster, ranks, None, mpi=mpi,
                                              cwd=tmp_path) as session:
        lab = Lab(session)
        scheduler_node, driver_node = cluster.nodes[0], cluster.nodes[ranks == 5]
        text = session.output
        checks = ["--refused", f"{scheduler_node.address}:{lab.dashboard_port}"]
        to_lab = f"-L 127.0.0.1:{lab.port}:127.0.0.1:{lab.port}"
        to_dashboard = rf"-L 127\.0\.0\.1:{lab.dashboard_port}:/\S+/dashboard\.sock"
        if driver_node == scheduler_node:
            assert re.search(rf"^    {re.escape(f'{SSH} {to_lab}')} {to_dashboard} "
                             rf"root@{scheduler_node.name}$", text, re.M), text
        else:
            assert f"{SSH} {to_lab} root@{driver_node.name}\n" in text
            assert re.search(rf"^    {re.escape(SSH)} {to_dashboard} root@{scheduler_node.name}$",
                             text, re.M), text
            log = (lab.log_dir / "rank0-scheduler.log").read_text()
            relay = re.search(r"dashboard relay for JupyterLab listening at (\S+),", log)[1]
            assert relay.startswith(f"{scheduler_node.address}:"), relay
            checks += ["--stranger", relay]
            if CHROMIUM and importlib.util.find_spec("playwright"):
                checks += ["--browser", str(tmp_path)]
        checked = subprocess.run(
            ["ip", "netns", "exec", driver_node.namespace, sys.executable,
             # "--": a token may start with "-"
             str(SCRIPTS / "check_lab.py"), *checks, "--", lab.base, lab.token,
             str(lab.proxied_port)],
            capture_output=True, text=True, timeout=240,
        )
        print(checked.stdout, checked.stderr)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        session.send("stop\n")
        run = session.finish(timeout=60)
    assert run.rc == 0 and run.leftovers == [] and "Traceback" not in run.output, run


@pytest.mark.timeout(120)
def test_loopback_on_several_nodes_is_one_line(tmp_path):
    with SimCluster(2) as cluster:
        run = run_on(cluster, [3, 2], ["--interface", "lo", "job.py"], tmp_path, timeout=60)
    assert run.rc == 2 and run.leftovers == [], run
    assert our_lines(run.stderr) == [
        "start_daskmpi: error: --interface lo is loopback, which the job's other 1 node(s) "
        "cannot reach: name a network every node shares, or leave --interface out to have "
        "one chosen"
    ]


@pytest.mark.timeout(120)
def test_a_node_that_cannot_reach_the_scheduler_is_named_at_once(tmp_path):
    """dummy0 on every node, each on a network of its own: --interface dummy0
    gives a scheduler address the second node has no route to."""
    with SimCluster(2) as cluster:
        for index, node in enumerate(cluster.nodes):
            cluster.add_interface(node, "dummy0", f"10.{index + 1}.254.1/24")
        (tmp_path / "job.py").write_text("print('never runs')\n")
        run = run_on(cluster, [3, 2], ["--interface", "dummy0", "job.py"], tmp_path,
                     timeout=60)
    assert run.rc == 2 and run.leftovers == [], run
    second = cluster.nodes[1]
    (line,) = our_lines(run.stderr)
    assert line.startswith(
        f"start_daskmpi: error: {second.name} (rank 3) cannot reach the scheduler at "
        "tls://10.1.254.1:"
    ), run
    assert f"eth0 {second.address}/24" in line and "dummy0 10.2.254.1/24" in line
    assert "never runs" not in run.stdout and run.seconds < 30


@pytest.mark.reliability("fault")
@pytest.mark.timeout(200)
@BOTH_MPIS
def test_a_node_cut_off_mid_run_ends_the_job_within_a_bound(tmp_path, record, mpi):
    """The script's result is right, computed on the nodes left, and the job
    ends within a minute of the script, naming the lost node.  MPICH: our
    ranks end it, with the script's status.  Open MPI: its mpirun ends it
    itself once its keepalive (set by the launch line) finds the node's daemon
    silent, and names the node; the status is its own."""
    with ready_on_two_nodes(tmp_path, LOSE_A_NODE, mpi) as (cluster, session):
        cluster.cut(cluster.nodes[1])
        session.wait_for("Exited with status 3", timeout=120)
        ended = time.monotonic()
        session.process.wait(60)
        on_lost_node = set(cluster.processes(cluster.nodes[1]))
        run = session.finish(timeout=30)
        lost = cluster.nodes[1].name
    print(run)
    record(run, f"a node's link cut mid-run ({mpi})")
    assert "SUM 4000000.0" in run.stdout and time.monotonic() - ended < 60, run
    # Left running: only what the lost node runs, which no one can reach (on a
    # cluster, the batch system's end of the job ends them).
    left = {int(line.split()[0]) for line in run.leftovers}
    assert left <= on_lost_node, (left, on_lost_node, run)
    ours = (f"start_daskmpi: error: rank(s) 3-4 on {lost}: their workers left the cluster "
            "and did not come back (a node lost, or its network cut); the job ends without them")
    if mpi == "MPICH":
        assert run.rc == 3 and our_lines(run.stderr) == [ours], run
    else:
        assert "PRTE has lost communication with a remote daemon" in run.output, run
        assert f"on node {lost}" in run.output and our_lines(run.stderr) in ([], [ours]), run


@pytest.mark.reliability("fault")
@pytest.mark.timeout(150)
@BOTH_MPIS
def test_a_node_whose_processes_all_die_ends_the_job_by_the_launcher(tmp_path, record, mpi):
    """Every process on the second node killed (its daemon too): the MPI
    launcher ends the whole job at once itself, before any rank of ours can.
    Open MPI's mpirun names the node but exits 0 (the batch script does not
    pass that on: test_a_batch_job_that_loses_a_node_fails)."""
    with ready_on_two_nodes(tmp_path, SLEEPS, mpi) as (cluster, session):
        cluster.kill_node(cluster.nodes[1])
        killed = time.monotonic()
        run = session.finish(timeout=60)
    record(run, f"every process on a node killed ({mpi})")
    assert run.rc is not None and run.leftovers == [], run
    assert time.monotonic() - killed < 30, run
    if mpi == "MPICH":
        assert run.rc != 0, run
    else:
        # "lost communication with a remote daemon" or "a daemon failed to
        # report back", by when it noticed: both name the node.
        assert cluster.nodes[1].name in run.output.split("READY")[1], run


@pytest.mark.reliability("fault")
@pytest.mark.timeout(150)
@pytest.mark.parametrize("mpi, keep_going", [
    ("MPICH", "-disable-auto-cleanup"),
    pytest.param("Open MPI", "--with-ft=ulfm", marks=NEEDS_OPEN_MPI),
])
def test_a_driver_killed_under_a_launcher_that_keeps_the_others_ends_the_job(
    tmp_path, record, mpi, keep_going
):
    """A launcher told to keep the other ranks running when one dies (MPICH's
    -disable-auto-cleanup, Open MPI's fault-tolerant mode): the scheduler
    notices the driver's client gone and ends the job."""
    script = tmp_path / "long.py"
    script.write_text(SLEEPS)
    with SimCluster(2) as cluster, session_on(
        cluster, 5, script, keep_going, mpi=mpi, cwd=tmp_path
    ) as session:
        session.wait_for("READY")
        driver = rank_process(session.token, 1)  # on the second node: ranks go in turn
        driver.kill()
        killed = time.monotonic()
        run = session.finish(timeout=90)
    record(run, f"the driver killed, launcher keeps the others ({mpi})")
    # Where each rank had got to is in its log.  (Thrice, rarely, then every time
    # once the start got quicker, the run said nothing more and hung: the driver,
    # killed at once, had connected and left between two of the scheduler's looks
    # at its clients; liveness.ClientCame.)
    assert run.rc not in (0, None) and run.leftovers == [], (
        f"{run}\n{last_log_lines(tmp_path / 'logs')}"
    )
    assert time.monotonic() - killed < 45, run
    # MPICH 5.0.2's hydra, rarely (1 run in 15 on 2 busy cores), fails itself
    # on the dead rank's socket and ends the job at once, with 255.
    if not (mpi == "MPICH" and "unable to forward PMI response" in run.stderr):
        assert run.rc == 1 and f"start_daskmpi: error: lost the driver (rank 1 on " \
            f"{cluster.nodes[1].name}): the job ends" in our_lines(run.stderr), run
    # The launcher's SIGUSR1 to each rank's process group (MPICH's notice of
    # the failure) reached no worker process: none died and restarted.
    assert "Restarting worker" not in run.output, run
    assert "asyncio - ERROR" not in run.output, run  # MPICH's cancelled receive, unpickled


def batch_on(cluster: SimCluster, tmp_path: Path, scheduler: str, mpi: str, script: list[str],
             session: bool = False):
    """daskmpi_job_gpu.sh as ``scheduler`` runs it, with a node file of the
    simulated hosts, the MPI on PATH told by its own variables to reach them;
    a Session if ``session``, else the finished run."""
    nodefile = tmp_path / "nodes"
    nodefile.write_text("".join(f"{node.address}\n" for node in cluster.nodes))
    variables = {
        "Cobalt": {"COBALT_NODEFILE": str(nodefile), "COBALT_JOBID": "77"},
        "PBS": {"PBS_NODEFILE": str(nodefile), "PBS_JOBID": "77.pbs",
                "PBS_O_WORKDIR": str(tmp_path)},
        "Slurm": {"SLURM_JOB_NODELIST": ",".join(n.address for n in cluster.nodes),
                  "SLURM_JOB_ID": "77", "SLURM_SUBMIT_DIR": str(tmp_path)},
    }[scheduler]
    python = Path(sys.executable) if mpi == "MPICH" else OPEN_MPI / "bin" / "python"
    env = {
        **variables,
        "PATH": f"{python.parent}:{os.environ['PATH']}",
        **(mpich_environment(cluster) if mpi == "MPICH"
           else {**openmpi_environment(cluster), **ROOT_ALLOWED}),
        "DASKMPI_GPUS_PER_NODE": "2",
        # Its own scratch: Open MPI's ranks get no TMPDIR from the launch line.
        "DASKMPI_OPTIONS": f"--log-dir {tmp_path / 'logs'} --local-directory {tmp_path}",
    }
    if scheduler == "PBS":  # qsub passes no arguments to a job script
        env["DASKMPI_SCRIPT"], script = " ".join(script), []
    launcher = [shutil.which("bash"), str(ROOT / "daskmpi_job_gpu.sh")]
    if session:
        return Session(script, cwd=tmp_path, env=env, launcher=launcher)
    run = launch(script, cwd=tmp_path, env=env, timeout=150, launcher=launcher)
    print(run)
    return run


@pytest.mark.timeout(200)
@pytest.mark.parametrize("scheduler", ["Cobalt", "PBS", "Slurm"])
@BOTH_MPIS
def test_the_batch_script_runs_a_job_across_nodes(tmp_path, scheduler, mpi):
    with SimCluster(2) as cluster:
        run = batch_on(cluster, tmp_path, scheduler, mpi, [str(SCRIPTS / "report_cluster.py")])
    assert run.rc == 0 and run.leftovers == [] and "Traceback" not in run.output, run
    assert f"{scheduler} job on 2 node(s)" in run.stdout
    assert "8 ranks on 2 node(s) of 2 GPU(s), placed in blocks:" in run.stdout
    # The launch line --launch-command gave, for the MPI found on PATH:
    assert ("--ppn 4 --hostfile " if mpi == "MPICH" else "-npernode 4 --hostfile ") in run.stdout
    seen = report(run)
    assert seen["workers"] == sorted(
        f"{node.name}-gpu{gpu}" for node in cluster.nodes for gpu in (0, 1)
    )


@pytest.mark.reliability("fault")
@pytest.mark.timeout(200)
@BOTH_MPIS
def test_a_batch_job_that_loses_a_node_fails(tmp_path, record, mpi):
    """Every process on the second node killed under the batch script: the MPI
    launcher ends the job (Open MPI's mpirun with status 0, which the batch
    script, with no word from the driver, does not pass on)."""
    script = tmp_path / "long.py"
    script.write_text(SLEEPS)
    with SimCluster(2) as cluster, \
            batch_on(cluster, tmp_path, "Slurm", mpi, [str(script)], session=True) as session:
        session.wait_for("READY")
        cluster.kill_node(cluster.nodes[1])
        killed = time.monotonic()
        run = session.finish(timeout=60)
    record(run, f"every process on a node killed, batch script ({mpi})")
    assert run.rc not in (0, None) and run.leftovers == [], run
    assert time.monotonic() - killed < 30, run
    if mpi == "Open MPI":
        assert run.rc == 1 and "daskmpi_job_gpu.sh: error: the job ended before its driver " \
            "could tell how (a node lost?)" in run.stdout, run


@pytest.mark.reliability("fault")
@pytest.mark.timeout(150)
@BOTH_MPIS
def test_a_walltime_sigterm_to_the_batch_script_lets_the_finally_run(tmp_path, record, mpi):
    """The batch system's SIGTERM to the job script: the script's finally runs
    whole (5 s here), under Open MPI too, whose mpirun, signalled itself, kills
    the ranks at once; the job ends in order with 143."""
    marker = tmp_path / "saved"  # a line for each second of the finally that ran
    script = [str(SCRIPTS / "slow_finally.py"), "5", str(marker)]
    with SimCluster(2) as cluster, batch_on(
        cluster, tmp_path, "Slurm", mpi, script, session=True
    ) as session:
        session.wait_for("READY")
        session.process.send_signal(signal.SIGTERM)  # the batch shell only
        signaled = time.monotonic()
        run = session.finish(timeout=60)
    record(run, f"SIGTERM to the batch script, a 5 s finally ({mpi})")
    assert run.rc == 143 and run.leftovers == [], run
    assert marker.read_text().split() == ["0", "1", "2", "3", "4"], run
    assert "daskmpi_job_gpu.sh: SIGTERM: ending the job in order" in run.stdout, run
    assert "Interrupted (SIGTERM): stopping Dask" in run.stdout, run
    assert time.monotonic() - signaled < 30, run
    assert "Traceback" not in run.output, run


@BOTH_MPIS
def test_a_job_on_another_node_joins_the_cluster(tmp_path, mpi):
    """The first job on one node, a second on another joins it (--join) with the
    credentials the first job's driver left in its folder; its workers do work,
    and leave when the first job ends."""
    scheduler_file = tmp_path / "scheduler.json"
    options = ["--interface", "eth0", "--gpus-per-node", "0"]
    with SimCluster(2) as cluster:
        first_node, second_node = cluster.nodes
        launcher, env = launcher_on(cluster, [3], mpi, nodes=[first_node])
        with Session(["--log-dir", str(tmp_path / "logs"), *options, "--scheduler-file",
                      str(scheduler_file), str(SCRIPTS / "joined.py"), "3"],
                     launcher=launcher, env=env, cwd=tmp_path) as session:
            session.wait_for("Another client of yours")
            launcher, env = launcher_on(cluster, [2], mpi, nodes=[second_node])
            second = launch(["--log-dir", str(tmp_path / "joined-logs"), *options,
                             "--join", str(scheduler_file)],
                            launcher=launcher, env=env, cwd=tmp_path, timeout=120)
            first = session.finish(timeout=60)
    print(first, second)
    assert first.rc == 0 and first.leftovers == [] and "Traceback" not in first.output, first
    joined = re.search(r"^JOINED (.*)$", first.stdout, re.M)[1].split()
    assert {name.split("-cpu")[0] for name in joined} == {second_node.name}, joined
    assert "ON A JOINED WORKER 42" in first.stdout
    assert second.rc == 0 and second.leftovers == [] and "Traceback" not in second.output
    assert f"Joining the cluster at tls://{first_node.address}:" in second.stdout
    assert "has ended: the joined workers left" in second.stdout
