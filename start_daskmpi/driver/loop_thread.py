"""An asyncio event loop in a thread of its own, for synchronous code that
serves something meanwhile: the local cluster, the driver's dashboard relay."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
JOIN_TIMEOUT = 10.0  # seconds to wait for the loop's thread at the end


@contextlib.contextmanager
def event_loop_thread(
    name: str,
) -> Iterator[Callable[[Coroutine[Any, Any, T], float], T]]:
    """Yields a function that runs a coroutine on the loop and returns its
    result, within a timeout; the loop stops on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()

    def run(work: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(work, loop).result(timeout)

    try:
        yield run
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(JOIN_TIMEOUT)
        if not thread.is_alive():
            loop.close()
