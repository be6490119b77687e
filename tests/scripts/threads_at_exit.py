"""Leave by mpi.exit_past_python as a thread is about to run Python code; print
how far that thread got while exit(3) ran a C handler, between two of ours
(C libraries' destructors run there: a thread running on may call into a
library already torn down)."""
import ctypes
import os
import sys
import threading

from start_daskmpi.mpi.ending import exit_past_python

# A thread waiting for the GIL asks for it after this long: longer than the
# exit below, so that it can have it sooner only if the GIL is let go.
sys.setswitchinterval(1.0)
ticks = []
seen = []
go = threading.Event()


def spin():
    go.wait()
    while True:
        ticks.append(None)


# exit(3) runs its handlers last registered first: look, C for 0.1 s, look again.
@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def look_again(_):
    os.write(1, f"the thread ran on for {len(ticks) - seen[0]} steps\n".encode())


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def look(_):
    seen.append(len(ticks))


libc = ctypes.CDLL(None)
# atexit(3) itself is no symbol of glibc's shared library: its C++ form is.
libc.__cxa_atexit(look_again, None, None)
libc.__cxa_atexit(ctypes.cast(libc.usleep, ctypes.c_void_p), ctypes.c_void_p(100_000), None)
libc.__cxa_atexit(look, None, None)
threading.Thread(target=spin, daemon=True).start()
go.set()
exit_past_python(0)
