"""Several nodes for real: the launcher on a simulated cluster (tests/simcluster.py),
each node its own hostname and address, no default route, MPI's daemons
started through an ssh stand-in with sshd's clean environment.

Needs root and iproute2 (CI has both); skipped elsewhere with the reason.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from simcluster import SimCluster, skip_reason

from launch import LAUNCHER, ROOT, SCRIPTS, launch, our_lines

MPIEXEC = Path(sys.executable).parent / "mpiexec"

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
    pytest.mark.skipif(not MPIEXEC.exists(), reason="no MPICH mpiexec beside this Python"),
]


def report(run) -> dict:
    (line,) = [s for s in run.stdout.splitlines() if s.startswith("REPORT ")]
    return json.loads(line.removeprefix("REPORT "))


def run_on(cluster: SimCluster, ranks, args: list[str], tmp_path: Path, timeout: float = 90):
    """mpiexec over the cluster's nodes: ``ranks`` a list (in blocks) or an int
    (one per node in turn)."""
    launcher = [str(MPIEXEC), *cluster.mpich(ranks), sys.executable, str(LAUNCHER)]
    run = launch(["--log-dir", str(tmp_path / "logs"), *args], launcher=launcher,
                 timeout=timeout, cwd=tmp_path)
    print(run)
    return run


@pytest.mark.timeout(150)
@pytest.mark.parametrize("nodes, ranks", [
    (2, [3, 2]),  # in blocks: the scheduler, the driver and a worker on the first node
    (3, [3, 1, 1]),
    (2, 5),  # one rank per node in turn: the driver on the second node
    (3, 5),
], ids=["2 nodes, blocks", "3 nodes, blocks", "2 nodes, in turn", "3 nodes, in turn"])
def test_a_job_across_nodes_finds_a_network_they_share(tmp_path, nodes, ranks):
    """No --interface, and each node's name resolving to 127.0.1.1 on itself:
    the servers still advertise the bridge's addresses, never loopback."""
    with SimCluster(nodes, loopback_hostname=True) as cluster:
        run = run_on(cluster, ranks, [str(SCRIPTS / "report_cluster.py")], tmp_path)
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
def test_each_node_pins_its_own_gpus(tmp_path):
    """Two GPUs simulated on each of two nodes, GPUs + 2 ranks on the first."""
    with SimCluster(2) as cluster:
        run = run_on(cluster, [4, 2], ["--gpus-per-node", "2",
                                       str(SCRIPTS / "report_cluster.py")], tmp_path)
        assert run.rc == 0 and run.leftovers == [], run
        seen = report(run)
        assert seen["workers"] == sorted(
            f"{node.name}-gpu{gpu}" for node in cluster.nodes for gpu in (0, 1)
        )
        assert sorted(seen["devices"].values()) == ["0", "0", "1", "1"]
        assert seen["resources"] == ["{'GPU': 1}"] * 4


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


@pytest.mark.timeout(200)
@pytest.mark.parametrize("scheduler", ["Cobalt", "PBS", "Slurm"])
def test_the_batch_script_runs_a_job_across_nodes(tmp_path, scheduler):
    """daskmpi_job_gpu.sh as each batch system runs it, with a node file of the
    simulated hosts, MPICH's hydra told by its own variables to reach them."""
    with SimCluster(2) as cluster:
        nodefile = tmp_path / "nodes"
        nodefile.write_text("".join(f"{node.address}\n" for node in cluster.nodes))
        variables = {
            "Cobalt": {"COBALT_NODEFILE": str(nodefile), "COBALT_JOBID": "77"},
            "PBS": {"PBS_NODEFILE": str(nodefile), "PBS_JOBID": "77.pbs",
                    "PBS_O_WORKDIR": str(ROOT)},
            "Slurm": {"SLURM_JOB_NODELIST": ",".join(n.address for n in cluster.nodes),
                      "SLURM_JOB_ID": "77", "SLURM_SUBMIT_DIR": str(ROOT)},
        }[scheduler]
        env = {
            **variables,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "HYDRA_LAUNCHER": "ssh", "HYDRA_LAUNCHER_EXEC": str(cluster.ssh),
            "HYDRA_IFACE": cluster.bridge,
            "DASKMPI_GPUS_PER_NODE": "2",
            "DASKMPI_OPTIONS": f"--log-dir {tmp_path / 'logs'}",
        }
        script = [str(SCRIPTS / "report_cluster.py")]
        if scheduler == "PBS":
            env["DASKMPI_SCRIPT"], script = script[0], []
        run = launch(script, cwd=ROOT, env=env, timeout=150,
                     launcher=[shutil.which("bash"), str(ROOT / "daskmpi_job_gpu.sh")])
        print(run)
    assert run.rc == 0 and run.leftovers == [] and "Traceback" not in run.output, run
    assert f"{scheduler} job on 2 node(s)" in run.stdout
    assert "8 ranks on 2 node(s) of 2 GPU(s), placed in blocks:" in run.stdout
    assert "--ppn 4 --hostfile " in run.stdout  # the launch line --launch-command gave
    seen = report(run)
    assert seen["workers"] == sorted(
        f"{node.name}-gpu{gpu}" for node in cluster.nodes for gpu in (0, 1)
    )
