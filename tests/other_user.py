"""Acting as another user of the machine: the existing unprivileged user
``nobody``, through setpriv, as root; skipped elsewhere with the reason."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys

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


def as_other_user(code: str, *args: str) -> subprocess.CompletedProcess:
    """Python ``code`` run as the other user, with ``args``; its own environment."""
    user = pwd.getpwnam(NOBODY)
    return subprocess.run(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
         sys.executable, "-c", code, *args],
        capture_output=True, text=True, timeout=60, cwd="/",
        # Its own environment, but for where this Python finds its packages.
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent",
             **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}},
    )
