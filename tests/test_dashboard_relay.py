"""The dashboard relay (start_daskmpi/driver/dashboard_relay.py) on loopback, without
MPI: both ends with one job's credentials, a server standing in for the
dashboard, and clients that hold no certificate."""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading

import pytest
from distributed import Security

from start_daskmpi.driver.dashboard_relay import near_end, serve_far_end
from start_daskmpi.plan.ports import Endpoint, loopback_for, parse_host_port


@pytest.mark.parametrize("bound, reached", [
    ("", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("127.0.0.1", "127.0.0.1"),
    ("10.1.2.3", "10.1.2.3"),
])
def test_the_far_end_reaches_the_dashboard_where_it_listens(bound, reached):
    assert loopback_for(bound) == reached


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A stand-in for the dashboard: sends back what comes while it comes, both
    ways at once, as a WebSocket may."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def relayed(security: Security, folder):
    """The stand-in dashboard on a socket in ``folder``, as the scheduler serves
    it, the far end in front of it; yields the far end's address."""
    path = str(folder / "dashboard.sock")
    dashboard = await asyncio.start_unix_server(echo, path)
    far, address = await serve_far_end(
        "127.0.0.1", Endpoint(socket=path), security.get_listen_args("scheduler")["ssl_context"]
    )
    async with dashboard, far:
        yield address


def through_near_end(security: Security, payload: bytes, folder) -> bytes:
    """Send ``payload`` through both ends, from a thread as the driver does."""
    async def exchange(far_end: str) -> bytes:
        loop = asyncio.get_running_loop()
        context = security.get_connection_args("client")["ssl_context"]

        def client() -> bytes:
            with near_end(folder, far_end, context) as here, \
                    socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(30)
                sock.connect(here.socket)
                sender = threading.Thread(target=sock.sendall, args=(payload,))
                sender.start()
                answer = b""
                while len(answer) < len(payload):
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        break
                    answer += chunk
                sender.join()
                return answer

        return await loop.run_in_executor(None, client)

    async def main() -> bytes:
        async with relayed(security, folder) as far_end:
            return await exchange(far_end)

    return asyncio.run(asyncio.wait_for(main(), 60))


def test_bytes_pass_both_ways_intact(tmp_path):
    payload = os.urandom(3 * 1024 * 1024)
    assert through_near_end(Security.temporary(), payload, tmp_path) == payload


def tcp_listeners() -> set:
    import psutil

    return {c.laddr for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.pid == os.getpid()}


def test_the_near_end_listens_on_a_socket_in_its_folder_and_on_no_port(tmp_path):
    """JupyterLab's proxy reaches the dashboard through it: a TCP port, even on
    loopback, would relay the dashboard to every user of the node."""
    import stat
    from pathlib import Path

    context = Security.temporary().get_connection_args("client")["ssl_context"]
    before = tcp_listeners()
    with near_end(tmp_path, "127.0.0.1:1", context) as here:
        assert Path(here.socket).parent == tmp_path and here.port is None
        assert stat.S_ISSOCK(os.stat(here.socket).st_mode)
        assert tcp_listeners() == before


def test_the_far_end_gives_nothing_without_the_jobs_certificate(tmp_path):
    job, other_job = Security.temporary(), Security.temporary()

    def ask(address: str, context: ssl.SSLContext | None) -> bytes:
        host, port = parse_host_port(address)
        try:
            with socket.create_connection((host, port), timeout=10) as raw, \
                    (context.wrap_socket(raw) if context else raw) as sock:
                sock.sendall(b"GET /status HTTP/1.0\r\n\r\n")
                return sock.recv(1024)
        except (OSError, ssl.SSLError):
            return b""

    no_certificate = ssl.create_default_context()
    no_certificate.check_hostname, no_certificate.verify_mode = False, ssl.CERT_NONE
    another_jobs = other_job.get_connection_args("client")["ssl_context"]
    another_jobs.check_hostname, another_jobs.verify_mode = False, ssl.CERT_NONE
    own = job.get_connection_args("client")["ssl_context"]

    async def main() -> list[bytes]:
        async with relayed(job, tmp_path) as address:
            loop = asyncio.get_running_loop()
            return [await loop.run_in_executor(None, ask, address, context)
                    for context in (None, no_certificate, another_jobs, own)]

    plain, anonymous, foreign, ours = asyncio.run(asyncio.wait_for(main(), 60))
    assert (plain, anonymous, foreign) == (b"", b"", b"")
    assert ours.startswith(b"GET /status")  # the stand-in's echo


def test_a_dashboard_gone_closes_the_connection_at_once():
    security = Security.temporary()
    port = free_port()  # nothing listens there

    async def main() -> bytes:
        far, address = await serve_far_end(
            "127.0.0.1", Endpoint(port=port), security.get_listen_args("scheduler")["ssl_context"]
        )
        async with far:
            host, far_port = parse_host_port(address)
            context = security.get_connection_args("client")["ssl_context"]
            reader, writer = await asyncio.open_connection(host, far_port, ssl=context)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            answer = await reader.read()
            writer.close()
            return answer

    assert asyncio.run(asyncio.wait_for(main(), 30)) == b""
