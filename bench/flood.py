"""The user's requests under another user's flood of connections.

    python bench/flood.py [--half-open 1500] [--slow 700] [--out bench/results/flood.json]

A job whose script, for --seconds, asks its cluster every 0.2 s for a task's
result and for the dashboard's /status page (through its private socket, as
the printed tunnel does), and records each answer's latency and each
failure.  Meanwhile, as another user (uid nobody, where this runs as root; as
this user otherwise), a flood: --half-open TCP connections spread over every
port the job's processes listen on (the scheduler's, the workers' and the
nannies' TLS ports, their HTTP ports), which never begin a handshake, and
--slow HTTP connections that send a header line every 5 s and never end
their headers (slowloris), to every HTTP port of theirs.  The same job runs once without the
flood, side by side; printed: requests, failures, median and worst latency.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from launch import Session, run_processes  # noqa: E402

JOB = """
import json, socket, sys, time
from distributed import get_client

seconds, dashboard = float(sys.argv[1]), sys.argv[2]
client = get_client()
print("READY", flush=True)

def page():
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(dashboard)
        sock.sendall(b"GET /status HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert b"Dask" in answer

record = {"task": [], "dashboard": [], "failed": []}
end = time.monotonic() + seconds
while time.monotonic() < end:
    for what, ask in (("task", lambda: client.submit(sum, [1, 2], pure=False).result(10)),
                      ("dashboard", page)):
        start = time.monotonic()
        try:
            ask()
            record[what].append(time.monotonic() - start)
        except Exception as e:
            record["failed"].append(f"{what}: {type(e).__name__}: {e}")
    time.sleep(0.2)
print("RECORD " + json.dumps(record), flush=True)
"""

FLOOD = """
import socket, sys, threading, time
ports, http_ports = (list(map(int, p.split(","))) if p else [] for p in sys.argv[1:3])
half_open, slow = int(sys.argv[3]), int(sys.argv[4])
held, failed = [], 0
for i in range(half_open):
    try:
        held.append(socket.create_connection(("127.0.0.1", ports[i % len(ports)]), 5))
    except OSError:
        failed += 1
slow_socks = []
for i in range(slow if http_ports else 0):
    try:
        s = socket.create_connection(("127.0.0.1", http_ports[i % len(http_ports)]), 5)
        s.sendall(b"GET /status HTTP/1.1\\r\\nHost: x\\r\\n")
        slow_socks.append(s)
    except OSError:
        failed += 1
print("FLOODING", len(held), len(slow_socks), "failed", failed, flush=True)
while True:  # a header line now and then, never the end of the headers
    time.sleep(5)
    for s in slow_socks:
        try:
            s.sendall(b"X-a: b\\r\\n")
        except OSError:
            pass
"""


def as_nobody() -> list[str]:
    """The flood's command prefix: another user where we are root."""
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]


def tls_ports(token: str, ports: set[int]) -> set[int]:
    """Of ``ports``, those that answer a plain HTTP request with nothing (TLS)."""
    import socket

    found = set()
    for port in ports:
        with socket.create_connection(("127.0.0.1", port), 5) as sock:
            sock.settimeout(2)
            sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            try:
                answered = sock.recv(10).startswith(b"HTTP")
            except OSError:
                answered = False
        if not answered:
            found.add(port)
    return found


def listening_ports(token: str) -> set[int]:
    pids = {p.pid for p in run_processes(token)}
    return {c.laddr.port for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids and c.laddr.ip == "127.0.0.1"}


def run(args: argparse.Namespace, flood: bool, folder: Path) -> dict:
    """One job; its record, and what the flood managed."""
    wrapper = folder / "wrapper.py"
    # The dashboard's socket is known only once the job prints it: the job's
    # script reads it from a file the bench writes then.
    wrapper.write_text(
        "import pathlib, sys, time\n"
        "path = pathlib.Path(sys.argv[2])\n"
        "while not path.exists(): time.sleep(0.05)\n"
        "sys.argv = [sys.argv[0], sys.argv[1], path.read_text()]\n"
        + JOB
    )
    handoff = folder / f"socket-{int(flood)}"
    options = ["--interface", "lo", "--gpus-per-node", "0", "--log-dir",
               str(folder / f"logs-{int(flood)}"), "--local-directory", str(folder / "scratch")]
    with Session([*options, str(wrapper), str(args.seconds), str(handoff)], np=args.ranks,
                 cwd=folder, env={"TMPDIR": "/tmp"}) as session:
        handoff.write_text(session.wait_for(r"-L 127\.0\.0\.1:\d+:(\S+\.sock) ")[1])
        session.wait_for("READY")
        flooded = None
        if flood:
            ports = listening_ports(session.token)
            http = sorted(ports - tls_ports(session.token, ports))
            flooder = subprocess.Popen(
                [*as_nobody(), sys.executable, "-c", FLOOD, ",".join(map(str, sorted(ports))),
                 ",".join(map(str, http)), str(args.half_open), str(args.slow)],
                stdout=subprocess.PIPE, text=True, start_new_session=True)
            try:
                flooded = flooder.stdout.readline().strip()
                record = session.wait_for(r"RECORD (.*)", timeout=args.seconds + 120)[1]
            finally:
                flooder.kill()
                flooder.wait(30)
        else:
            record = session.wait_for(r"RECORD (.*)", timeout=args.seconds + 120)[1]
        finished = session.finish(timeout=120)
    result = json.loads(record)
    return {"flooded": flooded, "rc": finished.rc, "requests": len(result["task"])
            + len(result["dashboard"]) + len(result["failed"]), "failed": result["failed"],
            **{what: {"median": statistics.median(times), "worst": max(times)}
               for what in ("task", "dashboard") if (times := result[what])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--half-open", type=int, default=1500)
    parser.add_argument("--slow", type=int, default=700)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {"machine": platform.node(), "python": platform.python_version(),
               "as": "nobody" if as_nobody() else "this user",
               "half_open": args.half_open, "slow": args.slow, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="flood-") as tmp:
        for flood in (False, True):
            results["runs"]["flood" if flood else "quiet"] = run(args, flood, Path(tmp))
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
