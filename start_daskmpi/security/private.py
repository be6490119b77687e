"""Folders and files only this user can open: each process's private folder
(its credentials, sockets, its servers' scratch), the workers' scratch in
the node's scratch, the run's log folder; made new, never through a link."""
from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.folders import default_log_dir, is_writable_dir, local_directory


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


def runtime_folder(environ: Mapping[str, str]) -> str:
    """Where a node keeps this user's private files: the user's runtime folder
    where there is one, else the node's temporary folder."""
    runtime = environ.get("XDG_RUNTIME_DIR")
    return runtime if runtime and os.path.isdir(runtime) else tempfile.gettempdir()


def private_folder(environ: Mapping[str, str]) -> Path:
    """A fresh folder of this user's alone, on this node, where a Unix socket
    fits too: a process's credentials, sockets and scratch of its servers."""
    return fresh_private_folder(socket_folder_base(runtime_folder(environ)))


def private_files(environ: Mapping[str, str]) -> contextlib.AbstractContextManager[Path]:
    """A private_folder for the block, removed after it."""
    return private_folder_for_block(socket_folder_base(runtime_folder(environ)))


def write_private(path: Path, text: str) -> None:
    """A new file, 0600 from the start; never through a link, never over a file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def remove_private(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
