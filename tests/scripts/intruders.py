"""Try the cluster as another user on the node would: from a process without
this job's credentials (no DASK_* settings), with no certificate, and with a
certificate of another job.  Prints one line per attempt, and one on where
the job's own client credentials are."""
import os
import subprocess
import sys

from distributed import get_client

ATTEMPT = """
import sys
import dask
from distributed import Client, Security
address, label = sys.argv[1], sys.argv[2]
security = {
    "plain tcp": None,
    "tls, no certificate": Security(require_encryption=True),
    "tls, another job's certificate": Security.temporary(),
}[label]
if label == "plain tcp":
    address = "tcp://" + address.split("://", 1)[1]
with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
    try:
        with Client(address, security=security, timeout=5):
            print(f"INTRUDER {label}: connected")
    except Exception as e:
        print(f"INTRUDER {label}: refused ({type(e).__name__})")
"""

ca_file = os.environ["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"]
folder = os.path.dirname(ca_file)
modes = ",".join(f"{name}:{os.stat(os.path.join(folder, name)).st_mode & 0o777:o}"
                 for name in sorted(os.listdir(folder)))
print(f"CREDENTIALS {folder} {os.stat(folder).st_mode & 0o777:o} {modes}")
address = get_client().scheduler.address
outsider = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
for label in ("plain tcp", "tls, no certificate", "tls, another job's certificate"):
    done = subprocess.run(
        [sys.executable, "-c", ATTEMPT, address, label],
        env=outsider, capture_output=True, text=True, timeout=60,
    )
    print(done.stdout.strip() or f"INTRUDER {label}: crashed: {done.stderr[-300:]}")
