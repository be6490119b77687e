"""End the script normally while one of its tasks runs, and would run forever."""
import time

from distributed import Event, get_client


def sleep_forever():
    Event("started").set()
    time.sleep(10**6)


client = get_client()
forever = client.submit(sleep_forever)
Event("started").wait(timeout=60)
print("LEFT RUNNING", forever.key, flush=True)
