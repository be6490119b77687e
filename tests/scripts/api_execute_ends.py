"""execute() with its roles where argv says (client rank, scheduler rank,
exclusive workers) and a function that ends as argv[4] says: ok, raise or
exit3.  Each rank says how execute() came back to it."""
import sys

from distributed import Client
from mpi4py import MPI

from start_daskmpi import execute


def work(how):
    with Client() as client:
        assert client.submit(abs, -1).result() == 1
        print(f"workers {sorted(w['name'] for w in client.scheduler_info()['workers'].values())}",
              flush=True)
    if how == "raise":
        raise ValueError("the function's own error")
    if how == "exit3":
        sys.exit(3)


client_rank, scheduler_rank, how = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4]
rank = MPI.COMM_WORLD.rank
try:
    execute(work, [how], client_rank=client_rank, scheduler_rank=scheduler_rank,
            exclusive_workers=sys.argv[3] == "True", interface="lo", gpus_per_node=0)
except (ValueError, SystemExit) as e:
    said = f"{type(e).__name__} {e}"
else:
    said = "returned"
# One write, newline included: print's two let mpirun join two ranks' lines.
sys.stdout.write(f"rank {rank}: {said}\n")
sys.stdout.flush()
