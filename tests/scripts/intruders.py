"""Try the cluster as another user on the node would, each attempt from a
process of its own without this job's credentials (no DASK_* settings): plain
TCP; TLS trusting this job's CA (public: its certificate is in every
handshake) with no certificate, or with a certificate of another authority;
TLS trusting another authority.  Each prints one line, INTRUDER and a JSON
object: its local port, by which the test finds the scheduler's word on it in
the scheduler's log, and the client's own outcome.  Then the job's own
credentials, from another process, connect and compute (OWN), and one line
says where those credentials are kept (CREDENTIALS)."""
import os
import subprocess
import sys

from distributed import Security, get_client

ATTEMPT = """
import json, os, socket, ssl, sys, tempfile
host, port, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
trusted, cert, key = (os.environ.get(name) for name in ("TRUSTED", "CERT", "KEY"))
sock = socket.create_connection((host, port), timeout=10)
local_port = sock.getsockname()[1]
try:
    if trusted is None:
        sock.sendall(bytes(16))  # a plain comm's first frame header, as to a plain listener
        outcome = "the server answered" if sock.recv(1) else "the server closed the connection"
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # Dask's certificates name no host
        context.load_verify_locations(cadata=trusted)
        if cert is not None:
            with tempfile.TemporaryDirectory() as folder:
                paths = [os.path.join(folder, name) for name in ("cert.pem", "key.pem")]
                for path, pem in zip(paths, (cert, key)):
                    with open(path, "w") as f:
                        f.write(pem)
                context.load_cert_chain(*paths)
        with context.wrap_socket(sock) as tls:
            # Under TLS 1.3 the server's verdict on a client's certificate comes
            # after the client's handshake: on the first read.
            tls.recv(1)
            outcome = "the server answered"
except ssl.SSLCertVerificationError as e:
    outcome = f"the client refused the server: {e.verify_message}"
except ssl.SSLError as e:
    outcome = f"the server refused the client: {e.reason}"
except ConnectionError as e:
    outcome = f"the server closed the connection: {type(e).__name__}"
except TimeoutError:
    outcome = "the server waits for the client's first message: connected"
print("INTRUDER " + json.dumps({"label": label, "port": local_port, "client": outcome}))
"""

OWN = """
from distributed import Client
with Client(timeout=30) as client:  # from this job's DASK_* settings alone
    print("OWN connected, computed", client.submit(sum, [1, 2]).result())
"""


def pem(path: str) -> str:
    with open(path) as f:
        return f.read()


ca_file = os.environ["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"]
folder = os.path.dirname(ca_file)
modes = ",".join(f"{name}:{os.stat(os.path.join(folder, name)).st_mode & 0o777:o}"
                 for name in sorted(os.listdir(folder)))
print(f"CREDENTIALS {folder} {os.stat(folder).st_mode & 0o777:o} {modes}")
host, port = get_client().scheduler.address.split("://", 1)[1].rsplit(":", 1)
outsider = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
other = Security.temporary()  # another authority, and a certificate it signed
attempts = {
    "plain tcp": {},
    "this job's CA, no certificate": {"TRUSTED": pem(ca_file)},
    "this job's CA, a certificate of another CA": {
        "TRUSTED": pem(ca_file), "CERT": other.tls_client_cert, "KEY": other.tls_client_key,
    },
    "another CA": {
        "TRUSTED": other.tls_ca_file, "CERT": other.tls_client_cert, "KEY": other.tls_client_key,
    },
}
for label, credentials in attempts.items():
    done = subprocess.run(
        [sys.executable, "-c", ATTEMPT, host.strip("[]"), port, label],
        env={**outsider, **credentials}, capture_output=True, text=True, timeout=60,
    )
    print(done.stdout.strip() or f"INTRUDER {label}: crashed: {done.stderr[-300:]}")
own = subprocess.run([sys.executable, "-c", OWN], capture_output=True, text=True, timeout=60)
print(own.stdout.strip() or f"OWN crashed: {own.stderr[-300:]}")
