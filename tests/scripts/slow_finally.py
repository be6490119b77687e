"""A script whose finally takes SECONDS, writing each second done to MARKER:
how much of it ran tells what a signal to the job left it.

    slow_finally.py SECONDS MARKER
"""
import sys
import time

seconds, marker = int(sys.argv[1]), sys.argv[2]
try:
    print("READY", flush=True)
    time.sleep(600)
finally:
    for second in range(seconds):
        time.sleep(1)
        with open(marker, "a") as done:
            done.write(f"{second}\n")
