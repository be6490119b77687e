"""TLS for one job, with no secret shared: rank 0 makes a certificate
authority whose key never leaves its memory; every rank makes its own key, and
sends only the public half to rank 0, which signs a certificate for it.  So
the scheduler, each worker and the client have keys of their own, and only
public keys and certificates cross MPI.  The certificates last as long as the
job (its end, where the batch system says it, else a week).

The driver writes its client credentials, for the script's subprocesses and
JupyterLab's kernels, to a fresh private folder on its node (not the shared
home file system), and removes it when the job ends.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import Security

from start_daskmpi.errors import LaunchError
from start_daskmpi.security.private import write_private

# Where batch systems tell a job when it ends (seconds since the epoch).
JOB_END_VARIABLES = ("SLURM_JOB_END_TIME", "COBALT_ENDTIME")
DEFAULT_LIFETIME = datetime.timedelta(days=7)
CLOCK_SKEW = datetime.timedelta(minutes=10)  # nodes' clocks may differ this much
NO_CRYPTOGRAPHY = (
    "TLS, the default, needs the cryptography package: pip install cryptography, "
    "or run with --no-tls on a machine where you trust everyone"
)


@dataclass(frozen=True)
class Credentials:
    """One process's TLS identity: the job's CA certificate, its own
    certificate, and its own private key, which it never sends anywhere."""

    ca: str
    certificate: str
    key: str


def certificate_end(environ: Mapping[str, str], now: datetime.datetime) -> datetime.datetime:
    """When the job's certificates expire: the job's end, else a week from now."""
    for name in JOB_END_VARIABLES:
        if environ.get(name, "").isdigit():
            end = datetime.datetime.fromtimestamp(int(environ[name]), datetime.timezone.utc)
            if end > now:
                return end + CLOCK_SKEW
    return now + DEFAULT_LIFETIME


def new_key() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:  # distributed's TLS needs it too
        raise LaunchError(NO_CRYPTOGRAPHY) from None
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def private_pem(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Authority:
    """The job's certificate authority, in this process's memory only."""

    def __init__(self, expires: datetime.datetime) -> None:
        from cryptography import x509

        self.key = new_key()
        self.expires = expires
        self.name = self._name("start_daskmpi job CA")
        self.certificate = self._signed(
            self.key.public_key(), self.name,
            x509.BasicConstraints(ca=True, path_length=0),
        )

    @staticmethod
    def _name(common_name: str) -> Any:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def _signed(self, public_key: Any, subject: Any, constraints: Any) -> str:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(self.expires)
            .add_extension(constraints, critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, public_key_pem: str, name: str) -> str:
        """A certificate for the holder of ``public_key_pem``'s private key."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        public_key = serialization.load_pem_public_key(public_key_pem.encode())
        return self._signed(public_key, self._name(name),
                            x509.BasicConstraints(ca=False, path_length=None))

    def credentials(self, name: str) -> Credentials:
        """A key and certificate made here, for a process of this one's."""
        key = new_key()
        return Credentials(self.certificate, self.sign(public_pem(key), name), private_pem(key))


def job_authority() -> Authority:
    now = datetime.datetime.now(datetime.timezone.utc)
    return Authority(certificate_end(os.environ, now))


def certify_ranks(world: Any, key: Any, names: Sequence[str], root: int) -> Credentials:
    """This rank's credentials: ``key``, made here, with a certificate that
    ``root``'s authority signs for its public half, ``names[rank]`` in its
    subject.  Collective."""
    publics = world.gather(public_pem(key), root=root)
    signed = None
    if world.rank == root:
        authority = job_authority()
        signed = [(authority.certificate, authority.sign(public, name))
                  for public, name in zip(publics, names, strict=True)]
    ca, certificate = world.scatter(signed, root=root)
    return Credentials(ca, certificate, private_pem(key))


def security_from(credentials: Credentials | None) -> Security:
    """distributed's Security for a process with these credentials, in every
    role it plays (a worker rank's nanny, worker and reports to the scheduler)."""
    if credentials is None:
        return Security()  # Dask's own TLS configuration, if any, still applies
    own = {"key": credentials.key, "cert": credentials.certificate}
    return Security(
        require_encryption=True,
        tls_ca_file=credentials.ca,
        **{f"tls_{role}_{part}": pem for role in ("scheduler", "worker", "client")
           for part, pem in own.items()},
    )


# Each part of the client's credentials: its DASK_* variable, its file.
CLIENT_FILES = (("DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "ca.pem"),
                ("DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT", "client-cert.pem"),
                ("DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY", "client-key.pem"))


def write_client_credentials(credentials: Credentials, folder: Path) -> dict[str, str]:
    """Write the client's CA, certificate and key into ``folder`` (private_folder);
    return the DASK_* variables that make Client() use them."""
    variables = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    parts = (credentials.ca, credentials.certificate, credentials.key)
    for (variable, name), text in zip(CLIENT_FILES, parts, strict=True):
        write_private(folder / name, text)
        variables[variable] = str(folder / name)
    return variables


def read_client_credentials(
    variables: Mapping[str, str], read: Callable[[Path, str], str]
) -> Credentials:
    """The credentials write_client_credentials() wrote, from the variables it
    returned, each file read by ``read(path, what)`` (KeyError, OSError where
    they are not there to read)."""
    return Credentials(*(read(Path(variables[variable]), f"the credentials file {name}")
                         for variable, name in CLIENT_FILES))
