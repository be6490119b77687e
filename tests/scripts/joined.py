"""The first job's script: wait for argv[1] workers (its own and joined ones),
run a task on a joined worker; with argv[2] == "until-they-leave", then wait for
the joined workers to leave (their job ended) and run a task on its own."""
import sys
import time

from distributed import get_client

client = get_client()


def names() -> list[str]:
    return sorted(str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values())


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 90
    while not condition():
        assert time.monotonic() < deadline, f"never {what}: {names()}"
        time.sleep(0.2)


wait_until(lambda: len(names()) >= int(sys.argv[1]), "joined")
joined = [name for name in names() if "-join" in name]
print("JOINED", " ".join(joined), flush=True)
print("ON A JOINED WORKER", client.submit(lambda: 42, workers=joined[0], pure=False).result(),
      flush=True)
if sys.argv[2:] == ["until-they-leave"]:
    wait_until(lambda: not any("-join" in name for name in names()), "left")
    print("LEFT; ON OUR OWN", client.submit(lambda: 43, pure=False).result(), flush=True)
