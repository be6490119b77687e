"""Where a job's folders go by default: the node-local scratch (for
spilled data) and the run's log folder, by name; nothing is made here."""
from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from start_daskmpi.plan.sites import Site, this_site

# Where a batch system keeps the job id, which names the run's log folder.
JOB_ID_VARIABLES = ("COBALT_JOBID", "PBS_JOBID", "SLURM_JOB_ID", "LSB_JOBID", "FLUX_JOB_ID")
# Node-local scratch on the machines we know, tried after $TMPDIR and before /tmp.
NODE_SCRATCH = ("/local/scratch", "/raid/scratch")


def is_writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def default_local_directory(
    environ: Mapping[str, str],
    site: Site | None = None,
    is_writable: Callable[[str], bool] = is_writable_dir,
) -> str:
    """Node-local scratch for spilling: $TMPDIR (batch systems point it at the
    node's own disk), the site's scratch, the usual places, /tmp."""
    user = environ.get("USER", "")
    scratch = [path.format(user=user) for path in site.scratch] if site else []
    candidates = [environ.get("TMPDIR", ""), *scratch, *NODE_SCRATCH, "/tmp"]
    return next((path for path in candidates if path and is_writable(path)), "/tmp")


def local_directory(option: str | None) -> str:
    """--local-directory, else the default; the site is looked up only then."""
    return option or default_local_directory(os.environ, this_site())


def default_log_dir(environ: Mapping[str, str], home: Path, now: datetime.datetime) -> Path:
    job = next((environ[v] for v in JOB_ID_VARIABLES if environ.get(v)), None)
    name = job.replace("/", "_") if job else now.strftime("%Y%m%d-%H%M%S")
    return home / "dask_logs" / name
