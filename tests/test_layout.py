"""Which rank does what on which GPU: pure logic, no MPI."""
from __future__ import annotations

import itertools
import sys

import pytest

from launch import ROOT
from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.gpus import (
    check_gpu_required,
    choose_gpus,
    count_gpus_amd,
    count_gpus_intel,
    find_gpus,
    parse_visible_devices,
)
from start_daskmpi.plan.launchers import MPICH, OPEN_MPI, SLURM
from start_daskmpi.plan.layout import (
    Node,
    Shape,
    assign_local_roles,
    assign_roles,
    block_placement,
    describe_layout,
    format_ranks,
)
from start_daskmpi.plan.options import parse_args
from start_daskmpi.plan.report import plan_report

GiB = 2**30


def node(host: str, gpus: int, cores: int = 64, memory: int = 512 * GiB) -> Node:
    return Node(host, tuple(str(i) for i in range(gpus)), cores, memory)


def block_ranks(per_node: list[int]) -> list[int]:
    """rank -> node index, filling the first node first (mpirun -npernode)."""
    return [index for index, count in enumerate(per_node) for _ in range(count)]


def fitting(nodes: int, gpus: int) -> list[int]:
    return [gpus + 2] + [gpus] * (nodes - 1)


CASES = [
    (nodes, gpus, shape)
    for nodes, gpus, shape in itertools.product((1, 2), (0, 1, 4, 8), ("few", "fit", "many"))
]


@pytest.mark.parametrize("nodes, gpus, shape", CASES)
def test_layout_gives_every_gpu_at_most_one_worker(nodes, gpus, shape):
    per_node = fitting(nodes, gpus)
    if gpus == 0:
        per_node = [3] + [2] * (nodes - 1)  # CPU nodes: any count of worker ranks
    if shape == "few":
        per_node[-1] -= 1
    if shape == "many":
        per_node = [count + 2 for count in per_node]
    if sum(per_node) < 3:
        pytest.skip("fewer than 3 ranks is its own error")
    machines = [node(f"n{i}", gpus) for i in range(nodes)]
    ranks = block_ranks(per_node)

    layout = assign_roles(ranks, machines)

    assert [r.rank for r in layout.roles] == list(range(len(ranks)))
    assert layout.roles[0].kind == "scheduler" and layout.roles[0].host == "n0"
    assert layout.roles[1].kind == "driver" and layout.roles[1].host == "n0"
    names = [w.name for w in layout.workers]
    assert len(names) == len(set(names))
    for index, machine in enumerate(machines):
        worker_ranks = [r for r in range(2, len(ranks)) if ranks[r] == index]
        on_node = [w for w in layout.workers if w.host == machine.host]
        idle = [r for r in layout.roles if r.kind == "idle" and r.host == machine.host]
        if gpus == 0:
            assert len(on_node) == len(worker_ranks) and not idle
            assert all(w.gpu is None and w.name.startswith(f"{machine.host}-cpu") for w in on_node)
            continue
        expected = min(gpus, len(worker_ranks))
        assert len(on_node) == expected
        assert [w.gpu for w in on_node] == [str(i) for i in range(expected)]
        assert [w.name for w in on_node] == [f"{machine.host}-gpu{i}" for i in range(expected)]
        assert all(w.nthreads == 1 for w in on_node)
        assert len(idle) == len(worker_ranks) - expected
        assert [r.rank for r in on_node + idle] == worker_ranks
    idle_notes = [n for n in layout.notes if "stay idle" in n]
    unused_notes = [n for n in layout.notes if "get no worker" in n]
    if gpus and shape == "many":
        assert len(idle_notes) == nodes and not unused_notes
    if gpus and shape == "few":
        assert len(unused_notes) == 1 and not idle_notes
    if shape == "fit" or gpus == 0:
        assert layout.notes == ()


def test_notes_say_which_ranks_idle_and_what_fits():
    layout = assign_roles(block_ranks([12]), [node("thetagpu11", 8)])
    (note,) = layout.notes
    assert "2 rank(s) on thetagpu11" in note and "ranks 10-11" in note and "-np 10" in note


def test_two_node_advice_names_the_first_node():
    layout = assign_roles(block_ranks([10, 10]), [node("a", 8), node("b", 8)])
    (note,) = layout.notes
    assert "ranks 18-19" in note
    assert "-np 18, with 10 ranks on a and one per GPU on the other nodes" in note


def test_unused_gpus_are_named():
    layout = assign_roles(block_ranks([4]), [node("a", 4)])
    (note,) = layout.notes
    assert "2 GPU(s) of a get no worker (2, 3)" in note and "-np 6" in note


@pytest.mark.parametrize("size", [0, 1, 2])
def test_fewer_than_three_ranks_is_an_error(size):
    with pytest.raises(LaunchError, match="needs at least 3 ranks"):
        assign_roles([0] * size, [node("a", 8)])


# dask-mpi's execute() shapes: (shape, ranks) -> each rank's own role, and the
# ranks whose process runs a worker beside it.
SHARED = [
    (Shape(0, True), 3, ["scheduler", "worker", "worker"], []),
    (Shape(0, False), 1, ["scheduler"], [0]),
    (Shape(0, False), 3, ["scheduler", "worker", "worker"], [0]),
    (Shape(1, False), 3, ["scheduler", "driver", "worker"], [0, 1]),
]


@pytest.mark.parametrize("shape, size, kinds, beside", SHARED)
def test_roles_sharing_a_process_as_execute_places_them(shape, size, kinds, beside):
    layout = assign_roles([0] * size, [node("a", 0, cores=12)], shape=shape)
    assert [role.kind for role in layout.roles] == kinds
    assert [role.rank for role in layout.beside] == beside
    assert layout.driver_rank == shape.driver_rank
    workers = layout.workers
    assert sorted(role.rank for role in workers) == sorted(
        [r for r, kind in enumerate(kinds) if kind == "worker"] + beside
    )
    assert len({role.name for role in workers}) == len(workers)
    assert all(role.nthreads == 12 // len(workers) for role in workers)


def test_workers_beside_take_the_first_gpus():
    layout = assign_roles([0] * 3, [node("a", 4)], shape=Shape(1, False))
    assert [(r.rank, r.gpu) for r in layout.workers] == [(2, "2"), (0, "0"), (1, "1")]
    assert "1 GPU(s) of a get no worker (3)" in layout.notes[0]
    assert describe_layout(layout) == [
        "a: rank 0 scheduler; rank 1 driver; rank(s) 0-2 workers on GPU(s) 0, 1, 2 "
        "(CUDA_VISIBLE_DEVICES)"
    ]
    shared = assign_roles([0] * 2, [node("a", 0)], shape=Shape(0, True))
    assert describe_layout(shared)[0].startswith("a: rank 0 scheduler and driver; rank(s) 1 ")


@pytest.mark.parametrize("shape, size, need", [
    (Shape(0, True), 1, 2), (Shape(1, False), 1, 2), (Shape(0, False), 0, 1),
])
def test_too_few_ranks_for_a_shared_shape_is_an_error(shape, size, need):
    assert shape.min_world_size == need
    with pytest.raises(LaunchError, match=f"needs at least {need} ranks for this placement"):
        assign_roles([0] * size, [node("a", 0)], shape=shape)


def test_cpu_workers_share_the_cores_and_memory_of_their_node():
    layout = assign_roles(block_ranks([6]), [node("a", 0, cores=16, memory=64 * GiB)])
    assert [w.nthreads for w in layout.workers] == [4] * 4
    assert [w.memory_limit for w in layout.workers] == [16 * GiB] * 4


def test_gpu_workers_share_memory_not_threads():
    layout = assign_roles(block_ranks([10]), [node("a", 8, cores=128, memory=1024 * GiB)])
    assert {w.nthreads for w in layout.workers} == {1}
    assert {w.memory_limit for w in layout.workers} == {128 * GiB}
    assert {w.name: w.gpu for w in layout.workers}["a-gpu7"] == "7"


def test_explicit_threads_and_memory_apply_to_every_worker():
    layout = assign_roles(
        block_ranks([4, 4]), [node("a", 2), node("b", 0)], nthreads=3, memory_limit="10GB"
    )
    assert {(w.nthreads, w.memory_limit) for w in layout.workers} == {(3, "10GB")}
    names = [w.name for w in layout.workers]
    assert names == ["a-gpu0", "a-gpu1", *[f"b-cpu{i}" for i in range(4)]]


def test_ranks_interleaved_across_nodes_follow_their_node():
    ranks = [0, 1, 0, 1, 0, 1]  # round-robin mapping
    layout = assign_roles(ranks, [node("a", 2), node("b", 2)])
    assert [(r.kind, r.host, r.gpu) for r in layout.roles] == [
        ("scheduler", "a", None), ("driver", "b", None),
        ("worker", "a", "0"), ("worker", "b", "0"),
        ("worker", "a", "1"), ("worker", "b", "1"),
    ]


def test_the_mask_of_the_batch_system_is_used_as_given():
    layout = assign_roles(
        block_ranks([4]), [Node("a", ("GPU-aa11", "GPU-bb22"), 8, 8 * GiB)]
    )
    assert [(w.gpu, w.name) for w in layout.workers] == [
        ("GPU-aa11", "a-gpu0"), ("GPU-bb22", "a-gpu1"),
    ]


def test_local_layout_has_one_worker_per_gpu():
    layout = assign_local_roles(node("laptop", 2, cores=8), (8, 1))
    assert [r.kind for r in layout.roles] == ["scheduler", "driver", "worker", "worker"]
    assert [w.gpu for w in layout.workers] == ["0", "1"]


def test_local_layout_without_gpu_splits_cores_as_localcluster_does():
    from distributed.deploy.utils import nprocesses_nthreads

    layout = assign_local_roles(node("laptop", 0, cores=16), nprocesses_nthreads(16))
    assert [w.nthreads for w in layout.workers] == [4] * 4
    assert len(assign_local_roles(node("ci", 0, cores=2), nprocesses_nthreads(2)).workers) == 2


@pytest.mark.parametrize(
    "value, expected",
    [("0,1,2", ["0", "1", "2"]), (" 3 , 5 ", ["3", "5"]), ("", []), ("NoDevFiles", []),
     ("GPU-1234,MIG-5678", ["GPU-1234", "MIG-5678"])],
)
def test_visible_devices(value, expected):
    assert parse_visible_devices(value) == expected


@pytest.mark.parametrize(
    "visible, detected, override, expected",
    [
        (None, 4, None, ("0", "1", "2", "3")),  # detected
        (None, 0, None, ()),  # no GPU: CPU workers
        ("4,5,6,7", 8, None, ("4", "5", "6", "7")),  # the batch system's mask wins
        ("", 8, None, ()),  # masked to none
        (None, 0, 2, ("0", "1")),  # simulated GPUs
        ("4,5,6,7", 8, 2, ("4", "5")),  # a subset of the mask
        (None, 8, 0, ()),  # CPU workers forced
    ],
)
def test_choose_gpus(visible, detected, override, expected):
    assert choose_gpus(visible, detected, override) == expected


@pytest.mark.parametrize(
    "visible, detected, override, words",
    [
        ("0,1", 8, 4, "has 2 GPU(s) (CUDA_VISIBLE_DEVICES=0,1): use --gpus-per-node 2"),
        ("", 8, 1, "has 0 GPU(s) (CUDA_VISIBLE_DEVICES=)"),
        (None, 4, 8, "has 4 GPU(s) (detected): use --gpus-per-node 4 or fewer"),
    ],
)
def test_more_gpus_than_there_are_is_an_error(visible, detected, override, words):
    with pytest.raises(LaunchError, match="--gpus-per-node") as raised:
        choose_gpus(visible, detected, override, "x3004")
    assert f"x3004 {words}" in str(raised.value)


def test_format_ranks():
    assert format_ranks([7, 2, 3, 4, 9, 10]) == "2-4, 7, 9-10"
    assert format_ranks([5]) == "5"


@pytest.mark.parametrize(
    "real, chosen, cupy, words",
    [
        (0, 0, True, "has no GPU"),
        (0, 2, True, "has no GPU"),  # simulated GPUs are not GPUs
        (2, 0, True, "contradict"),
        (2, 2, False, "CuPy is not installed on n1"),
    ],
)
def test_required_gpu_missing_is_an_error(real, chosen, cupy, words):
    with pytest.raises(LaunchError, match=words):
        check_gpu_required("n1", real, chosen, cupy)


def test_required_gpu_present_passes():
    check_gpu_required("n1", 8, 8, True)


NONE_FOUND = dict.fromkeys(("nvidia", "amd", "intel"), lambda: 0)


@pytest.mark.parametrize(
    "vendor, environ, found, expected",
    [
        (None, {}, {}, ("CUDA_VISIBLE_DEVICES", None, 0)),  # a laptop: CPU workers
        (None, {}, {"nvidia": 8}, ("CUDA_VISIBLE_DEVICES", None, 8)),
        (None, {}, {"amd": 8}, ("ROCR_VISIBLE_DEVICES", None, 8)),  # Frontier
        (None, {}, {"intel": 6}, ("ZE_AFFINITY_MASK", None, 6)),  # Aurora
        (None, {"ROCR_VISIBLE_DEVICES": "4,5"}, {"nvidia": 8}, ("ROCR_VISIBLE_DEVICES", "4,5", 0)),
        (None, {"HIP_VISIBLE_DEVICES": "1"}, {}, ("HIP_VISIBLE_DEVICES", "1", 0)),
        (None, {"ZE_AFFINITY_MASK": "0.0,0.1"}, {}, ("ZE_AFFINITY_MASK", "0.0,0.1", 0)),
        ("amd", {"CUDA_VISIBLE_DEVICES": "0"}, {"amd": 4}, ("ROCR_VISIBLE_DEVICES", None, 4)),
        ("intel", {}, {}, ("ZE_AFFINITY_MASK", None, 0)),  # asked for: simulated with N
    ],
)
def test_the_gpu_maker_is_asked_for_or_found(vendor, environ, found, expected):
    counters = {**NONE_FOUND, **{name: (lambda n=n: n) for name, n in found.items()}}
    assert find_gpus(vendor, environ, counters) == expected


def test_amd_gpus_are_the_agents_with_simds(tmp_path):
    for node, simds in (("0", 0), ("1", 304), ("2", 304)):  # a CPU, then two GPUs
        (tmp_path / node).mkdir()
        (tmp_path / node / "properties").write_text(f"cpu_cores_count 0\nsimd_count {simds}\n")
    assert count_gpus_amd(tmp_path) == 2
    assert count_gpus_amd(tmp_path / "missing") == 0


def test_intel_counts_data_centre_cards_not_integrated_graphics(tmp_path):
    for card, device in (("card0", "0x0bd5"), ("card1", "0x0bd5"), ("card2", "0x9a49")):
        (tmp_path / card / "device").mkdir(parents=True)
        (tmp_path / card / "device" / "vendor").write_text("0x8086\n")
        (tmp_path / card / "device" / "device").write_text(f"{device}\n")
    (tmp_path / "card0-DP-1").mkdir()
    assert count_gpus_intel(tmp_path) == 2


NVIDIA_SMI = """#!/bin/sh
[ "$1" = -L ] || exit 2
echo 'GPU 0: NVIDIA H200 (UUID: GPU-a)'
echo '  MIG 3g.71gb     Device  0: (UUID: MIG-b)'
echo 'GPU 1: NVIDIA H200 (UUID: GPU-c)'
"""


def test_nvidia_gpus_by_nvml_else_by_nvidia_smi_else_none(tmp_path, monkeypatch):
    """NVML first; where it is missing or fails, nvidia-smi -L's GPU lines (not
    its MIG lines); where that fails too, none."""
    from start_daskmpi.plan import gpus

    def no_nvml():
        raise ImportError("no pynvml")

    monkeypatch.setattr(gpus, "count_gpus_nvml", lambda: 4)
    assert gpus.count_gpus() == 4
    monkeypatch.setattr(gpus, "count_gpus_nvml", no_nvml)
    smi = tmp_path / "nvidia-smi"
    smi.write_text(NVIDIA_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpus.count_gpus_nvidia_smi() == 2 and gpus.count_gpus() == 2
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert gpus.count_gpus() == 0


def test_own_masks_are_the_gpu_variables_set():
    from start_daskmpi.plan.gpus import own_masks

    environ = {"CUDA_VISIBLE_DEVICES": "2", "ZE_AFFINITY_MASK": "0.1", "PATH": "/bin"}
    assert own_masks(environ) == {"CUDA_VISIBLE_DEVICES": "2", "ZE_AFFINITY_MASK": "0.1"}


@pytest.mark.parametrize(
    "pin", ["CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK"]
)
def test_each_worker_is_pinned_by_its_makers_variable(pin):
    node = Node("x4102c5s2b0n0", ("0.0", "0.1"), 208, 2**40, pin)
    workers = assign_roles([0, 0, 0, 0], [node]).workers
    assert [w.environment() for w in workers] == [{pin: "0.0"}, {pin: "0.1"}]


def test_plan_places_ranks_in_blocks_and_gives_launch_lines():
    assert block_placement(20, 2) == [0] * 10 + [1] * 10
    assert block_placement(7, 3) == [0, 0, 0, 1, 1, 1, 2]
    assert " ".join(OPEN_MPI.command(20, 10, "$NODEFILE", ["PATH", "DASK_X"])) == (
        "mpirun -np 20 -npernode 10 --hostfile $NODEFILE --bind-to none "
        "--mca oob_tcp_keepalive_time 30 --mca oob_tcp_keepalive_intvl 5 "
        "--mca oob_tcp_keepalive_probes 6 --mca odls_base_sigkill_timeout 10 -x PATH -x DASK_X"
    )
    assert MPICH.command(20, 10, "h", ["PATH"]) == [
        "mpiexec", "-n", "20", "--ppn", "10", "--hostfile", "h",  # hydra passes all, binds none
    ]
    assert SLURM.command(20, 10, "h") == [
        "srun", "-n", "20", "--ntasks-per-node", "10", "--cpu-bind=none",
    ]
    report = plan_report(parse_args(["--plan", "--nodes", "2", "-np", "20", "job.py", "a b"]),
                         Node("here", tuple("01234567"), 64, 2**39), {"PATH": "/bin"})
    assert (
        "Open MPI (Cobalt): mpirun -np 20 -npernode 10 --hostfile $NODEFILE --bind-to none "
        "--mca oob_tcp_keepalive_time 30 --mca oob_tcp_keepalive_intvl 5 "
        "--mca oob_tcp_keepalive_probes 6 --mca odls_base_sigkill_timeout 10 "
        f"-x PATH {sys.executable} "
        f"{ROOT / 'start_daskmpi.py'} job.py 'a b'"
    ) in report


def test_plan_report_for_two_nodes_of_eight_gpus():
    args = parse_args(["--plan", "--nodes", "2", "-np", "20", "job.py"])
    report = plan_report(args, Node("here", tuple("01234567"), 64, 2**39), {})
    assert report.splitlines()[:3] == [
        "20 ranks on 2 node(s) of 8 GPU(s), placed in blocks:",
        "    node0: rank 0 scheduler; rank 1 driver; rank(s) 2-9 workers on GPU(s) "
        "0, 1, 2, 3, 4, 5, 6, 7 (CUDA_VISIBLE_DEVICES)",
        "    node1: rank(s) 10-17 workers on GPU(s) 0, 1, 2, 3, 4, 5, 6, 7 "
        "(CUDA_VISIBLE_DEVICES); rank(s) 18-19 idle",
    ]
    assert "Launch lines that give every GPU a worker (10 ranks a node):" in report


def test_plan_without_np_gives_every_gpu_a_worker():
    args = parse_args(["--plan", "--nodes", "2"])
    report = plan_report(args, Node("here", tuple("0123"), 64, 2**39), {})
    assert report.splitlines()[1:3] == [
        "    node0: rank 0 scheduler; rank 1 driver; rank(s) 2-5 workers on GPU(s) "
        "0, 1, 2, 3 (CUDA_VISIBLE_DEVICES)",
        "    node1: rank(s) 6-9 workers on GPU(s) 0, 1, 2, 3 (CUDA_VISIBLE_DEVICES); "
        "rank(s) 10-11 idle",
    ]
    assert report.startswith("12 ranks on 2 node(s) of 4 GPU(s)")
    assert "mpirun -np 12 -npernode 6 --hostfile $NODEFILE" in report


def test_np_without_plan_is_an_error():
    with pytest.raises(LaunchError, match="add --plan"):
        parse_args(["-np", "4", "job.py"])


def test_a_nodes_cores_are_its_jobs_cgroup_not_a_ranks_binding(tmp_path):
    from start_daskmpi.plan.node import cgroup_cpus, cpu_list_size

    assert cpu_list_size("0-3,8,10-11\n") == 7 and cpu_list_size("5") == 1
    own = tmp_path / "cgroup"
    own.write_text("0::/slurm/job_42\n")
    job = tmp_path / "fs" / "slurm" / "job_42"
    job.mkdir(parents=True)
    (job / "cpuset.cpus.effective").write_text("0-15\n")
    (job / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpus(tmp_path / "fs", own) == 16
    (job / "cpu.max").write_text("400000 100000\n")  # a quota of 4 cores
    assert cgroup_cpus(tmp_path / "fs", own) == 4
    assert cgroup_cpus(tmp_path / "none", own) == 0  # no cgroup files: the node's count


def test_ranks_with_masks_of_their_own_keep_their_own_gpus():
    from start_daskmpi.plan.layout import with_rank_masks

    nodes = [node("a", 1), node("b", 1)]  # each first rank saw its own one GPU
    ranks = [0, 0, 0, 0, 1, 1]
    masks = [{"CUDA_VISIBLE_DEVICES": m} for m in ["0", "1", "3", "2", "1", "0"]]
    a, b = with_rank_masks(ranks, nodes, masks)
    assert a.gpus == ("3", "2") and b.gpus == ("1", "0")
    layout = assign_roles(ranks, [a, b])
    assert [(w.rank, w.gpu) for w in layout.workers] == [(2, "3"), (3, "2"), (4, "1"), (5, "0")]
    alike = [{"CUDA_VISIBLE_DEVICES": "0,1"}] * 6  # one node-wide mask: the node's, as found
    assert with_rank_masks(ranks, nodes, alike) == nodes
    assert with_rank_masks(ranks, [node("a", 0), node("b", 0)], masks)[0].gpus == ()


def test_the_edges_of_a_nodes_share():
    """One CPU worker gets the whole node; a node with fewer cores than workers
    still gives each one thread; odd amounts round down; a GPU asked for in
    full is not too many; a GPU named by an id, not an index, by its place."""
    (alone,) = assign_roles(block_ranks([3]), [node("a", 0, cores=7, memory=7)]).workers
    assert (alone.nthreads, alone.memory_limit) == (7, 7)
    squeezed = assign_roles(block_ranks([4]), [node("a", 0, cores=1, memory=7)]).workers
    assert [(w.nthreads, w.memory_limit) for w in squeezed] == [(1, 3), (1, 3)]
    three = assign_roles(block_ranks([5]), [node("a", 0, cores=7, memory=8)]).workers
    assert [(w.nthreads, w.memory_limit) for w in three] == [(2, 2)] * 3
    assert choose_gpus("0,1", 0, 2) == ("0", "1") and choose_gpus(None, 2, 2) == ("0", "1")
    assert [w.name for w in assign_roles(block_ranks([4]), [Node("a", ("0.1", "0.0"), 8, 8)])
            .workers] == ["a-gpu0", "a-gpu1"]


def test_a_local_layout_passes_its_options_on():
    gpus = assign_local_roles(node("laptop", 2, cores=8), (8, 1))
    assert {(w.nthreads, w.memory_limit) for w in gpus.workers} == {(1, 256 * GiB)}
    cpus = assign_local_roles(node("ci", 0, cores=4), (2, 2), nthreads=3, memory_limit="1GB")
    assert {(w.nthreads, w.memory_limit) for w in cpus.workers} == {(3, "1GB")}


def test_the_layout_said_node_by_node():
    layout = assign_roles([0, 0, 0, 1, 1, 1, 1], [node("a", 1), node("b", 0)])
    assert describe_layout(layout) == [
        "a: rank 0 scheduler; rank 1 driver; rank(s) 2 workers on GPU(s) 0 "
        "(CUDA_VISIBLE_DEVICES)",
        "b: rank(s) 3-6 workers on CPU",
    ]


def test_what_is_said_of_too_few_ranks_and_of_gpus_required_whole():
    with pytest.raises(LaunchError) as small:
        assign_roles([0, 0], [node("a", 8)])
    assert str(small.value) == (
        "needs at least 3 ranks: one for the scheduler, one for your script and one per "
        "worker (got 2); use e.g. mpirun -np 3, or run without mpirun for a local cluster")
    said = {}
    for real, chosen, cupy in ((0, 0, True), (2, 0, True), (2, 2, False)):
        with pytest.raises(LaunchError) as raised:
            check_gpu_required("n1", real, chosen, cupy)
        said[real, chosen, cupy] = str(raised.value)
    assert said == {
        (0, 0, True): "--require-gpu, but n1 has no GPU (no mask set, none found by NVML, "
                      "nvidia-smi, ROCm or Intel's driver): run on a GPU node, or leave "
                      "--require-gpu out for CPU workers",
        (2, 0, True): "--require-gpu and --gpus-per-node 0 contradict: drop one",
        (2, 2, False): "--require-gpu, but CuPy is not installed on n1: "
                       "pip install 'start-daskmpi[gpu]'",
    }


def test_an_intel_card_is_counted_once_and_only_with_its_ids(tmp_path):
    (tmp_path / "card0" / "device").mkdir(parents=True)  # vendor and device unreadable
    assert count_gpus_intel(tmp_path) == 0
    for name in ("card1", "card1-DP-1"):  # a connector's device is its card's
        (tmp_path / name / "device").mkdir(parents=True)
        (tmp_path / name / "device" / "vendor").write_text("0x8086\n")
        (tmp_path / name / "device" / "device").write_text("0x0bd5\n")
    assert count_gpus_intel(tmp_path) == 1


def test_a_failing_nvidia_smi_is_not_believed(tmp_path, monkeypatch):
    from start_daskmpi.plan import gpus

    smi = tmp_path / "nvidia-smi"
    smi.write_text(NVIDIA_SMI.replace("exit 2", "exit 2\necho 'GPU 0: x'; exit 9"))
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(gpus, "count_gpus_nvml", lambda: 1 / 0)
    assert gpus.count_gpus() == 0


def test_gpus_of_a_mask_keep_their_numbers_in_worker_names():
    layout = assign_roles(block_ranks([4]), [Node("a", ("2", "3"), 8, 8)])
    assert [w.name for w in layout.workers] == ["a-gpu2", "a-gpu3"]
    with pytest.raises(LaunchError, match="but this node has 1 GPU"):
        choose_gpus("0", 0, 2)


def test_a_joining_job_serves_workers_on_every_rank_named_apart():
    """--join: no scheduler, no driver; each node's ranks take its GPUs, the
    names carry the job's tag (the first job has its own node-gpu names)."""
    layout = assign_roles(block_ranks([5, 4]), [node("a", 4), node("b", 4)], joining="join1a2b")
    assert [role.kind for role in layout.roles] == ["worker"] * 4 + ["idle"] + ["worker"] * 4
    assert [role.name for role in layout.workers] == [
        *(f"a-gpu{i}-join1a2b" for i in range(4)), *(f"b-gpu{i}-join1a2b" for i in range(4))]
    assert [role.gpu for role in layout.workers] == ["0", "1", "2", "3"] * 2
    assert layout.notes == ("1 rank(s) on a have no GPU left and stay idle (ranks 4); "
                            "-np 8 fits",)


def test_a_joining_job_of_one_rank_is_a_worker():
    layout = assign_roles([0], [node("c", 0, cores=16)], joining="join0000")
    assert [(r.kind, r.name, r.nthreads) for r in layout.roles] == [
        ("worker", "c-cpu0-join0000", 16)]
