"""The job's credentials, without MPI: each rank's key certified by the root's
authority (through a communicator of threads), the Security each process gets,
the client's files and where private files go."""
from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from start_daskmpi.security.private import (
    private_files,
    private_folder,
    remove_private,
    runtime_folder,
)
from start_daskmpi.security.tls import (
    Credentials,
    certificate_end,
    certify_ranks,
    new_key,
    security_from,
    write_client_credentials,
)


class ThreadWorld:
    """The two collectives certify_ranks uses, over threads standing for ranks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.slots: list = [None] * size
        self.barrier = threading.Barrier(size, timeout=30)  # a rank that failed: no hang

    def rank(self, rank: int) -> RankOf:
        return RankOf(self, rank)


class RankOf:
    def __init__(self, world: ThreadWorld, rank: int) -> None:
        self.world, self.rank, self.size = world, rank, world.size

    def gather(self, value, root):
        self.world.slots[self.rank] = value
        self.world.barrier.wait()
        gathered = list(self.world.slots) if self.rank == root else None
        self.world.barrier.wait()
        return gathered

    def scatter(self, values, root):
        if self.rank == root:
            self.world.slots = list(values)
        self.world.barrier.wait()
        mine = self.world.slots[self.rank]
        self.world.barrier.wait()
        return mine


NAMES = ["scheduler", "client", "n0-gpu0"]


@pytest.fixture(scope="module")
def certified():
    """Each of three ranks' key and the credentials rank 0's authority gave it."""
    world = ThreadWorld(len(NAMES))
    keys = [new_key() for _ in NAMES]
    with ThreadPoolExecutor(len(NAMES)) as pool:
        credentials = list(pool.map(
            lambda rank: certify_ranks(world.rank(rank), keys[rank], NAMES, root=0),
            range(len(NAMES)),
        ))
    return keys, credentials


def certificate_of(credentials: Credentials) -> x509.Certificate:
    return x509.load_pem_x509_certificate(credentials.certificate.encode())


def test_each_rank_gets_its_own_key_certified_by_one_authority(certified):
    keys, credentials = certified
    ca = x509.load_pem_x509_certificate(credentials[0].ca.encode())
    assert {c.ca for c in credentials} == {credentials[0].ca}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key, name, mine in zip(keys, NAMES, credentials, strict=True):
        certificate = certificate_of(mine)
        certificate.verify_directly_issued_by(ca)
        assert certificate.subject.rfc4514_string() == f"CN={name}"
        assert certificate.public_key().public_numbers() == key.public_key().public_numbers()
        private = serialization.load_pem_private_key(mine.key.encode(), password=None)
        assert private.private_numbers() == key.private_numbers()  # its own, unchanged
        assert not certificate.extensions.get_extension_for_class(
            x509.BasicConstraints).value.ca
        start = certificate.not_valid_before_utc
        assert start < datetime.datetime.now(datetime.timezone.utc) < \
            certificate.not_valid_after_utc


def test_certificates_end_with_the_job_the_batch_system_names(monkeypatch):
    now = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.timezone.utc)
    end = int((now + datetime.timedelta(hours=2)).timestamp())
    job_end = certificate_end({"SLURM_JOB_END_TIME": str(end)}, now)
    assert now + datetime.timedelta(hours=2) <= job_end <= now + datetime.timedelta(hours=3)
    assert certificate_end({}, now) == now + datetime.timedelta(days=7)


def tls_handshake(server: Credentials, client: Credentials) -> str:
    """A TLS handshake on loopback with the contexts distributed makes from
    security_from(), as a scheduler and as a client; the client's subject, as
    the server saw it."""
    server_context = security_from(server).get_listen_args("scheduler")["ssl_context"]
    client_context = security_from(client).get_connection_args("client")["ssl_context"]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)  # a client that never came: no hang
        seen: dict = {}

        def serve() -> None:
            connection, _ = listener.accept()
            try:
                with server_context.wrap_socket(connection, server_side=True) as tls:
                    seen["peer"] = tls.getpeercert()
                    tls.sendall(b"ok")
            except ssl.SSLError as e:  # the client's refusal, seen from here
                seen["error"] = e

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                client_context.wrap_socket(raw) as tls:
            assert tls.recv(2) == b"ok"
        thread.join(10)
    return dict(pair[0] for pair in seen["peer"]["subject"])["commonName"]


def test_ranks_of_one_job_handshake_with_each_other(certified):
    _, credentials = certified
    assert tls_handshake(server=credentials[0], client=credentials[1]) == "client"


def test_security_of_a_process_requires_encryption_in_every_role(certified):
    _, credentials = certified
    mine = credentials[2]
    security = security_from(mine)
    assert security.require_encryption is True
    assert security.tls_ca_file == mine.ca
    for role in ("scheduler", "worker", "client"):
        assert getattr(security, f"tls_{role}_cert") == mine.certificate
        assert getattr(security, f"tls_{role}_key") == mine.key
    assert not security_from(None).require_encryption  # --no-tls: Dask's own settings


def test_another_jobs_credentials_fail_the_handshake(certified):
    _, credentials = certified
    world = ThreadWorld(1)
    other = certify_ranks(world.rank(0), new_key(), ["client"], root=0)
    with pytest.raises(ssl.SSLCertVerificationError):  # it trusts its own authority only
        tls_handshake(server=credentials[0], client=other)


def test_the_clients_files_are_private_and_named_in_dasks_variables(certified, tmp_path):
    _, credentials = certified
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    variables = write_client_credentials(credentials[1], folder)
    prefix = "DASK_DISTRIBUTED__COMM__"
    assert variables == {
        f"{prefix}REQUIRE_ENCRYPTION": "True",
        f"{prefix}TLS__CA_FILE": str(folder / "ca.pem"),
        f"{prefix}TLS__CLIENT__CERT": str(folder / "client-cert.pem"),
        f"{prefix}TLS__CLIENT__KEY": str(folder / "client-key.pem"),
    }
    assert [(folder / n).read_text() for n in ("ca.pem", "client-cert.pem", "client-key.pem")] \
        == [credentials[1].ca, credentials[1].certificate, credentials[1].key]
    assert {stat.S_IMODE((folder / n).stat().st_mode) for n in os.listdir(folder)} == {0o600}
    with pytest.raises(FileExistsError):  # never over a file that is there
        write_client_credentials(credentials[1], folder)


@pytest.fixture
def short_folder():
    """A folder of a short path, as /run/user/UID is: a socket fits in it."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="run-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_private_files_go_to_the_users_runtime_folder_where_there_is_one(
    tmp_path, monkeypatch, short_folder
):
    runtime = short_folder
    elsewhere = tmp_path / "tmp"
    elsewhere.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(elsewhere))
    assert runtime_folder({"XDG_RUNTIME_DIR": str(runtime)}) == str(runtime)
    assert runtime_folder({"XDG_RUNTIME_DIR": str(tmp_path / "gone")}) == str(elsewhere)
    assert runtime_folder({}) == str(elsewhere)
    folder = private_folder({"XDG_RUNTIME_DIR": str(runtime)})
    assert folder.parent == runtime and stat.S_IMODE(folder.stat().st_mode) == 0o700
    remove_private(folder)
    assert not folder.exists()
    remove_private(None)  # nothing made, nothing to remove


def test_private_files_for_a_block_are_gone_after_it(short_folder):
    with private_files({"XDG_RUNTIME_DIR": str(short_folder)}) as folder:
        assert folder.parent == short_folder and stat.S_IMODE(folder.stat().st_mode) == 0o700
        (folder / "token").write_text("x")
    assert not folder.exists() and list(short_folder.iterdir()) == []


def test_a_private_folder_too_deep_for_a_socket_goes_to_tmp():
    """A Unix socket's path has at most 107 bytes: the dashboard's and the
    relay's sockets must fit in the private folder."""
    from start_daskmpi.security.private import LONGEST_SOCKET, SOCKET_PATH_MAX, socket_folder_base

    assert socket_folder_base("/run/user/1000") == "/run/user/1000"
    deep = "/scratch/" + "d" * 80
    assert socket_folder_base(deep) == "/tmp"
    fits = "/" + "f" * (SOCKET_PATH_MAX - len("/start_daskmpi-xxxxxxxx/" + LONGEST_SOCKET) - 1)
    assert socket_folder_base(fits) == fits and socket_folder_base(fits + "f") == "/tmp"


def test_the_authoritys_certificate_and_its_limits(monkeypatch):
    """The CA signs end certificates only (path length 0), critically; every
    certificate starts CLOCK_SKEW before now in UTC, whatever the local zone."""
    import time

    from start_daskmpi.security.tls import CLOCK_SKEW, job_authority

    monkeypatch.setenv("TZ", "America/Chicago")  # not UTC: a naive now would be off by hours
    time.tzset()
    try:
        authority = job_authority()
        mine = authority.credentials("client")
    finally:
        monkeypatch.undo()
        time.tzset()
    ca = x509.load_pem_x509_certificate(authority.certificate.encode())
    assert ca.subject.rfc4514_string() == "CN=start_daskmpi job CA" == \
        certificate_of(mine).issuer.rfc4514_string()
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.path_length == 0
    assert certificate_of(mine).extensions.get_extension_for_class(
        x509.BasicConstraints).critical
    now = datetime.datetime.now(datetime.timezone.utc)
    for certificate in (ca, certificate_of(mine)):
        start = certificate.not_valid_before_utc
        assert now - CLOCK_SKEW - datetime.timedelta(minutes=1) < start <= now - CLOCK_SKEW


def test_a_job_end_now_or_past_is_no_end():
    now = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.timezone.utc)
    week = now + datetime.timedelta(days=7)
    assert certificate_end({"SLURM_JOB_END_TIME": str(int(now.timestamp()))}, now) == week
    assert certificate_end({"COBALT_ENDTIME": "soon"}, now) == week


def test_without_cryptography_tls_is_one_line(monkeypatch):
    import sys

    from start_daskmpi.errors import LaunchError
    from start_daskmpi.security.tls import NO_CRYPTOGRAPHY

    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.asymmetric", None)
    with pytest.raises(LaunchError) as raised:
        new_key()
    assert str(raised.value) == NO_CRYPTOGRAPHY and "pip install" in NO_CRYPTOGRAPHY


def test_a_private_file_is_0600_whatever_the_umask_and_never_through_a_link(tmp_path):
    from start_daskmpi.security.private import write_private

    old = os.umask(0)
    try:
        write_private(tmp_path / "key.pem", "secret")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):  # O_EXCL refuses a link, even one to nothing
        write_private(tmp_path / "link", "secret")
    assert not (tmp_path / "elsewhere").exists()


def test_encryption_is_required_whatever_dasks_configuration_says(certified):
    import dask

    with dask.config.set({"distributed.comm.require-encryption": False}):
        assert security_from(certified[1][0]).require_encryption is True


def test_removing_what_is_gone_already_is_no_error(tmp_path):
    remove_private(tmp_path / "gone")


def test_the_authority_ends_with_the_job_the_batch_system_names(monkeypatch):
    from start_daskmpi.security.tls import CLOCK_SKEW, job_authority

    end = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + \
        datetime.timedelta(hours=3)
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(end.timestamp())))
    ca = x509.load_pem_x509_certificate(job_authority().certificate.encode())
    assert ca.not_valid_after_utc == end + CLOCK_SKEW
