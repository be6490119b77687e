"""Acting as another user of the machine: the existing unprivileged user
``nobody``, through setpriv, as root; skipped elsewhere with the reason."""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

NOBODY = "nobody"


def other_user_reason() -> str | None:
    if os.geteuid() != 0:
        return "acting as another user needs root (setpriv)"
    if not shutil.which("setpriv"):
        return "acting as another user needs setpriv (util-linux)"
    try:
        pwd.getpwnam(NOBODY)
    except KeyError:
        return f"no user {NOBODY!r} on this machine"
    return None


AS_ANOTHER_USER = pytest.mark.skipif(other_user_reason() is not None,
                                     reason=str(other_user_reason()))


def other_user_command(code: str, *args: str) -> list[str]:
    user = pwd.getpwnam(NOBODY)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            sys.executable, "-c", code, *args]


def other_user_environment() -> dict[str, str]:
    """Its own environment, but for where this Python finds its packages."""
    return {"PATH": os.environ["PATH"], "HOME": "/nonexistent",
            **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}}


def as_other_user(code: str, *args: str) -> subprocess.CompletedProcess:
    """Python ``code`` run as the other user, with ``args``; its own environment."""
    return subprocess.run(other_user_command(code, *args), capture_output=True, text=True,
                          timeout=60, cwd="/", env=other_user_environment())


@contextlib.contextmanager
def other_user_running(code: str, *args: str) -> Iterator[subprocess.Popen]:
    """Python ``code`` running as the other user while the block runs, its
    output read once it ends; killed, by its pid, after the block."""
    process = subprocess.Popen(other_user_command(code, *args), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd="/",
                               env=other_user_environment(), start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait(30)


def first_line(process: subprocess.Popen) -> str:
    """The next line it prints (it says it is ready)."""
    return process.stdout.readline().strip()
