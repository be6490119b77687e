"""dask-mpi's Python API on this launcher (start_daskmpi/modes/api.py):
dask-mpi's own test scripts, with only their import line changed, under
mpirun; the statuses a script's end gives the job; the keywords taken as the
launcher's options take them (no MPI)."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launch import PACKAGE_PATH, ROOT, SCRIPTS, launch, our_lines, report
from start_daskmpi.errors import LaunchError
from start_daskmpi.modes.api import (
    DASK_MPI_DASHBOARD,
    dask_mpi_config,
    execute_shape,
    rank_order,
    worker_kind,
)
from start_daskmpi.plan.config import from_argv, from_keywords

DASK_MPI = importlib.util.find_spec("dask_mpi")
NEEDS_DASK_MPI = pytest.mark.skipif(DASK_MPI is None, reason="no dask-mpi: pip install dask-mpi")


def dask_mpi_script(name: str, folder: Path) -> Path:
    """dask-mpi's test script ``name``, as installed, with its import of dask_mpi
    made an import of start_daskmpi: the one line changed."""
    original = (Path(DASK_MPI.origin).parent / "tests" / f"{name}.py").read_text()
    ours = re.sub(r"^from dask_mpi import", "from start_daskmpi import", original, flags=re.M)
    changed = [a for a, b in zip(original.splitlines(), ours.splitlines(), strict=True) if a != b]
    assert len(changed) == 1, changed
    path = folder / f"{name}.py"
    path.write_text(ours)
    return path


def run_script(script: Path, np: int, tmp_path: Path, *args: str, timeout: float = 120):
    """``mpirun -np NP python SCRIPT ARGS``, bounded and reaped; its logs (in
    ~/dask_logs by default) in the test's folder, its workers on the CPU, as
    dask-mpi's tests expect."""
    run = launch(
        [str(script), *args], np=np, launcher=[sys.executable], timeout=timeout,
        env={"PYTHONPATH": PACKAGE_PATH, "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""},
    )
    print(run)
    return run


def clean(run) -> bool:
    return run.leftovers == [] and "Traceback" not in run.output


# --- dask-mpi's own scripts ---------------------------------------------------

@NEEDS_DASK_MPI
@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", ["initialize_basic", "initialize_no_exit"])
def test_dask_mpis_initialize_scripts(name, tmp_path):
    """initialize_basic submits to the worker named 2 (its rank, as dask-mpi
    names them); initialize_no_exit runs the cluster on a communicator split
    from the world, calls send_close_signal(), then uses the world."""
    run = run_script(dask_mpi_script(name, tmp_path), 4, tmp_path)
    assert run.rc == 0 and clean(run), run
    assert "Successfully exited" in run.stdout


@NEEDS_DASK_MPI
@pytest.mark.timeout(60)
@pytest.mark.parametrize("np", [1, 2])
def test_too_few_ranks_is_one_line(np, tmp_path):
    run = run_script(dask_mpi_script("initialize_basic", tmp_path), np, tmp_path, timeout=45)
    assert run.rc == 1 and clean(run), run
    assert our_lines(run.stderr) == [
        f"start_daskmpi: error: needs at least 3 ranks: one for the scheduler, one for your "
        f"script and one per worker (got {np}); use e.g. mpirun -np 3, or run without "
        "mpirun for a local cluster"
    ]


# dask-mpi's own matrix for execute_basic.py: (ranks, client rank, scheduler rank,
# exclusive workers) and its statuses, all of it: too few ranks is 1, said in one line.
EXECUTE_SHAPES = [
    ((4, 1, 0, True), 0),
    ((1, 1, 0, True), 1),
    ((4, 2, 3, True), 0),
    ((5, 1, 3, True), 0),
    ((3, 2, 2, True), 0),  # the client on the scheduler's rank
    ((2, 0, 0, False), 0),  # ... which also runs a worker
    ((1, 0, 0, False), 0),  # all in one process
    ((1, 0, 0, True), 1),
]


@NEEDS_DASK_MPI
@pytest.mark.timeout(150)
@pytest.mark.parametrize("shape, status", EXECUTE_SHAPES, ids=lambda v: str(v))
def test_dask_mpis_execute_script(shape, status, tmp_path):
    """Each worker is named after its rank in the caller's numbering, and the
    client's function runs on the rank asked for."""
    script = dask_mpi_script("execute_basic", tmp_path)
    run = run_script(script, shape[0], tmp_path, *map(str, shape))
    assert run.rc == status and clean(run), run
    if status:
        assert len(our_lines(run.stderr)) == 1, run


@pytest.mark.timeout(150)
@pytest.mark.parametrize("shape, how", [
    ((3, 2, 2, True), "raise"),  # the scheduler on a thread, beside the function
    ((2, 0, 0, False), "exit3"),  # ... and a worker beside them
    ((4, 3, 1, False), "raise"),  # a worker beside the scheduler, one beside the client
    ((1, 0, 0, False), "ok"),  # all of it in one process
])
def test_execute_with_roles_sharing_a_rank_ends_as_alone(shape, how, tmp_path):
    """The function's exception (or SystemExit) reaches execute()'s caller on
    the client's rank, once the cluster has ended there too (the servers
    beside it included); every other rank returns; every rank works."""
    size, client, scheduler, exclusive = shape
    run = run_script(SCRIPTS / "api_execute_ends.py", size, tmp_path, *map(str, shape[1:]), how)
    assert run.rc == 0 and clean(run), run
    workers = [r for r in range(size) if not exclusive or r not in (client, scheduler)]
    assert f"workers {workers}" in run.stdout
    said = {"ok": "returned", "raise": "ValueError the function's own error",
            "exit3": "SystemExit 3"}[how]
    expected = {f"rank {r}: {said if r == client else 'returned'}" for r in range(size)}
    assert set(re.findall(r"^rank \d+: .*$", run.stdout, flags=re.M)) == expected
    assert ("Successfully exited" if how == "ok" else "Exited with status") in run.stdout


@NEEDS_DASK_MPI
@pytest.mark.timeout(150)
def test_dask_mpis_execute_no_exit_script(tmp_path):
    run = run_script(dask_mpi_script("execute_no_exit", tmp_path), 4, tmp_path)
    assert run.rc == 0 and clean(run), run


# --- what this launcher adds ----------------------------------------------------

@pytest.mark.timeout(150)
@pytest.mark.parametrize("how, status", [
    ("ok", 0), ("exit3", 3), ("raise", 1), ("hard", 4), ("sigterm", 143),
])
def test_the_scripts_end_is_the_jobs_status(how, status, tmp_path):
    """As under the command: the status python would give, the last line
    saying it; an uncaught exception's traceback once; SIGTERM runs the
    script's finally and is one line."""
    run = run_script(SCRIPTS / "api_ends.py", 3, tmp_path, how)
    assert run.rc == status and run.leftovers == [], run
    assert run.output.count("Traceback") == (how == "raise"), run
    if how == "raise":
        assert "ValueError: the script's own error" in run.stderr
    if how == "sigterm":
        assert "FINALLY ran" in run.stdout
        assert "Interrupted (SIGTERM): stopping Dask" in run.stdout
    if how != "hard":  # os._exit ends at once, as it does python
        last = "Successfully exited" if status == 0 else f"Exited with status {status}"
        assert run.stdout.rstrip().endswith(last), run


@pytest.mark.timeout(150)
def test_keywords_reach_the_workers_and_exit_false_returns_mpi(tmp_path):
    run = run_script(SCRIPTS / "api_options.py", 4, tmp_path)
    assert run.rc == 0 and clean(run), run
    seen = report(run)
    assert seen == {
        "names": [2, 3],  # the ranks
        "nthreads": [2, 2],
        "memory": [10**9, 10**9],
        "resources": ["{'FOO': 1}"] * 2,  # worker_options, over the launcher's
        "marked": [True, True],  # worker_class
        "tls": True,
        "dashboard_status": 404,  # dashboard=False
    }, seen
    assert "The Dask dashboard is off" in run.stdout
    ranks = sorted(re.findall(r"^RANK (\d) is_client=(\w+) total=4$", run.stdout, re.M))
    assert ranks == [("0", "False"), ("1", "True"), ("2", "False"), ("3", "False")], run


@pytest.mark.timeout(120)
def test_exit_false_without_send_close_signal_ends_at_the_scripts_exit(tmp_path):
    """dask-mpi's cluster would wait forever for send_close_signal(); here the
    client's rank failing ends the job, with its status."""
    script = tmp_path / "no_close.py"
    script.write_text(
        "from start_daskmpi import initialize\n"
        "if initialize(exit=False, interface='lo', gpus_per_node=0):\n"
        "    raise ValueError('no send_close_signal() on the way out')\n"
    )
    run = run_script(script, 3, tmp_path, timeout=90)
    assert run.rc == 1 and run.leftovers == [], run
    assert run.stderr.count("Traceback") == 1 and "ValueError: no send_close_signal()" in run.stderr
    assert run.stdout.rstrip().endswith("Exited with status 1"), run


@pytest.mark.timeout(60)
def test_a_bad_keyword_is_one_line_on_every_rank(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text("from start_daskmpi import initialize\ninitialize(nthreads=0)\n")
    run = run_script(script, 3, tmp_path, timeout=45)
    assert run.rc == 1 and clean(run), run
    assert our_lines(run.stderr) == [
        "start_daskmpi: error: argument --nthreads: expected a positive integer, "
        "got '0' (see --help)"
    ]


@pytest.mark.timeout(90)
def test_a_logging_setup_made_before_initialize_stays(tmp_path):
    """logging.basicConfig() before initialize(): the script's handlers keep
    their format and level on every rank; the rank's log file gets Dask's
    INFO as well; a logger of the script's own keeps its handler."""
    script = tmp_path / "logged.py"
    script.write_text(
        "import logging, sys\n"
        "logging.basicConfig(level=logging.WARNING, stream=sys.stdout,\n"
        "                    format='MINE %(levelname)s %(name)s: %(message)s')\n"
        "own = logging.getLogger('own')\n"
        "own.addHandler(logging.StreamHandler(sys.stdout))\n"
        "from start_daskmpi import initialize\n"
        "initialize(interface='lo', gpus_per_node=0)\n"
        "logging.getLogger('app').info('not shown: below the level of the script')\n"
        "logging.getLogger('app').warning('shown in my format')\n"
        "logging.getLogger('distributed.app').warning('so is Dask')\n"
        "own.warning('own handler')\n"
    )
    run = run_script(script, 3, tmp_path, timeout=75)
    assert run.rc == 0 and clean(run), run
    assert "MINE WARNING app: shown in my format" in run.stdout
    assert "MINE WARNING distributed.app: so is Dask" in run.stdout
    assert "not shown" not in run.stdout + run.stderr
    assert run.stdout.count("own handler") == 2  # its own handler, and the root's
    driver_log = next((tmp_path / "dask_logs").glob("*/rank1-driver.log")).read_text()
    assert "shown in my format" in driver_log and " - INFO - " in driver_log


def test_the_drivers_checks_are_a_scripts_not_jupyterlabs(monkeypatch):
    """Rank 1 runs the caller's script: JupyterLab need not be installed."""
    from start_daskmpi.lifecycle import checks
    from start_daskmpi.plan.layout import Role

    def no_jupyterlab():
        raise LaunchError("JupyterLab is not installed")

    monkeypatch.setattr(checks, "check_jupyterlab", no_jupyterlab)
    driver = Role(1, "driver", "n")
    checks.preflight(driver, config(), None, "/tmp")
    with pytest.raises(LaunchError, match="not installed"):  # the command with no script
        checks.preflight(driver, from_argv([]), None, "/tmp")


def test_importing_the_api_imports_no_dask_cluster():
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys; from start_daskmpi import initialize, execute, send_close_signal; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('distributed', 'mpi4py')))"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done


# --- keywords, taken as the options are, without MPI ------------------------------

def config(**keywords):
    """What initialize(**keywords) asks for: dask-mpi's keywords, else the launcher's."""
    dask_mpi = dict(interface=None, nthreads=1, local_directory=None, memory_limit="auto",
                    nanny=False, dashboard=True, dashboard_address=DASK_MPI_DASHBOARD,
                    protocol=None, worker_class="distributed.Worker", worker_options=None)
    options = {k: keywords.pop(k) for k in list(keywords) if k not in dask_mpi}
    return dask_mpi_config(**{**dask_mpi, **keywords}, options=options)


def as_the_api_has_it(command_line):
    """The configuration of a command line, but for the API's driver, whose part
    is the caller's script, not JupyterLab."""
    from dataclasses import replace

    return replace(command_line, run=replace(command_line.run, jupyterlab=False))


def test_dask_mpis_defaults_are_the_launchers_with_one_thread_and_no_nanny():
    assert config() == as_the_api_has_it(from_argv(["--nthreads", "1", "--no-nanny"]))


def test_dask_mpis_keywords_are_the_launchers_options():
    assert config(interface="ib0", nthreads=4, local_directory=Path("/scratch"),
                  memory_limit=0.5, nanny=True, dashboard=False, dashboard_address=":9999",
                  protocol="tcp") == as_the_api_has_it(from_argv([
                      "--interface", "ib0", "--nthreads", "4", "--local-directory", "/scratch",
                      "--memory-limit", "0.5", "--nanny", "--no-dashboard",
                      "--dashboard-address", ":9999", "--no-tls", "--protocol", "tcp"]))
    assert config(protocol="tls").network.tls  # TLS is the launcher's own default


def test_a_keyword_means_what_its_option_means():
    """Every kind of option (a value, a switch, a flag, one repeated, a list of
    names), as a keyword and on the command line: one configuration."""
    keywords = dict(gpus_per_node=4, tls=False, protocol="ucx", require_gpu=True,
                    pre_import=["cudf", "dask_cudf"], preload=["a", Path("b.py")],
                    log_dir=Path("/l"), walltime="01:30:00", min_workers=0.5,
                    memory_limit="4GB", startup_timeout=60, scheduler_port=9000,
                    ssh_hops="me@login,gateway", rmm_pool_size="0.9", verbose=True)
    argv = ["--gpus-per-node", "4", "--no-tls", "--protocol", "ucx", "--require-gpu",
            "--pre-import", "cudf,dask_cudf", "--preload", "a", "--preload", "b.py",
            "--log-dir", "/l", "--walltime", "01:30:00", "--min-workers", "0.5",
            "--memory-limit", "4GB", "--startup-timeout", "60", "--scheduler-port", "9000",
            "--ssh-hops", "me@login,gateway", "--rmm-pool-size", "0.9", "--verbose"]
    assert from_keywords(keywords) == as_the_api_has_it(from_argv(argv))
    assert from_keywords(dict(walltime=None, require_gpu=None, tls=None)) == from_keywords({})


@pytest.mark.parametrize("keywords, message", [
    (dict(nthreads=0), "^argument --nthreads: "),
    (dict(gpus_per_node="x"), "^argument --gpus-per-node: "),
    (dict(tls="no"), r"^argument --tls: expected True or False, got 'no' \(see --help\)$"),
    (dict(gpu_vendor="acme"), "^argument --gpu-vendor: invalid choice: 'acme'"),
    (dict(gpus=4), "^gpus is no option of the launcher"),
    (dict(protocol="tcp", tls=True), "^protocol='tcp' carries no TLS: add tls=False"),
])
def test_a_bad_keyword_is_refused_as_its_option_is(keywords, message):
    with pytest.raises(LaunchError, match=message):
        config(**keywords)


@pytest.mark.parametrize("name", ["script", "plan", "ranks", "hostfile", "join"])
def test_options_of_the_command_line_only_are_refused(name):
    with pytest.raises(LaunchError, match=f"^{name} is an option of the command line only"):
        config(**{name: "x"})


def test_worker_class():
    from distributed import Nanny, Worker

    class Mine(Worker):
        pass

    assert worker_kind("distributed.Worker", nanny=False) == (False, None)
    assert worker_kind(Worker, nanny=True) == (True, None)  # dask-mpi's old nanny=True
    assert worker_kind("distributed.Nanny", nanny=False) == (True, None)
    assert worker_kind(Nanny, nanny=False) == (True, None)
    assert worker_kind(Mine, nanny=False) == (False, Mine)
    with pytest.raises(LaunchError, match="nanny=True runs the launcher's workers"):
        worker_kind(Mine, nanny=True)
    with pytest.raises(LaunchError, match="neither a distributed.Worker nor"):
        worker_kind("collections.OrderedDict", nanny=False)


@pytest.mark.parametrize("shape, message", [
    ((False, None, True, 1, 0, 4), "scheduler=False: joining a running scheduler is not"),
    ((True, None, True, 4, 0, 4), "client_rank=4 is not a rank of the 4"),
    ((True, None, True, 1, -1, 4), "scheduler_rank=-1 is not a rank of the 4"),
])
def test_execute_shapes_refused(shape, message):
    with pytest.raises(LaunchError, match=message):
        execute_shape(*shape)


@pytest.mark.parametrize("client, scheduler, exclusive, driver_rank, order", [
    (1, 0, True, 1, [0, 1, 2, 3]),
    (2, 3, True, 1, [3, 2, 0, 1]),
    (2, 2, True, 0, [2, 0, 1, 3]),  # the driver beside the scheduler, logical rank 0
    (0, 0, False, 0, [0, 1, 2, 3]),
    (3, 1, False, 1, [1, 3, 0, 2]),
])
def test_execute_numbers_the_ranks_for_the_roles(client, scheduler, exclusive, driver_rank,
                                                  order):
    shape = execute_shape(True, None, exclusive, client, scheduler, 4)
    assert (shape.driver_rank, shape.exclusive_workers) == (driver_rank, exclusive)
    assert rank_order(scheduler, client, 4) == order
    assert order[shape.driver_rank] == client
