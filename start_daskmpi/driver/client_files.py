"""The files a job leaves for the user's other clients while it runs, in this
one place: the driver writes them, ``--join`` and ``connect()`` read them.

- ``client.env``, in the driver's private folder: the variables that point
  ``Client()`` at the cluster (``export NAME=value`` lines, for a shell).
- ``--scheduler-file``: the scheduler's identity, as distributed writes it
  (every client reads its "address"), with a note of where ``client.env`` is.

Each is read only once known to be the user's own file that no one else can
change (ownership.py): a file another user could write would send the
user's workers, or the user's client, with the user's credentials, to their
scheduler.
"""
from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from start_daskmpi.errors import LaunchError
from start_daskmpi.security.ownership import read_own_file

CLIENT_ENV = "client.env"
NOTE = "start_daskmpi"  # the key of the job's note in its scheduler file
ADDRESS_VARIABLE = "DASK_SCHEDULER_ADDRESS"


@dataclass(frozen=True)
class ClusterFiles:
    """What another client needs of a running cluster."""

    address: str
    client_env: Path | None  # its client.env, where it is known


def client_env_text(variables: Mapping[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in variables.items())


def client_variables(text: str) -> dict[str, str]:
    """The variables of a client.env (lines ``export NAME=value``, shell-quoted)."""
    variables = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            variables[name] = value
    return variables


def scheduler_file_text(identity: dict[str, Any], client_env: Path) -> str:
    """The scheduler file: the scheduler's identity, with the note of where
    the job's client.env is."""
    return json.dumps({**identity, NOTE: {"client_env": str(client_env)}}, indent=2)


def parse_cluster_file(text: str, path: Path) -> ClusterFiles | None:
    """The cluster a scheduler file, or a client.env, names; None if neither."""
    try:
        data = json.loads(text)
    except ValueError:
        address = client_variables(text).get(ADDRESS_VARIABLE)
        return ClusterFiles(address, path) if address else None
    if not isinstance(data, dict) or not isinstance(data.get("address"), str):
        return None
    note = data.get(NOTE)
    client_env = note.get("client_env") if isinstance(note, dict) else None
    return ClusterFiles(data["address"],
                        Path(client_env) if isinstance(client_env, str) else None)


def read_cluster_file(path: Path, asker: str) -> ClusterFiles:
    """The cluster that ``path`` (a scheduler file, or a client.env) names,
    from a file of the user's own; LaunchError, one line, where it names none.
    ``asker``: who reads it, for the message (--join, connect())."""
    try:
        text = read_own_file(path, asker)
    except OSError as e:
        raise LaunchError(f"{asker} {path}: {e.strerror}: give the --scheduler-file (or the "
                          "client.env) of a running job of yours") from None
    found = parse_cluster_file(text, path)
    if found is None:
        raise LaunchError(f"{asker} {path}: not a scheduler file (no address in it)")
    return found


def read_credentials(cluster: ClusterFiles, asker: str) -> Any:
    """The job's client credentials (security.Credentials), from files of the
    user's own; None for a cluster without TLS."""
    from start_daskmpi.security.tls import read_client_credentials

    if not cluster.address.startswith("tls://"):
        return None
    if cluster.client_env is None:
        raise LaunchError(
            f"{asker}: the cluster at {cluster.address} uses TLS, but its scheduler file does "
            "not say where its credentials are: start that job with start_daskmpi "
            "--scheduler-file FILE, and give that FILE"
        )
    try:
        text = read_own_file(cluster.client_env, f"{asker}: the credentials file")
        return read_client_credentials(client_variables(text), read_own_file)
    except (OSError, KeyError) as e:
        why = e.strerror if isinstance(e, OSError) else f"no {e} in it"
        raise LaunchError(
            f"{asker}: cannot read the credentials of the job at {cluster.address} "
            f"({cluster.client_env}: {why}): run this on a node that sees that folder (the "
            "first job's driver's), or give the first job a TMPDIR all nodes share"
        ) from None


def connect(path: str | os.PathLike[str], **client_options: Any) -> Any:
    """A ``distributed.Client`` of a running job's cluster, from another
    process of the user's (a shell, a notebook) on a node that sees the
    job's files: ``path`` is the job's --scheduler-file, or the client.env
    its start printed.  ``client_options`` go to Client (``timeout=``, ...).

        from start_daskmpi import connect
        client = connect("scheduler.json")
    """
    from distributed import Client

    from start_daskmpi.security.tls import security_from

    cluster = read_cluster_file(Path(path), "connect()")
    credentials = read_credentials(cluster, "connect()")
    return Client(cluster.address, security=security_from(credentials), **client_options)
