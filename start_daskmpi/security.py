"""TLS for one job: its credentials made on rank 0, sent to the other ranks
over MPI, and written where the job's own clients find them."""
from __future__ import annotations

import os
from pathlib import Path

from distributed import Security

from .errors import LaunchError

# The PEM fields of a distributed.Security: one job's CA, certificates and keys.
TLS_FIELDS = (
    "tls_ca_file", "tls_client_key", "tls_client_cert", "tls_scheduler_key",
    "tls_scheduler_cert", "tls_worker_key", "tls_worker_cert",
)


def make_credentials(tls: bool) -> dict[str, str] | None:
    """A CA, certificate and key made for this job only, as PEM text to send to
    the other ranks over MPI (never through a shared file system); None without TLS."""
    if not tls:
        return None
    try:
        made = Security.temporary()
    except ImportError:  # distributed makes them with the cryptography package
        raise LaunchError(
            "TLS, the default, needs the cryptography package: pip install cryptography, "
            "or run with --no-tls on a machine where you trust everyone"
        ) from None
    return {field: getattr(made, field) for field in TLS_FIELDS}


def security_from(credentials: dict[str, str] | None) -> Security:
    if credentials is None:
        return Security()  # Dask's own TLS configuration, if any, still applies
    return Security(require_encryption=True, **credentials)


def write_client_credentials(credentials: dict[str, str], folder: Path) -> dict[str, str]:
    """Write what a client needs (the CA, a certificate and its key) into a
    user-only folder; return the DASK_* variables that make Client() use them,
    for the script's subprocesses and JupyterLab's kernels."""
    folder.mkdir(mode=0o700, exist_ok=True)
    files = {
        "CA_FILE": ("ca.pem", credentials["tls_ca_file"]),
        "CLIENT__CERT": ("client-cert.pem", credentials["tls_client_cert"]),
        "CLIENT__KEY": ("client-key.pem", credentials["tls_client_key"]),
    }
    variables = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    for key, (name, text) in files.items():
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        variables[f"DASK_DISTRIBUTED__COMM__TLS__{key}"] = str(path)
    return variables
