"""Who can change a file or a folder, and the rules the job keeps by it: what
it reads as trusted (a scheduler file, a client.env, the folders on sys.path)
no one else can change, and what it writes is created fresh, never through a
link, never over another user's file.

Another user can change a path when they own it, or can write to it or to a
folder above it: a folder's writers can replace what is in it.  A sticky
folder (/tmp) lets others add entries but not replace one of ours: fine above
our file, not as a folder whose every entry we trust (sys.path's).  Pure but
for lstat: no Dask, no MPI.
"""
from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from start_daskmpi.errors import LaunchError

ROOT = 0


@dataclass(frozen=True)
class Trusted:
    """The owners and groups that may change what the job trusts."""

    uids: frozenset[int]
    gids: frozenset[int]

    def __or__(self, other: Trusted) -> Trusted:
        return Trusted(self.uids | other.uids, self.gids | other.gids)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"


def own_private_group(uid: int, gid: int) -> bool:
    """Whether ``gid`` is a group of this user alone, as systems with user
    private groups make one per user (named after the user, no other member):
    its write bit (umask 002) lets no one else in."""
    try:
        group, name = grp.getgrgid(gid), pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return group.gr_name == name and set(group.gr_mem) <= {name}


def the_user() -> Trusted:
    """This user, root, and the user's private group."""
    uid, gid = os.geteuid(), os.getegid()
    groups = frozenset({gid}) if own_private_group(uid, gid) else frozenset()
    return Trusted(frozenset({uid, ROOT}), groups)


def writers_problem(found: os.stat_result, trusted: Trusted, entries_too: bool) -> str | None:
    """Why someone not ``trusted`` can change what ``found`` describes; None if
    no one can.  ``entries_too``: whoever may add an entry to this folder
    counts (a sticky bit does not stop them)."""
    mode = found.st_mode
    if found.st_uid not in trusted.uids:
        return f"belongs to {user_name(found.st_uid)}"
    if stat.S_ISLNK(mode):  # a link's own mode means nothing: its folder decides
        return None
    sticky = stat.S_ISDIR(mode) and mode & stat.S_ISVTX and not entries_too
    if mode & stat.S_IWOTH and not sticky:
        return f"can be changed by every user (mode {stat.S_IMODE(mode):o})"
    if mode & stat.S_IWGRP and found.st_gid not in trusted.gids and not sticky:
        return (f"can be changed by group {group_name(found.st_gid)} "
                f"(mode {stat.S_IMODE(mode):o})")
    return None


def folders_above(path: Path) -> Iterator[Path]:
    """The folders above ``path`` (absolute), from the nearest up to /, as
    written and, where a link on the way leads elsewhere, as resolved too."""
    real = Path(os.path.realpath(path.parent))
    yield from dict.fromkeys([*path.parents, real, *real.parents])


def chain_problem(path: Path, trusted: Trusted) -> tuple[Path, str] | None:
    """The first folder above ``path`` that someone not ``trusted`` can change,
    and why; None if there is none."""
    for folder in folders_above(path):
        try:
            found = os.lstat(folder)
        except FileNotFoundError:
            continue  # a missing folder: whoever can write the one above decides
        problem = writers_problem(found, trusted, entries_too=False)
        if problem:
            return folder, problem
    return None


def not_own_file(found: os.stat_result) -> str | None:
    """Why what ``found`` describes (lstat's) is no plain file of this user's."""
    if found.st_uid != os.geteuid():
        return f"belongs to {user_name(found.st_uid)}"
    if stat.S_ISLNK(found.st_mode):
        return "is a link"
    if not stat.S_ISREG(found.st_mode):
        return "is not a file"
    return None


def own_file_problem(path: Path, trusted: Trusted | None = None) -> str | None:
    """Why ``path`` is not a file of this user's that only they can change:
    the file itself, then each folder above it; None if it is.  OSError where
    it cannot be looked at (missing, a folder closed to this user)."""
    trusted = trusted or the_user()
    found = os.lstat(path)
    problem = not_own_file(found) or writers_problem(found, trusted, entries_too=True)
    if problem:
        return problem
    above = chain_problem(path.absolute(), trusted)
    return f"is in {above[0]}, which {above[1]}" if above else None


def read_own_file(path: Path, what: str) -> str:
    """The text of ``path``, once it is known to be this user's own, read
    through no link.  LaunchError, one line, where it is another user's or
    others can change it; OSError where it cannot be read."""
    problem = own_file_problem(path)
    if problem:
        raise LaunchError(f"{what} {path} {problem}: the job trusts only a file of yours "
                          "that no one else can change")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as f:
        if os.fstat(f.fileno()).st_uid != os.geteuid():  # swapped since: refuse all the same
            raise LaunchError(f"{what} {path} changed hands while it was read")
        return f.read()


def write_problem(path: Path) -> str | None:
    """Why this user may not write ``path``: an existing one must be their own
    file (not a link); the folders above, theirs or root's and closed to
    others (a sticky one, such as /tmp, keeps others from replacing it)."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        found = None
    except OSError as e:
        return e.strerror
    problem = not_own_file(found) if found is not None else None
    if problem:
        return problem
    above = chain_problem(path.absolute(), the_user())
    return f"is in {above[0]}, which {above[1]}" if above else None


def write_own_file(path: Path, text: str, what: str) -> None:
    """Write ``path`` whole, user-only: a new file made in its folder (never
    through a link, never half-written) then moved over the path, which
    replaces a link there rather than follow it.  LaunchError, one line,
    where the path is not the user's to write."""
    problem = write_problem(path)
    if problem:
        raise LaunchError(f"{what} {path} {problem}: give a path of your own")
    try:
        fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise LaunchError(f"cannot write {what} {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(partial, path)
    except OSError as e:
        with_reason = "another user's file took its place" if e.errno == errno.EPERM \
            else e.strerror
        raise LaunchError(f"cannot write {what} {path}: {with_reason}") from None
    finally:
        if os.path.lexists(partial):
            os.unlink(partial)


def remove_own_file(path: Path) -> str | None:
    """Remove ``path`` if it is still this user's own file; why not, where it
    could not be (None: removed, or gone already)."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return e.strerror
    if stat.S_ISLNK(found.st_mode) or found.st_uid != os.geteuid():
        return "it is no longer yours (left in place)"
    try:
        os.unlink(path)
    except OSError as e:
        return e.strerror
    return None


# --- sys.path ------------------------------------------------------------------

def interpreter_writers() -> Trusted:
    """Whoever can change the Python that runs the job (its owner, a group that
    may write its folders: a site's software stack): they can change the
    interpreter itself, so a folder only they can change adds no one."""
    owners, groups = set(), set()
    prefix = Path(os.path.realpath(sys.base_prefix))
    for folder in (prefix, *prefix.parents):
        try:
            found = os.lstat(folder)
        except OSError:
            continue
        owners.add(found.st_uid)
        if found.st_mode & stat.S_IWGRP:
            groups.add(found.st_gid)
    return Trusted(frozenset(owners), frozenset(groups))


def path_entry_problem(entry: str, trusted: Trusted) -> str | None:
    """Why someone not ``trusted`` could put a module in sys.path's ``entry``:
    the folder itself (no one else may add to it, sticky or not), then each
    folder above it.  An entry that does not exist could be made by whoever
    may add to the nearest folder above it that does."""
    path = Path(os.path.abspath(entry or os.curdir))
    existing = next((p for p in (path, *path.parents) if os.path.lexists(p)), Path("/"))
    try:
        found = os.lstat(existing)
    except OSError:
        return None  # not this user's to look at: Python cannot import from it either
    problem = writers_problem(found, trusted, entries_too=True)
    if problem:
        return problem if existing == path else f"does not exist, and {existing} {problem}"
    if stat.S_ISLNK(found.st_mode):
        return path_entry_problem(os.path.realpath(path), trusted)
    above = chain_problem(existing, trusted)
    return f"is in {above[0]}, which {above[1]}" if above else None


def check_import_path(entries: Iterable[str], host: str) -> None:
    """Each folder on sys.path is one that only this user, root or whoever can
    change the interpreter can change: another user's module there would be
    imported by a task (a graph naming ``statistics``, say) and run as you."""
    trusted = the_user() | interpreter_writers()
    for entry in dict.fromkeys(entries):
        problem = path_entry_problem(entry, trusted)
        if problem:
            raise LaunchError(
                f"{entry or os.getcwd()} on Python's import path (sys.path, on {host}) "
                f"{problem}: another user could put a module there that your job would "
                "import; remove it from PYTHONPATH, or run from a folder of your own"
            )
