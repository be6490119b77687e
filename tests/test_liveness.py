"""The scheduler's watch for a driver that died under a launcher that keeps the
other ranks running: a real scheduler and client, in this process, no MPI."""
from __future__ import annotations

import asyncio

import pytest
from distributed import Client, Scheduler

from start_daskmpi.lifecycle import liveness
from start_daskmpi.lifecycle.liveness import ClientCame, driver_gone

GRACE = 0.2  # seconds, for DRIVER_LOST_GRACE: long enough for a look or two


@pytest.fixture
def short_grace(monkeypatch):
    monkeypatch.setattr(liveness, "DRIVER_LOST_GRACE", GRACE)


def watched(client_stays: bool) -> bool:
    """Whether driver_gone returned within 10 s, where the driver's client
    connected and, unless ``client_stays``, closed before its first look."""
    async def run() -> bool:
        async with Scheduler(host="127.0.0.1", port=0, dashboard=False) as scheduler:
            came = ClientCame()
            scheduler.add_plugin(came)
            async with Client(scheduler.address, asynchronous=True):
                if client_stays:
                    return await returned(driver_gone(scheduler, came))
            return await returned(driver_gone(scheduler, came))

    async def returned(watch) -> bool:
        try:
            await asyncio.wait_for(watch, 10)
        except asyncio.TimeoutError:
            return False
        return True

    return asyncio.run(run())


@pytest.mark.timeout(60)
def test_a_driver_whose_client_came_and_left_before_a_look_is_found_gone(short_grace):
    assert watched(client_stays=False)


@pytest.mark.timeout(60)
def test_a_driver_whose_client_stays_is_not_found_gone(short_grace):
    assert not watched(client_stays=True)
