"""Where things go on a node: free ports for the scheduler, dashboard and
JupyterLab, and where a server listens (an Endpoint); the node-local scratch;
each process's private folder; the run's log folder."""
from __future__ import annotations

import contextlib
import datetime
import errno
import ipaddress
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import LaunchError
from .sites import Site, this_site

DEFAULT_SCHEDULER_PORT = 8786
DEFAULT_DASHBOARD_PORT = 8787  # the dashboard's port on your machine, where a socket serves it
DEFAULT_JUPYTER_PORT = 7787
PORT_SEARCH_SPAN = 100
# Where a batch system keeps the job id, which names the run's log folder.
JOB_ID_VARIABLES = ("COBALT_JOBID", "PBS_JOBID", "SLURM_JOB_ID", "LSB_JOBID", "FLUX_JOB_ID")
# Node-local scratch on the machines we know, tried after $TMPDIR and before /tmp.
NODE_SCRATCH = ("/local/scratch", "/raid/scratch")


def bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Tornado binds with SO_REUSEADDR, so a port in TIME_WAIT is free to it too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            # No IPv6 on this node: no one can hold the port there either.
            return family == socket.AF_INET6 and e.errno == errno.EADDRNOTAVAIL
    return True


def port_is_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound on ``host``; on loopback, on both loopbacks:
    a client that dials ``localhost`` may try ::1 first, and another user
    holding the port there would answer it."""
    loopback = ipaddress.ip_address(host).is_loopback if is_ip(host) else False
    hosts = [host, *(["::1", "127.0.0.1"] if loopback else [])]
    return all(bindable(each, port) for each in dict.fromkeys(hosts))


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def choose_port(
    requested: int | None,
    default: int,
    is_free: Callable[[int], bool],
    option: str,
) -> int:
    """An explicit port must be free; a default one that is taken (another user
    on a shared node) gives way to the next free port above it, else any."""
    if requested is not None:
        if requested and not is_free(requested):
            raise LaunchError(port_taken(requested, option))
        return requested
    for port in range(default, min(default + PORT_SEARCH_SPAN, 65536)):
        if is_free(port):
            return port
    return 0


def port_taken(port: int, option: str) -> str:
    return (
        f"port {port} of {option} is already in use on this node: "
        f"choose another, or leave {option} out to take a free one"
    )


def parse_host_port(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'HOST:PORT', ':PORT' (every interface), '[IPv6]:PORT', or a bare 'PORT'
    (on ``default_host``, as the dask CLI's bare port is on its default host)."""
    host, colon, port = text.rpartition(":")
    if not colon:
        host = default_host
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets: [{host}]:{port}")
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected [HOST]:PORT with a port 0-65535, got {text!r}")
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def loopback_for(host: str) -> str:
    """Where to reach a server bound to ``host`` from its own node."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def dashboard_address(requested: str, is_free: Callable[[str, int], bool]) -> str:
    """--dashboard-address, checked free (a port of 0: any)."""
    host, port = parse_host_port(requested)
    return join_host_port(host, choose_port(port, port, lambda p: is_free(host, p),
                                            "--dashboard-address"))


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens on its node: a Unix socket (in a private folder,
    so that only the user can connect), or a TCP host and port."""

    socket: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None

    @property
    def target(self) -> str:
        """As ``ssh -L PORT:TARGET`` names it."""
        return self.socket or join_host_port(self.host, self.port or 0)

    @property
    def local_port(self) -> int:
        """The port that stands for it on the user's machine, at the tunnel's
        near end, and in JupyterLab's proxy: its own, or the default."""
        return self.port or DEFAULT_DASHBOARD_PORT


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


def fresh_private_folder(base: str) -> Path:
    """A new folder under ``base`` that only this user can enter (mkdtemp's 0700):
    no one else can have made it, or put anything in it."""
    return Path(tempfile.mkdtemp(prefix="start_daskmpi-", dir=base))


# The longest path a Unix socket may have (sun_path, less its NUL), and the
# longest socket name of ours (dashboard_relay.py's near end).
SOCKET_PATH_MAX = 107
LONGEST_SOCKET = "dashboard-relay.sock"


def socket_folder_base(base: str) -> str:
    """``base``, unless a socket in a private folder there would be too long a
    path for a Unix socket: then /tmp (sticky: our 0700 folder in it is ours)."""
    sample = os.path.join(base, "start_daskmpi-xxxxxxxx", LONGEST_SOCKET)
    return base if len(os.fsencode(sample)) <= SOCKET_PATH_MAX else "/tmp"


@contextlib.contextmanager
def subfolder_for_block(parent: Path, name: str) -> Iterator[Path]:
    """``parent/name``, made new (0700) for the block, removed after it."""
    folder = parent / name
    folder.mkdir(mode=0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def private_folder_for_block(base: str) -> Iterator[Path]:
    """A fresh_private_folder for the block, removed after it."""
    folder = fresh_private_folder(base)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def private_scratch(option: str | None) -> contextlib.AbstractContextManager[Path]:
    """A private folder in the node's scratch (--local-directory, else the
    default), for workers' spilled data, which no one else can then read or
    swap; removed on exit."""
    return private_folder_for_block(local_directory(option))


def default_log_dir(environ: Mapping[str, str], home: Path, now: datetime.datetime) -> Path:
    job = next((environ[v] for v in JOB_ID_VARIABLES if environ.get(v)), None)
    name = job.replace("/", "_") if job else now.strftime("%Y%m%d-%H%M%S")
    return home / "dask_logs" / name


def private_dir(path: Path, what: str) -> Path:
    """``path`` as a folder only this user can enter: made so where new; one
    that exists must be a folder (not a link), this user's, closed to others,
    so that no one else can put or swap anything in it."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    except OSError as e:
        raise LaunchError(f"cannot create {what} {path}: {e.strerror}") from None
    found = path.lstat()
    if not stat.S_ISDIR(found.st_mode):
        raise LaunchError(f"{what} {path} is not a folder (a link?): give a folder of your own")
    if found.st_uid != os.geteuid():
        raise LaunchError(f"{what} {path} belongs to another user: give a folder of your own")
    if found.st_mode & 0o077:
        raise LaunchError(
            f"{what} {path} is open to others (mode {stat.S_IMODE(found.st_mode):o}): "
            "chmod 700 it, or give another folder"
        )
    if not is_writable_dir(str(path)):
        raise LaunchError(f"{what} {path} is not writable: choose another folder")
    return path


def make_log_dir(requested: Path | None) -> Path:
    """The run's log folder, user-only (private_dir): the logs name every
    address of the cluster.  A default folder that exists already (a second run
    in the same job) gets a numbered sibling instead of mixing two runs' logs."""
    if requested is not None:
        try:
            return private_dir(requested.expanduser(), "--log-dir")
        except RuntimeError:  # ~name of no user
            raise LaunchError(f"--log-dir {requested}: no such user's home: give a path") from None
    base = default_log_dir(os.environ, Path.home(), datetime.datetime.now())
    for attempt in range(1000):
        path = base if attempt == 0 else base.with_name(f"{base.name}.{attempt}")
        try:
            path.mkdir(mode=0o700, parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise LaunchError(
                f"cannot create the log folder {path}: {e.strerror}; use --log-dir"
            ) from None
    raise LaunchError(f"too many log folders named {base}.*: clean them up or use --log-dir")
