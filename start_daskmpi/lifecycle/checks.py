"""What each role checks before anything starts, so that a mistake is one line
at once, not a traceback or a timeout later."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

from start_daskmpi.driver.walltime import check_time_left, deadline_of_this_job
from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.config import Config
from start_daskmpi.plan.folders import is_writable_dir
from start_daskmpi.plan.gpus import uses_dask_cuda
from start_daskmpi.plan.layout import Role
from start_daskmpi.plan.network import check_interface
from start_daskmpi.security.ownership import check_import_path, write_problem
from start_daskmpi.servers.pre_imports import check_modules


def check_jupyterlab() -> None:
    if importlib.util.find_spec("jupyterlab") is None:
        raise LaunchError(
            "with no script, JupyterLab runs on the cluster, but it is not installed: "
            "pip install 'start-daskmpi[jupyter]', or give a script to run"
        )


def check_script(path: str) -> None:
    if not os.path.exists(path):
        raise LaunchError(f"script not found: {path}")
    if not os.path.isfile(path):
        raise LaunchError(f"not a file: {path}: give the path of a Python script")
    try:
        with open(path, "rb") as f:
            source = f.read()
        if b"\0" in source:
            raise ValueError("binary file")
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as e:
        raise LaunchError(f"{path}:{e.lineno}: {e.msg}: fix the script's syntax") from None
    except (ValueError, UnicodeDecodeError):
        raise LaunchError(f"{path} is not a Python script") from None
    except OSError as e:
        raise LaunchError(f"cannot read {path}: {e.strerror}") from None


def check_local_directory(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise LaunchError(f"cannot create --local-directory {path}: {e.strerror}") from None
    if not is_writable_dir(path):
        raise LaunchError(f"--local-directory {path} is not writable: choose another folder")


# The first that hands CuPy's allocations to RMM's pool (rmm_allocator_external_lib_list).
OLDEST_DASK_CUDA_FOR_RMM = "24.12"


def is_at_least(package: str, oldest: str) -> bool:
    from packaging.version import Version  # distributed's own dependency

    return Version(importlib.metadata.version(package)) >= Version(oldest)


def dask_cuda_options(config: Config) -> list[str]:
    return [
        option for option, value in (
            ("--rmm-pool-size", config.workers.rmm_pool_size),
            ("--device-memory-limit", config.workers.device_memory_limit),
        ) if value
    ]


def check_dask_cuda(role: Role, config: Config) -> None:
    """dask-cuda's options need a worker that is dask-cuda's: an error, not a
    silent no-op, wherever one is not."""
    wanted = dask_cuda_options(config)
    if not wanted:
        return
    if importlib.util.find_spec("dask_cuda") is None:
        raise LaunchError(f"{wanted[0]} comes from dask-cuda: pip install dask-cuda")
    if config.workers.rmm_pool_size and not is_at_least("dask-cuda", OLDEST_DASK_CUDA_FOR_RMM):
        raise LaunchError(
            f"--rmm-pool-size needs dask-cuda {OLDEST_DASK_CUDA_FOR_RMM} or later (this node has "
            f"{importlib.metadata.version('dask-cuda')}): pip install -U 'dask-cuda>="
            f"{OLDEST_DASK_CUDA_FOR_RMM}', or drop --rmm-pool-size"
        )
    if config.workers.rmm_pool_size and importlib.util.find_spec("rmm") is None:
        raise LaunchError("--rmm-pool-size needs RMM: pip install rmm-cu12 (or rmm-cu13)")
    if not config.workers.nanny:
        raise LaunchError(
            f"{wanted[0]} applies to dask-cuda's workers, which run behind a nanny: "
            "drop --no-nanny"
        )
    if not uses_dask_cuda(role.gpu, role.pin, config.workers.nanny):
        where = "the CPU" if role.gpu is None else f"a GPU pinned by {role.pin}"
        raise LaunchError(
            f"{wanted[0]} applies to dask-cuda's workers on NVIDIA GPUs, but the workers "
            f"on {role.host} run on {where}: drop {wanted[0]}"
        )


def check_own_path_to_write(path: str | Path | None, option: str) -> None:
    """A file the job will write (--scheduler-file, --status-file) is the
    user's to write: said now, not once the job has run."""
    if path is None:
        return
    problem = write_problem(Path(path))
    if problem:
        raise LaunchError(f"{option} {path} {problem}: give a path of your own")


def preflight(role: Role, config: Config, interface: str | None, scratch: str) -> None:
    """``interface``, ``scratch``: those of the role's node."""
    check_interface(interface)
    check_import_path(sys.path, role.host)
    if role.kind == "driver":
        check_own_path_to_write(config.run.scheduler_file, "--scheduler-file")
        check_own_path_to_write(config.run.status_file, "--status-file")
        check_time_left(deadline_of_this_job(config.run.walltime), config.run.walltime_margin)
    if role.kind == "driver" and config.run.script:
        check_script(config.run.script)
    elif role.kind == "driver" and config.run.jupyterlab:
        check_jupyterlab()
    if role.kind in ("scheduler", "worker"):
        check_modules(config.workers.pre_import, role.host)
    if role.kind == "worker":
        check_local_directory(scratch)
        check_dask_cuda(role, config)
