"""A page of the scheduler's HTTP server, from a script on its node: the
launcher serves it on a Unix socket in the scheduler's private folder, the
folder that holds its scratch (``dask-scratch-space/scheduler-*``)."""
from __future__ import annotations

import http.client
import socket
from pathlib import Path


def socket_path(client) -> str:
    return client.run_on_scheduler(
        lambda dask_scheduler: str(Path(dask_scheduler.local_directory).parents[1]
                                   / "dashboard.sock"))


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("127.0.0.1", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def page(client, path: str) -> tuple[int, str]:
    connection = UnixConnection(socket_path(client))
    try:
        connection.request("GET", "/" + path.lstrip("/"))
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()
